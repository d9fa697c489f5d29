"""ccmeter's commands against a secured Kafka (SASL_SSL, ACLs enforced) with exactly the ACLs of
processor.brokers.acls, and one clear line (exit status 1, no traceback) for a wrong password, a missing ACL and a
CA that does not match. The worker's part of the scenario is still to come (see the report of issue 15, part A)."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.brokers.acls import acls_for
from processor.cli import main

pytestmark = pytest.mark.kafka


def tls_flags(kafka, user: str, cafile: Path | None = None) -> list[str]:
    return [
        "--broker", kafka.bootstrap, "--security-protocol", "SASL_SSL", "--ssl-cafile", str(cafile or kafka.ca_file),
        "--sasl-mechanism", kafka.mechanism, "--sasl-username", user,
    ]  # fmt: skip


def as_user(kafka, monkeypatch: pytest.MonkeyPatch, user: str, password: str | None = None) -> None:
    monkeypatch.setenv("CCMETER_SASL_PASSWORD", password or kafka.users[user])


def grant(kafka, component: str, prefix: str, user: str) -> None:
    for acl in acls_for(component, prefix, f"User:{user}"):
        kafka.grant(acl.principal, acl.resource_type, acl.resource_name, [acl.operation], pattern=acl.pattern.upper())


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_publish_and_sink_with_their_acls_and_clear_refusals(
    secure_broker, topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    kafka = secure_broker
    events = tmp_path / "events.jsonl"
    events.write_text('{"account_id": "a1", "type": "x"}\n{"account_id": "a2", "type": "y"}\n')
    data = tmp_path / "data"

    as_user(kafka, monkeypatch, "admin")
    status, out = run(capsys, ["topics", "create", *tls_flags(kafka, "admin"), "--prefix", topic_prefix])
    assert status == 0, out

    # The producer without its ACLs: refused with the topic named.
    as_user(kafka, monkeypatch, "producer")
    publish = ["publish", *tls_flags(kafka, "producer"), "--prefix", topic_prefix, str(events)]
    status, out = run(capsys, publish)
    assert status != 0 and "Traceback" not in out, out
    grant(kafka, "producer", topic_prefix, "producer")
    status, out = run(capsys, publish)
    assert status == 0 and "published 2 records" in out, out

    # Wrong password: one line, exit 1.
    as_user(kafka, monkeypatch, "producer", password="not-the-password")
    status, out = run(capsys, publish)
    assert status == 1, out
    assert "authentication failed" in out and "user 'producer'" in out and "Traceback" not in out, out
    assert "not-the-password" not in out

    # A CA that did not sign the broker's certificate: one line, exit 1.
    import certifi

    as_user(kafka, monkeypatch, "producer")
    status, out = run(capsys, ["publish", *tls_flags(kafka, "producer", Path(certifi.where())), str(events)])
    assert status == 1 and "TLS: cannot trust the certificate" in out and "Traceback" not in out, out

    # The sink without ACLs: Kafka hides topics a principal may not DESCRIBE, so they look absent (nothing read);
    # with its ACLs it reads the events.
    as_user(kafka, monkeypatch, "sink")
    sink = ["sink", *tls_flags(kafka, "sink"), "--prefix", topic_prefix, "--data-dir", str(data), "--once", "--quiet"]
    status, out = run(capsys, sink)
    assert status == 0 and "0 records" in out and "Traceback" not in out, out
    grant(kafka, "sink", topic_prefix, "sink")
    status, out = run(capsys, sink)
    assert status == 0 and "2 records" in out, out
