"""Readers agree with each other (JSONL vs Parquet of the same month), loads append, databases persist."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

from processor.batch.engine import TABLES, BatchEngine, LoadStats
from processor.simulation.month import ACCOUNT, generate_month

from .helpers import HOUR, T0, ev, session, write_jsonl


def test_jsonl_and_parquet_of_one_month_give_identical_results(tmp_path: Path) -> None:
    count = generate_month(tmp_path / "m.jsonl", agents=12, days=10)
    assert generate_month(tmp_path / "m.parquet", agents=12, days=10) == count
    results = []
    for name in ("m.jsonl", "m.parquet"):
        engine = BatchEngine()
        began = time.perf_counter()
        stats = engine.load(tmp_path / name)
        elapsed = time.perf_counter() - began
        assert stats == LoadStats(count, count, 0, 0, 0), name
        report = engine.report(ACCOUNT, date(2026, 11, 1), date(2026, 11, 10))
        results.append(
            (engine.usage_changes(), engine.peak_windows(), engine.user_intervals(), engine.plans(ACCOUNT), report)
        )
        print(f"{name}: {count} events in {elapsed:.2f} s")
    assert results[0] == results[1]
    changes, windows, intervals, plans, report = results[0]
    # 12 agents on 7 weekdays (Nov 2-6, 9-10), one shift each: two changes per shift at least
    assert report.distinct_users == 12 and report.peak_usage <= 12
    assert len(plans) == 2 and report.timezone == "America/New_York"
    assert sum(d.distinct_users > 0 for d in report.days) == 7
    assert len(intervals) >= 12 * 7 and len(changes) >= 2 * 12 * 7
    assert {w.kind for w in windows} == {"1m", "15m", "1h", "1d"}


def test_loads_append_and_a_database_file_persists(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "a.jsonl", session("u1", "d1", T0, T0 + HOUR // 2) + ["not json"])
    second = write_jsonl(tmp_path / "b.jsonl", [ev("api.request", T0 + HOUR, user_id="u2"), "[]"])
    database = str(tmp_path / "engine.duckdb")
    with BatchEngine(database=database) as engine:
        a = engine.load(first, progress=True)
        b = engine.load(second)
        assert (a.rows, a.rejected, b.rows, b.rejected) == (33, 1, 2, 1)
        # the second file's arrivals follow the first's
        assert engine.rejected() == [(32, "invalid_json"), (34, "not_an_object")]
        before = (engine.usage_changes(), engine.user_intervals(), engine.peak_windows())
        for table in TABLES:
            assert engine.relation(table).columns
    with BatchEngine(database=database) as reopened:
        assert (reopened.usage_changes(), reopened.user_intervals(), reopened.peak_windows()) == before
        assert len(before[0]) == 4
        c = reopened.load(second)  # the same records again: duplicates, new arrivals
        assert (c.rows, c.duplicates, c.rejected) == (2, 1, 1)
        assert reopened.rejected()[-1] == (36, "not_an_object")
