"""A synthetic month of one large account, generated in DuckDB (for load/report benchmarks; never committed).

`python -m processor.simulation.month OUT.jsonl|OUT.parquet [--agents 1000] [--days 30] [--bench]` writes
roughly `agents * weekdays * 490` events: per agent and weekday a shift with sign-in, work session, a heartbeat
every 60 s, session end and sign-out, plus a few portal views and API requests; two plan changes. About 1 heartbeat
in 2,000 is dropped. Lines are sorted by `occurred_at`. With `--bench` the file is then loaded into a BatchEngine
and a month report is built, with timings (November 2026, 1,000 agents: about 10.3 million events).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

START_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
ACCOUNT = "acct-big"

EVENTS_SQL = """
WITH agents AS (SELECT range AS agent FROM range({agents})),
days AS (SELECT range AS day FROM range({days})
         WHERE isodow(make_timestamp(({start} + range * 86400000) * 1000)) <= 5),
shifts AS (
  SELECT agent, day,
         {start} + day * 86400000 + 11 * 3600000 + (hash(agent, day, 's') % 18000000)::BIGINT AS t0,
         (8 * 3600000 + (hash(agent, day, 'd') % 7200000)::BIGINT - 3600000) AS dur
  FROM agents, days),
device AS (
  SELECT agent, day, 'desktop.signed_in' AS type, t0 AS at_ms, 0 AS k FROM shifts
  UNION ALL SELECT agent, day, 'work_session.started', t0 + 2000, 1 FROM shifts
  UNION ALL SELECT agent, day, 'work_session.ended', t0 + dur, 2 FROM shifts
  UNION ALL SELECT agent, day, 'desktop.signed_out', t0 + dur + 1000, 3 FROM shifts
  UNION ALL
  SELECT agent, day, 'desktop.heartbeat', t0 + h * 60000 + (hash(agent, day, h) % 500)::BIGINT, 10 + h
  FROM shifts, range(1, 1 + dur // 60000) AS r(h)
  WHERE hash(agent, day, h, 'drop') % 2000 <> 0),
portal AS (
  SELECT agent, day,
         CASE WHEN v % 3 = 2 THEN 'meetings.list' ELSE 'cc.inbox' END AS page,
         t0 + (hash(agent, day, v, 'p') % dur)::BIGINT AS at_ms, 100000 + v AS k
  FROM shifts, range(4) AS r(v)),
api AS (
  SELECT agent, day, t0 + (hash(agent, day, v, 'a') % dur)::BIGINT AS at_ms, 200000 + v AS k
  FROM shifts, range(2) AS r(v)),
ev AS (
  SELECT type, at_ms, 'u' || agent AS user_id, 'd' || agent AS device_id, NULL AS page,
         'e-' || agent || '-' || day || '-' || k AS event_id FROM device
  UNION ALL SELECT 'portal.page_viewed', at_ms, 'u' || agent, NULL, page, 'e-' || agent || '-' || day || '-' || k
  FROM portal
  UNION ALL SELECT 'api.request', at_ms, 'u' || agent, NULL, NULL, 'e-' || agent || '-' || day || '-' || k FROM api)
SELECT event_id, type, '{account}' AS account_id, at_ms, user_id, device_id, page,
       NULL::BIGINT AS licenses, NULL::BIGINT AS overage_allowance, NULL::BIGINT AS billing_anchor_day,
       NULL::VARCHAR AS timezone, NULL::BIGINT AS grace_minutes, NULL::VARCHAR AS grace_mode
FROM ev
UNION ALL
SELECT * FROM (VALUES
  ('plan-1', 'account.plan_changed', '{account}', {start} - 86400000, NULL, NULL, NULL, 800, 50, 1,
   'America/New_York', 30, 'contiguous'),
  ('plan-2', 'account.plan_changed', '{account}', {start} + 15 * 86400000, NULL, NULL, NULL, 850, 50, 1,
   'America/New_York', 15, 'cumulative'))
"""

LINE_SQL = """
SELECT CASE type
  WHEN 'account.plan_changed' THEN
    '{"event_id":"' || event_id || '","type":"' || type || '","account_id":"' || account_id
    || '","occurred_at":"' || ts || '","licenses":' || licenses || ',"overage_allowance":' || overage_allowance
    || ',"billing_anchor_day":' || billing_anchor_day || ',"timezone":"' || timezone
    || '","grace_minutes":' || grace_minutes || ',"grace_mode":"' || grace_mode || '"}'
  WHEN 'portal.page_viewed' THEN
    '{"event_id":"' || event_id || '","type":"' || type || '","account_id":"' || account_id
    || '","occurred_at":"' || ts || '","user_id":"' || user_id || '","page":"' || page || '"}'
  WHEN 'api.request' THEN
    '{"event_id":"' || event_id || '","type":"' || type || '","account_id":"' || account_id
    || '","occurred_at":"' || ts || '","user_id":"' || user_id || '","endpoint":"/v1/queues"}'
  ELSE
    '{"event_id":"' || event_id || '","type":"' || type || '","account_id":"' || account_id
    || '","occurred_at":"' || ts || '","user_id":"' || user_id || '","device_id":"' || device_id || '"}'
  END || chr(10) AS line
FROM (SELECT *, strftime(make_timestamp(at_ms * 1000), '%Y-%m-%dT%H:%M:%S.%gZ') AS ts FROM month_events)
ORDER BY at_ms, event_id
"""


def generate_month(path: str | Path, agents: int = 1000, days: int = 30) -> int:
    """Write the synthetic month to `path` (.jsonl or .parquet); returns the number of events."""
    target = Path(path)
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE month_events AS " + EVENTS_SQL.format(agents=agents, days=days, start=START_MS, account=ACCOUNT)
    )
    count = con.execute("SELECT count(*) FROM month_events").fetchall()[0][0]
    if target.suffix == ".parquet":
        con.execute(
            f"""COPY (SELECT event_id, type, account_id, make_timestamptz(at_ms * 1000) AS occurred_at,
                      user_id, device_id, page, licenses, overage_allowance, billing_anchor_day, timezone,
                      grace_minutes, grace_mode, row_number() OVER (ORDER BY at_ms, event_id) - 1 AS arrival
                      FROM month_events ORDER BY at_ms, event_id) TO '{target}' (FORMAT parquet)"""
        )
        return count
    reader = con.sql(LINE_SQL).to_arrow_reader(1_000_000)
    with target.open("wb") as out:
        for batch in reader:
            column = batch.column(0).cast(pa.large_string())
            _, offsets, data = column.buffers()
            bounds = np.frombuffer(offsets, dtype=np.int64)[column.offset : column.offset + len(column) + 1]
            out.write(memoryview(data)[int(bounds[0]) : int(bounds[-1])])
    return count


def bench(path: str | Path, days: int = 30) -> str:
    """Load the file and build the month report; a line of timings."""
    from datetime import date, timedelta

    from processor.batch.engine import BatchEngine

    engine = BatchEngine()
    wall, cpu = time.perf_counter(), time.process_time()
    stats = engine.load(path)
    loaded, loaded_cpu = time.perf_counter(), time.process_time()
    first = date(2026, 11, 1)
    report = engine.report(ACCOUNT, first, first + timedelta(days=days - 1))
    done = time.perf_counter()
    return (
        f"{Path(path).name}: {stats.rows} events, load {loaded - wall:.1f} s wall / {loaded_cpu - cpu:.1f} s CPU "
        f"({stats.rows / (loaded - wall) / 1e6:.2f} M events/s), report {done - loaded:.3f} s "
        f"(peak {report.peak_usage}, billable {report.billable_overage}, {report.license_hours:.0f} license hours)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--bench", action="store_true", help="then load the file and build the month report")
    args = parser.parse_args()
    began = time.perf_counter()
    count = generate_month(args.out, args.agents, args.days)
    print(f"{count} events -> {args.out} in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    if args.bench:
        print(bench(args.out, args.days), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
