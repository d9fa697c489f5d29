"""Snapshots without Kafka: the consistent cut, deduplication, atomic replacement with readers, `--keep`, reports
equal to the batch engine's, the CLI (`report --snapshot`, `--all`, `chart`) and its errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

import duckdb
import pytest

from processor.cli import main
from processor.cli.snapshots import ALL_KEYS
from processor.reports.chart import chart_data
from processor.reports.render import EXPORT_DAY_KEYS
from processor.snapshots.history import load_histories, resolve_period, snapshot_accounts
from processor.snapshots.sink import SinkWriter
from processor.snapshots.snapshot import SnapshotError, build_snapshot, history_files, open_snapshot
from processor.snapshots.store import Manifest, read_manifest, write_manifest
from processor.topics import EVENTS, USAGE_CHANGES
from schemas.outputs import DAY_KEYS, SUMMARY_KEYS
from tests.processor.snapshots.streams import Streams, feed, partition_engines

OUTPUT_TABLES = ("usage_changes", "peak_windows", "alerts", "user_intervals", "plans", "dead_letters")


def rows(con: duckdb.DuckDBPyConnection, table: str) -> list[tuple]:
    return sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


def count(path: Path, table: str = "events") -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def test_tables_hold_every_record_once(snapshot_path: Path, sim_streams: Streams) -> None:
    con, watermark = open_snapshot(snapshot_path)
    with con:
        assert count(snapshot_path) == sim_streams.count(EVENTS)
        assert count(snapshot_path, "usage_changes") == sim_streams.count(USAGE_CHANGES)
        info = con.execute("SELECT watermark, ccmeter_version, topic_prefix, created_at FROM snapshot_info").fetchall()
        assert len(info) == 1 and info[0][1] and info[0][2] == "ccmeter." and info[0][3] is not None
        offsets = dict(
            ((t, p), o)
            for t, p, o in con.execute("SELECT topic_key, partition, next_offset FROM snapshot_offsets").fetchall()
        )
        for partition, records in sim_streams.records[EVENTS].items():
            assert offsets[(EVENTS, partition)] == len(records)
        assert watermark is not None and watermark == max(
            con.execute("SELECT epoch_ms(max(occurred_at)) FROM events WHERE rejection IS NULL").fetchall()[0]
        )
        bad = con.execute("SELECT count(*) FROM events WHERE rejection IS NOT NULL").fetchall()[0][0]
        assert (
            bad > 0
            and bad
            == con.execute(
                "SELECT count(*) FROM dead_letters WHERE reason NOT IN ('too_late', 'future_skew')"
            ).fetchall()[0][0]
        )


def test_output_redeliveries_are_deduplicated_by_id(tmp_path: Path, snapshot_path: Path, sim_streams: Streams) -> None:
    again = Streams(partitions=sim_streams.partitions)
    for topic, parts in sim_streams.records.items():
        for partition, records in parts.items():
            copies = records if topic == EVENTS else records + records[: len(records) // 2]  # the worker re-sent
            again.records[topic][partition] = list(copies)
    data = tmp_path / "data"
    feed(SinkWriter(data, "ccmeter."), again, flush_every=6000)
    out = tmp_path / "again.duckdb"
    build_snapshot(data, out)
    with (
        duckdb.connect(str(snapshot_path), read_only=True) as clean,
        duckdb.connect(str(out), read_only=True) as dup,
    ):
        for table in ("events", *OUTPUT_TABLES, "billing_periods", "billing_days"):
            assert rows(dup, table) == rows(clean, table), table


def test_only_committed_files_are_read(tmp_path: Path, sink_dir: Path, sim_streams: Streams) -> None:
    data = tmp_path / "data"
    shutil.copytree(sink_dir, data)
    manifest = read_manifest(data)
    assert manifest is not None
    cut = {p: o // 2 for p, o in manifest.offsets[EVENTS].items()}
    write_manifest(data, Manifest(manifest.prefix, {EVENTS: cut}, manifest.watermarks))
    out = tmp_path / "cut.duckdb"
    build_snapshot(data, out)
    with duckdb.connect(str(out), read_only=True) as con:
        per_partition = dict(con.execute("SELECT kafka_partition, max(kafka_offset) FROM events GROUP BY 1").fetchall())
        assert all(per_partition[p] < cut[p] for p in per_partition)
        assert con.execute("SELECT count(*) FROM usage_changes").fetchall()[0][0] == 0  # topic not in the manifest
        offsets = con.execute(
            "SELECT partition, next_offset FROM snapshot_offsets WHERE topic_key = 'events'"
        ).fetchall()
        assert dict(offsets) == cut


def test_missing_data_and_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="no sink data"):
        build_snapshot(tmp_path, tmp_path / "s.duckdb")
    with pytest.raises(SnapshotError, match=r"\.duckdb"):
        build_snapshot(tmp_path, tmp_path / "s.db")
    with pytest.raises(SnapshotError, match="at least 1"):
        build_snapshot(tmp_path, tmp_path / "s.duckdb", keep=0)
    (tmp_path / "x.duckdb").write_text("hello")
    with pytest.raises(SnapshotError, match="not a DuckDB database"):
        open_snapshot(tmp_path / "x.duckdb")
    duckdb.connect(str(tmp_path / "y.duckdb")).close()
    with pytest.raises(SnapshotError, match="not a ccmeter snapshot"):
        open_snapshot(tmp_path / "y.duckdb")


@pytest.fixture
def small_dir(tmp_path: Path, sim_streams: Streams) -> Path:
    """A sink directory with a small slice of the history (fast snapshots)."""
    small = Streams(partitions=sim_streams.partitions)
    for partition, records in sim_streams.records[EVENTS].items():
        small.records[EVENTS][partition] = records[:300]
    data = tmp_path / "small"
    feed(SinkWriter(data, "ccmeter."), small)
    return data


HOLDER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
for line in sys.stdin:
    print(con.execute("SELECT count(*) FROM events").fetchall()[0][0], flush=True)
"""


def test_readers_see_whole_snapshots_while_new_ones_replace_them(
    tmp_path: Path, small_dir: Path, sink_dir: Path
) -> None:
    out = tmp_path / "snaps" / "usage.duckdb"
    build_snapshot(small_dir, out)
    small = count(out)
    # An analyst's session in another process keeps the file it opened, whatever replaces it.
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdin and holder.stdout
    holder.stdin.write("?\n")
    holder.stdin.flush()
    assert int(holder.stdout.readline()) == small
    seen: set[int] = set()
    errors: list[BaseException] = []

    def build() -> None:
        try:
            for _ in range(2):
                build_snapshot(sink_dir, out)
                build_snapshot(small_dir, out)
            build_snapshot(sink_dir, out)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    builder = threading.Thread(target=build)
    builder.start()
    while builder.is_alive():
        seen.add(count(out))  # a new read-only session each time: always a complete snapshot
    builder.join()
    assert not errors
    full = count(out)
    assert seen <= {small, full} and full > small
    holder.stdin.write("?\n")
    holder.stdin.flush()
    assert int(holder.stdout.readline()) == small  # the old file, undisturbed
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["usage.duckdb"]  # no temporary files left behind


def test_keep_prunes_older_snapshots(tmp_path: Path, small_dir: Path) -> None:
    out = tmp_path / "usage.duckdb"
    (tmp_path / "other.duckdb").write_bytes(b"not ours")
    for _ in range(4):
        build_snapshot(small_dir, out, keep=3)
    kept = history_files(out)
    assert len(kept) == 2 and all(p.name.startswith("usage.2") for p in kept)
    for path in kept:
        assert count(path) == count(out)
    result = build_snapshot(small_dir, out, keep=1)
    assert len(result.pruned) == 2 and history_files(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.duckdb", "small", "usage.duckdb"]


def test_reports_equal_the_batch_engine(tmp_path: Path, snapshot_path: Path) -> None:
    con, _ = open_snapshot(snapshot_path)
    with con:
        engines = partition_engines(con, tmp_path)
        histories = load_histories(con)
        accounts = snapshot_accounts(con)
        assert accounts == sorted(engines)
        billed = {
            row[0]: row[1:]
            for row in con.execute(
                "SELECT account_id, period_from, period_to, peak_usage, billable_overage, license_hours, "
                "epoch_ms(data_through), complete FROM billing_periods WHERE is_current"
            ).fetchall()
        }
    for account in accounts:
        history, engine = histories[account], engines[account]
        assert history.data_through_ms is not None and history.data_through_ms == engine.data_through(account)
        for spec in ("current", "previous"):
            start, end = resolve_period(spec, history.latest_plan, history.data_through_ms)
            assert history.report(start, end) == engine.report(account, start, end), (account, spec)
        assert history.report(date(2026, 11, 1), date(2026, 11, 3)) == engine.report(
            account, date(2026, 11, 1), date(2026, 11, 3)
        )
        start, end = resolve_period("current", history.latest_plan, history.data_through_ms)
        report = history.report(start, end)
        assert report.complete is False and report.peak_users
        assert billed[account] == (
            start, end, report.peak_usage, report.billable_overage, report.license_hours, history.data_through_ms,
            False,
        )  # fmt: skip
    assert any(
        histories[a]
        .report(*resolve_period("current", histories[a].latest_plan, histories[a].data_through_ms))
        .billable_overage
        for a in accounts
    )


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_report_from_a_snapshot_in_every_format(capsys: pytest.CaptureFixture[str], snapshot_path: Path) -> None:
    snap = str(snapshot_path)
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--account", "acct-2", "--period", "current",
                           "--format", "json")  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert tuple(k for k in report if k != "days") == SUMMARY_KEYS and report["account_id"] == "acct-2"
    assert tuple(report["days"][0]) == DAY_KEYS
    first, last = date.fromisoformat(report["from"]), date.fromisoformat(report["to"])
    assert len(report["days"]) == (last - first).days + 1
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--account", "acct-2", "--from", report["from"],
                           "--to", report["to"], "--format", "csv")  # fmt: skip
    days_csv, summary_csv = out.split("\n\n")
    table = list(csv.DictReader(io.StringIO(days_csv)))
    assert code == 0 and list(table[0]) == ["account_id", *EXPORT_DAY_KEYS] and len(table) == len(report["days"])
    assert [r["peak_usage"] for r in table] == ["" if d["peak_usage"] is None else str(d["peak_usage"])
                                                for d in report["days"]]  # fmt: skip
    assert any(r["peak_usage"] == "" for r in table) and any(r["complete"] == "true" for r in table)
    (summary_row,) = csv.DictReader(io.StringIO(summary_csv))
    assert (summary_row["data_through"], summary_row["complete"]) == (report["data_through"], "false")
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--account", "acct-2", "--period", "current")
    assert code == 0 and out.startswith("Licenses usage report: acct-2") and "billable_overage" in out
    assert "data_through" in out and report["data_through"] in out


def test_billing_run_rows_for_every_account(capsys: pytest.CaptureFixture[str], snapshot_path: Path) -> None:
    snap = str(snapshot_path)
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--all", "--period", "current", "--format", "json")
    assert code == 0
    rows_json = json.loads(out)
    assert [tuple(row) for row in rows_json] == [ALL_KEYS] * 4
    assert [row["account_id"] for row in rows_json] == ["acct-0", "acct-1", "acct-2", "acct-3"]
    for row in rows_json:  # each row equals that account's own report
        _, single, _ = run_cli(capsys, "report", "--snapshot", snap, "--account", row["account_id"], "--period",
                               "current", "--format", "json")  # fmt: skip
        full = json.loads(single)
        assert {key: row[key] for key in SUMMARY_KEYS} == {key: full[key] for key in SUMMARY_KEYS}
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--all", "--period", "current", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and tuple(table[0]) == ALL_KEYS and len(table) == 4
    assert [int(r["billable_overage"]) for r in table] == [r["billable_overage"] for r in rows_json]
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--all", "--from", "2026-11-01", "--to", "2026-11-02")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == list(ALL_KEYS) and len(lines) == 2 + 4
    out_file = snapshot_path.parent / "billing.csv"
    code, _, err = run_cli(capsys, "report", "--snapshot", snap, "--all", "--period", "current", "--format", "csv",
                           "--out", str(out_file))  # fmt: skip
    assert code == 0 and "wrote" in err and out_file.read_text().startswith(",".join(ALL_KEYS))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "nobody", "--period", "current"], "account 'nobody' not found in snapshot"),
        (["--account", "acct-1", "--period", "2026-13"], "--period must be current, previous or YYYY-MM"),
        (["--account", "acct-1", "--period", "last"], "--period must be"),
        (["--account", "acct-1", "--period", "current", "--from", "2026-11-01"], "either --period or --from/--to"),
        (["--account", "acct-1", "--from", "2026-11-01"], "give --period"),
        (["--account", "acct-1", "--from", "2026-11-05", "--to", "2026-11-01"], "before --from"),
        (["--account", "acct-1", "--from", "Nov 1", "--to", "2026-11-01"], "--from must be a date"),
        (["--account", "acct-1", "--all", "--period", "current"], "either --account or --all"),
        (["--period", "current"], "give --account"),
    ],
)
def test_snapshot_report_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], snapshot_path: Path, args: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, "report", "--snapshot", str(snapshot_path), *args)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_missing_snapshot_and_flags_without_a_snapshot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "report", "--snapshot", str(tmp_path / "nope.duckdb"), "--account", "a",
                           "--period", "current")  # fmt: skip
    assert code == 2 and "no such snapshot file" in err
    events = tmp_path / "e.jsonl"
    events.write_text("")
    code, _, err = run_cli(capsys, "report", "--events", str(events), "--account", "a", "--period", "current")
    assert code == 2 and "account 'a' not found" in err
    code, _, err = run_cli(capsys, "report", "--events", str(events), "--account", "a")
    assert code == 2 and "give --period (current, previous or YYYY-MM) or both --from and --to" in err


def test_chart_matches_the_report(capsys: pytest.CaptureFixture[str], tmp_path: Path, snapshot_path: Path) -> None:
    png = tmp_path / "charts" / "usage.png"
    code, _, err = run_cli(capsys, "chart", "--snapshot", str(snapshot_path), "--account", "acct-2", "--period",
                           "current", "--out", str(png))  # fmt: skip
    assert code == 0 and "wrote" in err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    con, _ = open_snapshot(snapshot_path)
    with con:
        history = load_histories(con, ["acct-2"])["acct-2"]
    through = history.data_through_ms
    assert through is not None
    start, end = resolve_period("current", history.latest_plan, through)
    start_ms, end_ms = history.bounds_ms(start, end)
    data = chart_data(history.changes, history.plans, start_ms, end_ms, data_through_ms=through)
    report = history.report(start, end)
    assert data.times_ms[0] == start_ms and data.end_ms == end_ms and start_ms < through < end_ms
    assert data.known_end_ms == through and all(t < through for t in data.times_ms)  # nothing drawn after it
    assert max(data.usage) == report.peak_usage > 0
    assert data.billable_overage == report.billable_overage > 0
    assert report.licenses == data.licenses[-1]
    code, _, err = run_cli(capsys, "chart", "--snapshot", str(snapshot_path), "--account", "acct-2", "--from",
                           "2026-11-02", "--to", "2026-11-02", "--out", str(tmp_path / "day.png"))  # fmt: skip
    assert code == 0 and (tmp_path / "day.png").stat().st_size > 0
    code, _, err = run_cli(capsys, "chart", "--snapshot", str(snapshot_path), "--account", "acct-2", "--period",
                           "current", "--out", str(tmp_path / "usage.pdf"))  # fmt: skip
    assert code == 2 and ".png or .svg" in err
