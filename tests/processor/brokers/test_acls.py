"""The ACL data of each component, and docs/security.md showing exactly that data."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor.brokers.acls import COMPONENTS, Acl, acl_lines, acls_for
from processor.kafka_security import settings_table

DOC = Path(__file__).resolve().parents[3] / "docs" / "security.md"


def test_doc_shows_the_acl_data_and_the_settings_table() -> None:
    text = DOC.read_text()
    assert "```\n" + acl_lines() + "\n```" in text, "docs/security.md: paste processor.brokers.acls.acl_lines()"
    assert settings_table() in text, "docs/security.md: paste processor.kafka_security.settings_table()"


def test_producer_writes_the_events_topic_only() -> None:
    acls = acls_for("producer", "t.", "User:p")
    assert {(a.resource_type, a.resource_name, a.operation) for a in acls} == {
        ("topic", "t.events", "write"),
        ("topic", "t.events", "describe"),
    }


def test_worker_reads_events_writes_outputs_and_owns_its_app_id_resources() -> None:
    acls = acls_for("worker", "t.", "User:w", app_id="app")
    by_op = {(a.resource_type, a.resource_name, a.operation, a.pattern) for a in acls}
    assert ("topic", "t.events", "read", "literal") in by_op
    assert not any(a.resource_name == "t.events" and a.operation == "write" for a in acls)
    for key in ("usage-changes", "peak-windows", "alerts", "dead-letters", "intervals"):
        assert ("topic", f"t.{key}", "write", "literal") in by_op
        assert ("topic", f"t.{key}", "read", "literal") not in by_op
    assert ("group", "app", "read", "literal") in by_op
    assert ("transactional_id", "app-", "write", "prefixed") in by_op
    assert ("topic", "app-", "create", "prefixed") in by_op
    assert all(a.principal == "User:w" for a in acls)


def test_sink_and_alerts_only_read() -> None:
    for component in ("sink", "alerts"):
        assert {a.operation for a in acls_for(component, "t.")} <= {"read", "describe"}
    assert Acl("User:a", "group", "g", "read") in acls_for("alerts", "t.", "User:a", group="g")


def test_lines_are_kafka_acls_arguments() -> None:
    line = Acl("User:w", "transactional_id", "app-", "write", "prefixed").line()
    assert line == "--allow-principal User:w --operation Write --transactional-id app- --resource-pattern-type prefixed"
    assert Acl("User:p", "cluster", "kafka-cluster", "idempotent_write").line().endswith("IdempotentWrite --cluster")
    assert set(COMPONENTS) >= {"admin", "producer", "worker", "sink", "alerts"}
    with pytest.raises(ValueError, match="unknown component"):
        acls_for("janitor")
