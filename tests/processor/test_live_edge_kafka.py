"""The live edge end to end on a real broker: two tenants on one partition, one producer half an hour behind.

No watermark pushers: the snapshot is taken at the live edge, where each account is known only up to its own horizon.
The lagging tenant must lose nothing (no dead letters), and each account's snapshot report (current period and a range
running past the data) must equal the batch engine's report of the same events read as a file (SPEC 2 and 4).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from processor.batch.engine import BatchEngine
from processor.brokers.readback import consume
from processor.core.periods import local_date
from processor.simulation.config import SimConfig
from processor.simulation.output import iter_lines
from processor.snapshots.history import load_histories, resolve_period
from processor.snapshots.sink import SinkConfig, run_sink
from processor.snapshots.snapshot import build_snapshot, open_snapshot
from processor.topics import EVENTS, INTERVALS, create_topics, topic_names
from schemas.events import decode, format_ms
from tests.processor.worker.support import produce, start_worker, write_jsonl

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]
LAG_MS = 30 * 60_000


def lagged_history() -> tuple[list[bytes], str]:
    """A simulated day of two accounts in arrival order, with the second account's producer 30 minutes behind."""
    config = SimConfig(accounts=2, agents=4, days=1, seed=3, duplicates=0.02, out_of_order=0.03, malformed=0.0)
    lines = [line.encode() for line in iter_lines(config)]
    accounts = sorted({decode(line).account_id for line in lines})
    late = accounts[1]
    keyed = []
    for index, line in enumerate(lines):
        event = decode(line)
        keyed.append((event.at_ms + (LAG_MS if event.account_id == late else 0), index, line))
    keyed.sort()
    return [line for _, _, line in keyed], late


def test_a_lagging_tenant_loses_nothing_and_snapshots_equal_the_batch_engine_at_the_live_edge(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    asyncio.run(create_topics(broker, topic_prefix, 1, 1))
    names = topic_names(topic_prefix)
    lines, late = lagged_history()
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    engine = BatchEngine()
    engine.load(path)
    accounts = engine.accounts()
    want = {account: engine.data_through(account) for account in accounts}
    assert len(accounts) == 2 and all(want.values())

    worker = start_worker(broker, topic_prefix, f"app-{uuid.uuid4().hex[:8]}", tmp_path / "worker")
    try:
        worker.wait_ready()
        produce(broker, names[EVENTS], lines)  # each record stamped with the latest event time so far

        def caught_up(got: dict[str, list[dict]]) -> bool:
            known = {}
            for record in got[names[INTERVALS]]:
                if record.get("record") == "horizon":
                    known[record["account_id"]] = max(known.get(record["account_id"], ""), record["data_through"])
            return all(known.get(account) == format_ms(ms) for account, ms in want.items())

        consume(broker, [names[INTERVALS]], caught_up, timeout=120)
        status, body = worker.get(f"/accounts/{late}/usage")
        assert status == 200 and body["data_through"] == format_ms(want[late]), (body, worker.tail())
    finally:
        worker.stop()

    data, out = tmp_path / "data", tmp_path / "usage.duckdb"
    run_sink(SinkConfig(broker, topic_prefix, data, once=True))
    build_snapshot(data, out)
    con, _ = open_snapshot(out)
    with con:
        assert con.execute("SELECT count(*) FROM dead_letters").fetchall()[0][0] == 0
        histories = load_histories(con)
    for account in accounts:
        history = histories[account]
        assert history.data_through_ms == want[account], account
        start, end = resolve_period("current", history.latest_plan, history.data_through_ms)
        assert history.report(start, end) == engine.report(account, start, end), account
        assert not history.report(start, end).complete
        zone = history.latest_plan.timezone
        first = local_date(history.changes[0].at_ms, zone)
        last = local_date(want[account], zone) + timedelta(days=2)  # runs past the data: nothing counted there
        report = history.report(first, last)
        assert report == engine.report(account, first, last), account
        assert report.days[-1].license_hours is None and not report.complete
