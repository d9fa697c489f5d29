"""ccmeter's commands against a secured Kafka (SASL_SSL, ACLs enforced) with exactly the ACLs of
processor.brokers.acls, and one clear line (exit status 1, no traceback) for a wrong password, a missing ACL and a
CA that does not match.

The whole scenario (issue 15): `topics create` as admin, `publish` as producer, `ccmeter worker` as worker, `sink`
as sink, each with exactly `acls_for(component)`; then `snapshot` and `report --snapshot`, which must equal
`report --events` on the published history (the batch engine). One partition: an event file is one partition, so
its data_through (the file rule) is the worker's horizon."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from processor.brokers.acls import acls_for
from processor.cli import main
from processor.kafka_security import KafkaAccessError, KafkaSecurity, check_group_access
from processor.topics import EVENTS, topic_names
from tests.processor.snapshots.streams import history_lines
from tests.processor.worker.support import WorkerProcess, start_worker, write_jsonl

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]


def security_flags(kafka, user: str, cafile: Path | None = None) -> list[str]:
    return [
        "--security-protocol", "SASL_SSL", "--ssl-cafile", str(cafile or kafka.ca_file),
        "--sasl-mechanism", kafka.mechanism, "--sasl-username", user,
    ]  # fmt: skip


def tls_flags(kafka, user: str, cafile: Path | None = None) -> list[str]:
    return ["--broker", kafka.bootstrap, *security_flags(kafka, user, cafile)]


def as_user(kafka, monkeypatch: pytest.MonkeyPatch, user: str, password: str | None = None) -> None:
    monkeypatch.setenv("CCMETER_SASL_PASSWORD", password or kafka.users[user])


def grant(kafka, component: str, prefix: str, user: str, *, app_id: str = "ccmeter-worker", leave_out=()) -> None:
    """Grant `user` exactly the ACLs of `component` (minus those on resource types in `leave_out`)."""
    acls = acls_for(component, prefix, f"User:{user}", app_id=app_id)
    kafka.grant_all([acl for acl in acls if acl.resource_type not in leave_out])


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def start_secured_worker(kafka, prefix: str, app_id: str, workdir: Path, *extra: str) -> WorkerProcess:
    """`ccmeter worker` as user `worker` (the password in its environment, never on the command line)."""
    env = {"CCMETER_SASL_PASSWORD": kafka.users["worker"]}
    return start_worker(kafka.bootstrap, prefix, app_id, workdir, *security_flags(kafka, "worker"), *extra, env=env)


def refused(worker: WorkerProcess, *expected: str) -> str:
    """The log of a worker that must stop by itself with exit status 1, one error line naming `expected`."""
    status = worker.exited(timeout=120)
    log = worker.log.read_text(errors="replace")
    assert status == 1, f"exit status {status}:\n{worker.tail(80)}"
    assert "Traceback" not in log, worker.tail(80)
    lines = [line for line in log.splitlines() if all(text in line for text in expected)]
    assert lines, f"no line with {expected}:\n{worker.tail(80)}"
    return lines[0]


async def _consumed(kafka, topic: str, group: str) -> tuple[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False, **kafka.client_kwargs("admin")
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        end = (await consumer.end_offsets([tp]))[tp]
        return await consumer.committed(tp) or 0, end
    finally:
        await consumer.stop()


def wait_caught_up(kafka, topic: str, group: str, worker: WorkerProcess, timeout: float = 180.0) -> None:
    """Until the worker's group has committed the end of the events topic (checked as the super user)."""
    deadline = time.monotonic() + timeout
    while True:
        done, end = asyncio.run(_consumed(kafka, topic, group))
        if end and done >= end:
            return
        assert worker.proc.poll() is None, f"worker exited with {worker.proc.returncode}:\n{worker.tail(80)}"
        assert time.monotonic() < deadline, f"worker at {done} of {end} after {timeout}s:\n{worker.tail(80)}"
        time.sleep(0.5)


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

    # The sink without ACLs: Kafka hides topics a principal may not DESCRIBE, so with security on a sink that sees
    # none of its topics stops with one line instead of reading nothing; with its ACLs it reads the events.
    as_user(kafka, monkeypatch, "sink")
    sink = ["sink", *tls_flags(kafka, "sink"), "--prefix", topic_prefix, "--data-dir", str(data), "--once", "--quiet"]
    status, out = run(capsys, sink)
    assert status == 1 and "Traceback" not in out, out
    assert "no access to topics" in out and "User:sink" in out and len(out.strip().splitlines()) == 1, out
    grant(kafka, "sink", topic_prefix, "sink")
    status, out = run(capsys, sink)
    assert status == 0 and "2 records" in out, out


def test_worker_sink_snapshot_and_report_with_exactly_their_acls(
    secure_broker, topic_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    kafka = secure_broker
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    events_topic = topic_names(topic_prefix)[EVENTS]
    lines = history_lines(seed=5, accounts=2, agents=3, days=2, duplicates=0.02, out_of_order=0.05, malformed=0.01)
    events = write_jsonl(tmp_path / "events.jsonl", lines)

    as_user(kafka, monkeypatch, "admin")
    create = ["topics", "create", *tls_flags(kafka, "admin"), "--prefix", topic_prefix, "--partitions", "1"]
    status, out = run(capsys, create)
    assert status == 0, out
    grant(kafka, "producer", topic_prefix, "producer")
    grant(kafka, "sink", topic_prefix, "sink")

    # The worker without its group ACLs (at_least_once: no transactional id needed), then with exactly_once but
    # without its transactional-id ACLs: each one line naming what is missing, exit status 1.
    grant(kafka, "worker", topic_prefix, "worker", app_id=app_id, leave_out=("group", "transactional_id"))
    worker = start_secured_worker(
        kafka, topic_prefix, app_id, tmp_path / "no-group", "--processing-guarantee", "at_least_once"
    )
    line = refused(worker, "consumer group")
    assert app_id in line and "not authorized" in line, line
    grant(kafka, "worker", topic_prefix, "worker", app_id=app_id, leave_out=("topic", "transactional_id"))
    worker = start_secured_worker(
        kafka, topic_prefix, app_id, tmp_path / "no-txn", "--processing-guarantee", "exactly_once"
    )
    line = refused(worker, "transactional id")
    assert "not authorized" in line and "TRANSACTIONAL_ID" in line, line

    # With exactly its ACLs: publish, fold, sink, snapshot.
    grant(kafka, "worker", topic_prefix, "worker", app_id=app_id)
    worker = start_secured_worker(kafka, topic_prefix, app_id, tmp_path / "worker")
    try:
        health = worker.wait_ready(timeout=120)
        assert health["processing_guarantee"] == "exactly_once", health
        as_user(kafka, monkeypatch, "producer")
        status, out = run(capsys, ["publish", *tls_flags(kafka, "producer"), "--prefix", topic_prefix, str(events)])
        assert status == 0 and f"published {len(lines)} records" in out, out
        wait_caught_up(kafka, events_topic, app_id, worker)
    finally:
        worker.stop()
    data, snapshot = tmp_path / "data", tmp_path / "usage.duckdb"
    as_user(kafka, monkeypatch, "sink")
    sink = ["sink", *tls_flags(kafka, "sink"), "--prefix", topic_prefix, "--data-dir", str(data), "--once", "--quiet"]
    status, out = run(capsys, sink)
    stored = re.search(r"(\d+) records", out)
    assert status == 0 and stored and int(stored.group(1)) > len(lines), out  # the events and the worker's outputs
    status, out = run(capsys, ["snapshot", "--data-dir", str(data), "--out", str(snapshot)])
    assert status == 0, out

    # The snapshot's billing run (the worker's live outputs) equals the batch engine's on the same history.
    reports = []
    for source in (["--snapshot", str(snapshot)], ["--events", str(events)]):
        args = ["report", *source, "--all", "--period", "current", "--format", "json", "--quiet"]
        status = main(args)
        captured = capsys.readouterr()
        assert status == 0, captured.err
        reports.append(json.loads(captured.out))
    assert [row["account_id"] for row in reports[0]] == ["acct-0", "acct-1"], reports[0]
    assert all(row["peak_usage"] > 0 and row["license_hours"] > 0 for row in reports[0]), reports[0]
    assert reports[0] == reports[1]


def test_group_check_needs_read_not_only_describe(secure_broker) -> None:
    """The worker's startup check of its group: DESCRIBE alone (coordinator found) is still refused, READ passes."""
    kafka = secure_broker
    group = f"group-{uuid.uuid4().hex[:8]}"
    security = KafkaSecurity(
        protocol="SASL_SSL", cafile=str(kafka.ca_file), mechanism=kafka.mechanism, username="guest",
        password=kafka.users["guest"],
    )  # fmt: skip
    for granted in ([], ["describe"], ["read"]):
        if granted:
            kafka.grant("User:guest", "group", group, granted)
        try:
            asyncio.run(check_group_access(kafka.bootstrap, security, group))
        except KafkaAccessError as exc:
            assert granted != ["read"], f"refused with READ on the group: {exc}"
            assert f"consumer group {group}" in str(exc) and "READ on GROUP" in str(exc), exc
        else:
            assert granted == ["read"], f"not refused with only {granted} on the group"
