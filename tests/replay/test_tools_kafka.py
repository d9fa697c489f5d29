"""The replay tools on a broker, as a new user meets them: archive a range without records, or of events published
long after they happened (--by event-time); plan on the embedded Tansu broker; `topics list` and `topics delete`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from processor.brokers.tansu import TansuBroker
from processor.cli import main
from processor.cli.simulate import SimConfig, iter_lines
from processor.topics import EVENTS, create_topics, list_topics, topic_names
from replay.common import parse_instant
from schemas.events import Rejection, decode

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]
DAY = "2020-03-02"  # simulated history: published today, its record timestamps are years after its events


@pytest.fixture(autouse=True)
def _no_ccmeter_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CCMETER_"):
            monkeypatch.delenv(name)


def simulated_history(path: Path) -> list[bytes]:
    config = SimConfig(accounts=2, agents=2, days=1, seed=3, start=date.fromisoformat(DAY), heartbeat_seconds=150)
    lines = [line.encode() for line in iter_lines(config)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def in_range(lines: list[bytes], low: str, high: str) -> int:
    """Valid events with low <= occurred_at < high (RFC 3339 or dates, UTC)."""
    low_ms, high_ms = parse_instant(low), parse_instant(high)
    decoded = [decode(line) for line in lines]
    return sum(1 for e in decoded if not isinstance(e, Rejection) and low_ms <= e.at_ms < high_ms)


def test_archive_of_published_history_by_record_time_and_by_event_time(
    broker: str, topic_prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    asyncio.run(create_topics(broker, topic_prefix, 3, 1))
    lines = simulated_history(tmp_path / "history.jsonl")
    common = ["--broker", broker, "--prefix", topic_prefix]
    assert main(["replay", "publish", str(tmp_path / "history.jsonl"), *common, "--quiet"]) == 0
    capsys.readouterr()
    out = tmp_path / "archive.parquet"
    archive = ["replay", "archive", *common, "--from", DAY, "--to", "2020-03-03", "--out", str(out), "--quiet"]

    assert main(archive) == 0  # by record time (the default): the records carry today's timestamps
    captured = capsys.readouterr()
    assert f"no records in {topic_names(topic_prefix)[EVENTS]} with 2020-03-02" in captured.out, captured
    assert "--by event-time" in captured.out and captured.err == "", captured
    assert not out.exists()

    assert main([*archive, "--by", "event-time"]) == 0
    captured = capsys.readouterr()
    assert f"read every record of the topic ({len(lines)} records)" in captured.out, captured
    table = pq.read_table(out)
    expected = in_range(lines, DAY, "2020-03-03")
    assert expected > 0 and table.num_rows == expected, (expected, table.num_rows, captured.out)
    assert f"wrote {out}: {expected} records" in captured.out
    assert sorted(table.column("arrival").to_pylist()) == list(range(expected))

    noon = f"{DAY}T12:00:00Z"  # event time selects exactly the range
    archive = ["replay", "archive", *common, "--from", noon, "--to", "2020-03-03", "--out", str(out), "--quiet"]
    assert main([*archive, "--by", "event-time"]) == 0
    expected = in_range(lines, noon, "2020-03-03")
    assert 0 < expected < table.num_rows and pq.read_table(out).num_rows == expected


def topics_of(broker: str, prefix: str) -> dict[str, int]:
    return asyncio.run(list_topics(broker, prefix))


def test_topics_list_and_delete_an_old_version(broker: str, topic_prefix: str, capsys: pytest.CaptureFixture[str]):
    asyncio.run(create_topics(broker, topic_prefix, 2, 1))
    old = f"{topic_prefix}v1."
    asyncio.run(create_topics(broker, old, 2, 1, outputs_only=True))
    live, v1 = set(topic_names(topic_prefix).values()), set(topic_names(old).values()) - {old + EVENTS}

    assert main(["topics", "list", "--broker", broker, "--prefix", topic_prefix]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert {line.split()[0] for line in listed} == live | v1, listed
    assert all(line.split()[1:] == ["2", "partitions"] for line in listed), listed

    delete = ["topics", "delete", "--broker", broker, "--prefix", old]
    assert main(delete) == 2  # without --yes: says what would go, deletes nothing
    captured = capsys.readouterr()
    assert {line.split()[2] for line in captured.out.splitlines() if line.startswith("would delete")} == v1
    assert "refusing to delete 5 topics without --yes" in captured.err
    assert set(topics_of(broker, old)) == v1

    assert main([*delete, "--yes"]) == 0
    assert f"deleted 5 topics starting with '{old}'" in capsys.readouterr().out
    deadline = time.monotonic() + 60
    while topics_of(broker, old):  # deletion completes asynchronously on the broker
        assert time.monotonic() < deadline, topics_of(broker, old)
        time.sleep(0.5)
    assert set(topics_of(broker, topic_prefix)) == live

    assert main(["topics", "delete", "--broker", broker, "--prefix", topic_prefix]) == 2  # events topic is kept
    captured = capsys.readouterr()
    assert f"keep          {topic_prefix}events" in captured.out
    assert f"would delete  {topic_prefix}events" not in captured.out


@pytest.fixture(scope="module")
def tansu() -> Iterator[TansuBroker]:
    with TansuBroker() as broker:
        yield broker


def test_plan_and_publish_on_the_embedded_tansu_broker(
    tansu: TansuBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    common = ["--broker", tansu.bootstrap, "--prefix", "tansu-plan."]
    assert main(["topics", "create", "--partitions", "2", *common]) == 0
    lines = simulated_history(tmp_path / "history.jsonl")[:200]
    (tmp_path / "few.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert main(["replay", "publish", str(tmp_path / "few.jsonl"), *common, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert f"published {len(lines)} records" in captured.out, captured
    assert "refuses idempotent producers" in captured.err  # Tansu has no InitProducerId: acks=all without it

    assert main(["replay", "plan", *common, "--from", "beginning", "--format", "json"]) == 0
    captured = capsys.readouterr()
    plan = json.loads(captured.out)
    assert plan["topic"] == "tansu-plan.events" and [p["partition"] for p in plan["partitions"]] == [0, 1]
    assert plan["records"] == sum(p["end_offset"] - p["start_offset"] for p in plan["partitions"]) > 0
    assert plan["group"]["group_id"] == "ccmeter-worker" and plan["group"]["active"] is False
    assert plan["warnings"] == [] and "Traceback" not in captured.err, captured.err

    assert main(["replay", "plan", *common, "--from", "beginning"]) == 0
    captured = capsys.readouterr()
    assert "ok: live group ccmeter-worker is idle" in captured.out and captured.err == "", captured
