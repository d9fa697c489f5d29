"""`make demo`: a month of three simulated accounts, and their licenses usage reports.

The batch path (this module's `run_batch_demo`) needs nothing but the package: it simulates the month into
`demo-output/events.parquet`, computes every report with the DuckDB batch engine, prints them, and writes CSVs and
PNG charts. Account 0 stays inside its pool, account 1 has a spike shorter than its grace period, account 2 has
sustained overage beyond its allowance.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, timedelta
from pathlib import Path

from processor.core.model import Plan, UsageChange
from processor.core.periods import local_midnight_ms
from processor.reports.chart import chart_data, render_chart
from processor.reports.render import render_report
from processor.simulation import SimConfig, write_events
from schemas.outputs import Report

PROFILE_NOTES = {
    0: "stays inside its licenses",
    1: "short spike over its licenses, shorter than the grace period",
    2: "sustained overage beyond its allowance",
}


DEMO_DAYS = 30


def demo_config(agents: int, seed: int, start: date) -> SimConfig:
    """The demo's simulation: three accounts (within, spike, overage), a whole month."""
    return SimConfig(accounts=3, agents=agents, days=DEMO_DAYS, seed=seed, start=start, profile="mixed")


def write_account_outputs(
    out_dir: Path, report: Report, changes: list[UsageChange], plans: list[Plan]
) -> tuple[Path, Path]:
    """Write the report CSV and the usage chart of one account; returns their paths."""
    csv_path = out_dir / f"{report.account_id}-report.csv"
    csv_path.write_text(render_report(report, "csv"))
    start_ms = local_midnight_ms(date.fromisoformat(report.from_), report.timezone)
    end_ms = local_midnight_ms(date.fromisoformat(report.to) + timedelta(days=1), report.timezone)
    data = chart_data(changes, plans, start_ms, end_ms)
    title = f"{report.account_id}: usage {report.from_} to {report.to} ({report.timezone})"
    png_path = render_chart(data, out_dir / f"{report.account_id}-usage.png", title)
    return csv_path, png_path


def run_batch_demo(out_dir: Path, agents: int, seed: int, month: str) -> int:
    """Simulate, report with the batch engine, print and write the files."""
    from processor.batch.engine import BatchEngine

    out_dir.mkdir(parents=True, exist_ok=True)
    start = date.fromisoformat(f"{month}-01")
    first, last = start, start + timedelta(days=DEMO_DAYS - 1)
    events_path = out_dir / "events.parquet"
    print(f"Simulating {month}: 3 accounts x {agents} agents ...", flush=True)
    stats = write_events(events_path, demo_config(agents, seed, start))
    print(stats.summary(), flush=True)
    with BatchEngine() as engine:
        engine.load(events_path, progress=sys.stderr.isatty())
        for number, account in enumerate(engine.accounts()):
            plans = engine.plans(account)
            report = engine.report(account, first, last)
            print(f"\n=== {account} ({PROFILE_NOTES.get(number, '')}) ===")
            print(render_report(report, "table"))
            files = write_account_outputs(out_dir, report, engine.usage_changes(account), plans)
            print("wrote " + ", ".join(str(path) for path in files))
    print(f"\nAll files are in {out_dir}/. Next: .venv/bin/ccmeter report --events {events_path} --account acct-2 "
          f"--from {first} --to {last} --format json")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m processor.demo`."""
    parser = argparse.ArgumentParser(prog="python -m processor.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--agents", type=int, default=60, help="agents per account (default: 60)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--month", default="2026-11", help="simulated month, YYYY-MM (default: 2026-11)")
    args = parser.parse_args(argv)
    return run_batch_demo(Path(args.out), args.agents, args.seed, args.month)


if __name__ == "__main__":
    sys.exit(main())
