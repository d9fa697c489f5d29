"""docs/operators.md followed step by step on a real broker: restate --apply ("Restate a billing period"), then
"Cut over to a new version" (rebuild v2, its sink with the live events topic, carry the restatements): the next
snapshots of both versions hold the events, the billing tables, the current period and the restated numbers."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path

import duckdb
import pytest

from processor.brokers.readback import consume
from processor.cli import main
from processor.topics import DEAD_LETTERS, EVENTS, create_topics, topic_names
from tests.processor.worker.support import FAST, produce, start_worker, with_pushers
from tests.replay.support import MINUTE, T0, event, plan

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(400)]
PARTITIONS = 3
ACCOUNT = "acct-r"
WORKER_FLAGS = ["--", *FAST, "--web-bind", "127.0.0.1"]
BILLING = "SELECT peak_usage, billable_overage, over_allowance, license_hours, restated FROM billing_periods "


@pytest.fixture(autouse=True)
def _no_ccmeter_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CCMETER_"):
            monkeypatch.delenv(name)


def history() -> list[bytes]:
    """u1 from +1 min, u3 at +30 and +40 min, and u2 at +2 min arriving after +40 min: too late for the worker.
    With licenses 1 and no grace, u2 makes the peak 2 (billable overage 1) from +2 to +6 min."""
    lines = [plan("p1", T0), event("e1", T0 + MINUTE, user_id="u1")]
    lines += [event("e3", T0 + 30 * MINUTE, user_id="u3"), event("e4", T0 + 40 * MINUTE, user_id="u3")]
    lines.append(event("e-late", T0 + 2 * MINUTE, user_id="u2"))
    return with_pushers(lines, PARTITIONS)


def query(path: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def snapshot(data: Path, out: Path, capsys) -> str:
    assert main(["snapshot", "--data-dir", str(data), "--out", str(out)]) == 0
    return capsys.readouterr().err


def test_restate_apply_and_cut_over_as_documented(broker: str, topic_prefix: str, tmp_path: Path, capsys):
    asyncio.run(create_topics(broker, topic_prefix, PARTITIONS, 1))
    names = topic_names(topic_prefix)
    produce(broker, names[EVENTS], history())
    tag = uuid.uuid4().hex[:8]
    live = start_worker(broker, topic_prefix, f"live-{tag}", tmp_path / "live")
    try:
        live.wait_ready()

        def dead(got: dict[str, list[dict]]) -> bool:
            # either dead-letter format: the original value with headers, or JSON with a reason
            return any(d.get("event_id") == "e-late" or d.get("reason") == "too_late" for d in got[names[DEAD_LETTERS]])

        consume(broker, [names[DEAD_LETTERS]], dead, timeout=90)
    finally:
        live.stop()
    kafka = ["--broker", broker, "--prefix", topic_prefix]
    data, data_v2 = tmp_path / "data", tmp_path / "data-v2"
    before, usage, v2 = tmp_path / "before-v2.duckdb", tmp_path / "usage.duckdb", tmp_path / "v2.duckdb"

    # "Restate a billing period": a dry run, then --apply; the next snapshot of `data` shows the restated numbers.
    assert main(["sink", *kafka, "--data-dir", str(data), "--once", "--quiet"]) == 0
    snapshot(data, usage, capsys)
    live_billing = query(usage, BILLING + "WHERE account_id = ?", [ACCOUNT])
    assert [row[:2] for row in live_billing] == [(1, 0)], live_billing
    restate = ["replay", "restate", "--snapshot", str(usage), "--account", ACCOUNT, "--period", "2026-11", "--quiet"]
    restate += ["--broker", broker, "--out", str(tmp_path / "restated.json")]
    assert main(restate) == 0
    out = capsys.readouterr().out
    assert "dry run: would record restatement" in out, out
    assert main([*restate, "--apply", "--reason", "late uploads"]) == 0
    out = capsys.readouterr().out
    assert "applied: restatement" in out, out
    err = snapshot(data, usage, capsys)
    restated = query(usage, BILLING + "WHERE account_id = ?", [ACCOUNT])
    assert [row[:2] for row in restated] == [(2, 1)] and restated[0][-1] is True, (restated, err)
    adjustments = query(usage, "SELECT field, before, after, reason FROM adjustments WHERE date IS NULL ORDER BY 1")
    assert ("billable_overage", "0", "1", "late uploads") in adjustments, adjustments
    assert main([*restate, "--apply"]) == 0  # again: nothing new
    assert "already applied (nothing new)" in capsys.readouterr().out

    # "Cut over to a new version", steps 2 to 4.
    snapshot(data, before, capsys)
    run = ["replay", "run", *kafka, "--from", "beginning", "--into", "v2", "--app-id", f"v2-{tag}", "--quiet"]
    run += ["--give-up-after", "150s", "--state-dir", str(tmp_path / "worker-v2")]
    assert main([*run, *WORKER_FLAGS]) == 0, (tmp_path / "worker-v2" / "replay-worker.log").read_text()
    assert "caught up" in capsys.readouterr().out
    v2_kafka = ["--broker", broker, "--prefix", f"{topic_prefix}v2.", "--events-prefix", topic_prefix]
    assert main(["sink", *v2_kafka, "--data-dir", str(data_v2), "--once", "--quiet"]) == 0
    assert main(["replay", "carry", "--from", str(data), "--to", str(data_v2)]) == 0
    assert "carried 1 restatements" in capsys.readouterr().out
    err = snapshot(data_v2, v2, capsys)
    assert "watermark none" not in err and " 0 events" not in err, err
    assert main(["replay", "verify", "--snapshot", str(before), "--against", str(v2), "--quiet"]) == 0
    assert "OK: no differences" in capsys.readouterr().out
    reports = []
    for name, path in (("v1", before), ("v2", v2)):
        csv_out = tmp_path / f"{name}.csv"
        args = ["report", "--snapshot", str(path), "--all", "--period", "2026-11", "--format", "csv"]
        assert main([*args, "--out", str(csv_out)]) == 0
        reports.append(csv_out.read_text())
    assert reports[0] == reports[1] and ",restated" in reports[1], reports

    # Analysts of v2 are whole: events, watermark, billing tables, current period, the restatement and adjustments.
    assert query(v2, "SELECT count(*) FROM events")[0][0] == query(before, "SELECT count(*) FROM events")[0][0] > 0
    assert query(v2, "SELECT watermark FROM snapshot_info") == query(before, "SELECT watermark FROM snapshot_info")
    assert query(v2, BILLING + "WHERE account_id = ?", [ACCOUNT]) == restated
    assert query(v2, "SELECT count(*) FROM top_accounts_by_overage")[0][0] > 0
    same = "SELECT adjustment_id, field, before, after, event_ids FROM adjustments ORDER BY 1"
    assert query(v2, same) == query(before, same) and query(v2, same)
    assert main(["report", "--snapshot", str(v2), "--account", ACCOUNT, "--period", "current", "--format", "json"]) == 0
    current = json.loads(capsys.readouterr().out)
    assert (current["restatement"], current["peak_usage"], current["billable_overage"]) == ("restated", 2, 1)
    # restate on a v2 snapshot finds the events (they are in it) and records into data-v2: nothing new.
    v2_restate = ["replay", "restate", "--snapshot", str(v2), "--account", ACCOUNT, "--period", "current", "--quiet"]
    assert main([*v2_restate, "--out", str(tmp_path / "v2-restated.json"), "--apply"]) == 0
    assert "already applied (nothing new)" in capsys.readouterr().out
