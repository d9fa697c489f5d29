"""`make demo`: a month of three simulated accounts, and their licenses usage reports.

The batch path (this module's `run_batch_demo`) needs nothing but the package: it simulates the month into
`demo-output/events.parquet`, computes every report with the DuckDB batch engine, prints them, and writes CSVs and
PNG charts. Account 0 stays inside its pool, account 1 has a spike shorter than its grace period, account 2 has
sustained overage beyond its allowance.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from calendar import monthrange
from datetime import date, timedelta
from pathlib import Path

from processor.core.model import Plan, UsageChange
from processor.core.periods import ONE_DAY, local_date, local_midnight_ms
from processor.kafka_security import plaintext_env  # the demo's own broker is PLAINTEXT: no inherited settings
from processor.reports.chart import chart_data, render_chart
from processor.reports.period_chart import period_chart, render_period_chart
from processor.reports.render import render_report
from processor.simulation import SimConfig, write_events
from schemas.events import parse_timestamp, to_ms
from schemas.outputs import Report

PROFILE_NOTES = {
    0: "stays inside its licenses",
    1: "short spike over its licenses, shorter than the grace period",
    2: "sustained overage beyond its allowance",
}


def month_span(month: str, days: int | None = None) -> tuple[date, date]:
    """First and last day of a YYYY-MM month (or of its first `days` days)."""
    start = date.fromisoformat(f"{month}-01")
    last = start.replace(day=monthrange(start.year, start.month)[1])
    return start, last if days is None else min(last, start + timedelta(days=days - 1))


def demo_config(agents: int, seed: int, month: str, days: int | None = None) -> SimConfig:
    """The demo's simulation: three accounts (within, spike, overage), a whole month."""
    first, last = month_span(month, days)
    days = (last - first).days + 1
    return SimConfig(
        accounts=3, agents=agents, days=days, seed=seed, start=first, profile="mixed", heartbeat_seconds=150
    )


def write_account_outputs(
    out_dir: Path, report: Report, changes: list[UsageChange], plans: list[Plan]
) -> tuple[Path, Path]:
    """Write the report CSV and the usage chart of one account; returns their paths."""
    csv_path = out_dir / f"{report.account_id}-report.csv"
    csv_path.write_text(render_report(report, "csv"))
    chart = period_chart(report, changes, plans)  # daily peaks; nothing drawn after data_through
    png_path = render_period_chart(chart, out_dir / f"{report.account_id}-usage.png")
    if report.peak_at is not None:  # the day of the period's peak, at full resolution
        day = local_date(to_ms(parse_timestamp(report.peak_at)), report.timezone)
        start_ms, end_ms = local_midnight_ms(day, report.timezone), local_midnight_ms(day + ONE_DAY, report.timezone)
        through = None if report.data_through is None else to_ms(parse_timestamp(report.data_through))
        data = chart_data(changes, plans, start_ms, end_ms, data_through_ms=through, timezone=report.timezone)
        render_chart(data, out_dir / f"{report.account_id}-peak-day.png", f"{report.account_id} on {day}")
    return csv_path, png_path


def run_batch_demo(out_dir: Path, agents: int, seed: int, month: str, days: int | None = None) -> int:
    """Simulate, report with the batch engine, print and write the files."""
    from processor.batch.engine import BatchEngine

    out_dir.mkdir(parents=True, exist_ok=True)
    first, last = month_span(month, days)
    events_path = out_dir / "events.parquet"
    print(f"Simulating {month}: 3 accounts x {agents} agents ...", flush=True)
    stats = write_events(events_path, demo_config(agents, seed, month, days))
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


DEMO_PREFIX = "ccmeter."
DEMO_APP_ID = "ccmeter-demo"


class DemoError(Exception):
    """A step of the demo failed; the message says which and where its log is."""


def _ccmeter(*args: str, log: Path | None = None, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run one `ccmeter` command (the same commands the README shows) and fail loudly."""
    command = [sys.executable, "-m", "processor.cli", *args]
    if log is not None:
        with log.open("a") as handle:
            done = subprocess.run(
                command, stdout=handle, stderr=subprocess.STDOUT, text=True, check=False, env=plaintext_env()
            )
    else:
        done = subprocess.run(command, capture_output=capture, text=True, check=False, env=plaintext_env())
    if done.returncode != 0:
        where = f" (see {log})" if log else ""
        detail = (done.stderr or "").strip().splitlines()[-1:] if capture else []
        raise DemoError(f"`ccmeter {' '.join(args[:2])}` failed with exit code {done.returncode}{where} {detail}")
    return done


async def _consumed(bootstrap: str, topic: str, group: str) -> tuple[int, int]:
    """(records the worker group has committed, records in the topic) over all partitions."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            await consumer.client.force_metadata_update()
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(partitions)
        done = 0
        for tp in partitions:
            done += min(await consumer.committed(tp) or 0, ends[tp])
        return done, sum(ends.values())
    finally:
        await consumer.stop()


def wait_until_caught_up(bootstrap: str, worker: subprocess.Popen, log: Path, timeout_s: float = 600) -> None:
    """Show a progress bar until the worker's committed offsets reach the end of the events topic."""
    import asyncio

    from tqdm import tqdm

    topic = DEMO_PREFIX + "events"
    deadline = time.monotonic() + timeout_s
    with tqdm(desc="worker", unit=" events", unit_scale=True, file=sys.stderr, dynamic_ncols=True) as bar:
        while True:
            if worker.poll() is not None:
                raise DemoError(f"the worker stopped with exit code {worker.returncode} (see {log})")
            done, total = asyncio.run(_consumed(bootstrap, topic, DEMO_APP_ID))
            bar.total = total
            bar.n = done
            bar.refresh()
            if total and done >= total:
                return
            if time.monotonic() > deadline:
                raise DemoError(f"the worker did not catch up within {timeout_s:.0f} s (see {log})")
            time.sleep(1.0)


def run_streaming_demo(out_dir: Path, agents: int, seed: int, month: str, days: int | None = None) -> int:
    """Embedded broker, topics, a worker, a simulated month published, sink, snapshot, reports, CSVs and charts."""
    from processor.brokers.common import free_port, terminate
    from processor.brokers.tansu import TansuBroker

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("data", "worker-data"):
        shutil.rmtree(out_dir / stale, ignore_errors=True)
    worker_log, tools_log = out_dir / "worker.log", out_dir / "commands.log"
    worker_log.unlink(missing_ok=True)
    tools_log.unlink(missing_ok=True)
    first, last = month_span(month, days)
    began = time.monotonic()
    with TansuBroker() as broker:
        bootstrap = broker.bootstrap
        print(f"1/6 embedded Kafka-protocol broker (Tansu) on {bootstrap}", flush=True)
        _ccmeter("topics", "create", "--broker", bootstrap, "--prefix", DEMO_PREFIX, "--partitions", "4",
                 log=tools_log)  # fmt: skip
        web_port = free_port()
        print("2/6 topics created; starting a worker", flush=True)
        worker_command = [
            sys.executable, "-m", "processor.cli", "worker", "--broker", bootstrap, "--prefix", DEMO_PREFIX,
            "--app-id", DEMO_APP_ID, "--web-port", str(web_port), "--state-dir", str(out_dir / "worker-data"),
            "--session-timeout", "2s", "--heartbeat-interval", "500ms", "--rebalance-timeout", "4s",
            "--commit-interval", "1s", "--log-level", "warning",
        ]  # fmt: skip
        with worker_log.open("w") as log_handle:
            worker = subprocess.Popen(worker_command, stdout=log_handle, stderr=subprocess.STDOUT, env=plaintext_env())
        try:
            events_path = out_dir / "events.jsonl"
            print(f"3/6 simulating {first} to {last}: 3 accounts x {agents} agents", flush=True)
            stats = write_events(events_path, demo_config(agents, seed, month, days))
            print("    " + stats.summary(), flush=True)
            _ccmeter("publish", "--broker", bootstrap, "--prefix", DEMO_PREFIX, str(events_path), log=tools_log)
            print("4/6 published; the worker folds them", flush=True)
            wait_until_caught_up(bootstrap, worker, worker_log)
            print("    caught up", flush=True)
            data_dir, snapshot = out_dir / "data", out_dir / "ccmeter.duckdb"
            _ccmeter("sink", "--broker", bootstrap, "--prefix", DEMO_PREFIX, "--data-dir", str(data_dir), "--once",
                     log=tools_log)  # fmt: skip
            _ccmeter("snapshot", "--data-dir", str(data_dir), "--out", str(snapshot), log=tools_log)
            print(f"5/6 sink wrote Parquet files to {data_dir}/; snapshot {snapshot}", flush=True)
        finally:
            terminate(worker, timeout=15)
    print("6/6 reports from the snapshot\n", flush=True)
    for number in range(3):
        account = f"acct-{number}"
        span = ("--account", account, "--from", str(first), "--to", str(last))
        table = _ccmeter("report", "--snapshot", str(snapshot), *span, capture=True).stdout
        print(f"=== {account}: {PROFILE_NOTES[number]} ===\n{table}")
        _ccmeter("report", "--snapshot", str(snapshot), *span, "--format", "csv", "--out",
                 str(out_dir / f"{account}-report.csv"), log=tools_log)  # fmt: skip
        _ccmeter("chart", "--snapshot", str(snapshot), *span, "--out", str(out_dir / f"{account}-usage.png"),
                 log=tools_log)  # fmt: skip
        summary = json.loads(_ccmeter("report", "--snapshot", str(snapshot), *span, "--format", "json",
                                      capture=True).stdout)  # fmt: skip
        if summary["peak_at"]:  # the day of the peak at full resolution
            day = local_date(to_ms(parse_timestamp(summary["peak_at"])), summary["timezone"])
            _ccmeter("chart", "--snapshot", str(snapshot), "--account", account, "--day", str(day), "--out",
                     str(out_dir / f"{account}-peak-day.png"), log=tools_log)  # fmt: skip
    print(NEXT_STEPS.format(out=out_dir, snapshot=snapshot, first=first, last=last, seconds=time.monotonic() - began))
    return 0


NEXT_STEPS = """Done in {seconds:.0f} s. Files in {out}/: events.jsonl, ccmeter.duckdb (snapshot), data/ (Parquet),
acct-N-report.csv, acct-N-usage.png (period chart) and acct-N-peak-day.png (the peak's day), worker.log and
commands.log.

Try next:
  .venv/bin/ccmeter console --snapshot {snapshot}   (web console: open http://127.0.0.1:8088/)
  .venv/bin/ccmeter report --snapshot {snapshot} --all --from {first} --to {last}
  .venv/bin/ccmeter report --snapshot {snapshot} --account acct-2 --from {first} --to {last} --format json
  .venv/bin/ccmeter replay verify --snapshot {snapshot}
  .venv/bin/python -c "import duckdb; duckdb.connect('{snapshot}', read_only=True).sql('FROM accounts').show()"
     (SQL on the snapshot: any DuckDB from 1.1 on opens it, see docs/analysts.md)
  Live queries: run a broker and a worker with a token (README, "Run the processor"; ccmeter tokens new), then
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:6066/accounts/acct-0/usage
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m processor.demo` (`make demo`)."""
    parser = argparse.ArgumentParser(prog="python -m processor.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    parser.add_argument("--agents", type=int, default=8, help="agents per account (default: 8)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--month", default="2026-10", help="simulated month, YYYY-MM (default: 2026-10)")
    parser.add_argument("--days", type=int, help="simulate only the month's first N days (for quick runs)")
    parser.add_argument("--batch", action="store_true", help="no broker: compute the reports with the batch engine")
    args = parser.parse_args(argv)
    try:
        if args.batch:
            return run_batch_demo(Path(args.out), args.agents, args.seed, args.month, args.days)
        return run_streaming_demo(Path(args.out), args.agents, args.seed, args.month, args.days)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted; every process it started is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
