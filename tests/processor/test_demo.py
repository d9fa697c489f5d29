"""The `make demo` path end to end, smaller: embedded broker, worker, sink, snapshot, reports, CSVs and charts."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from processor.snapshots.snapshot import open_snapshot
from tests.processor.snapshots.streams import partition_engines

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_streaming_demo_reports_equal_the_batch_engine(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    command = [sys.executable, "-m", "processor.demo", "--out", str(out), "--agents", "3", "--days", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Files in" in done.stdout and "Try next" in done.stdout
    for account in ("acct-0", "acct-1", "acct-2"):
        assert f"=== {account}" in done.stdout
        days, summary = (out / f"{account}-report.csv").read_text().split("\n\n", 1)  # two sections
        rows = list(csv.DictReader(io.StringIO(days)))
        assert [row["date"] for row in rows] == ["2026-10-01", "2026-10-02", "2026-10-03", "2026-10-04"]
        assert next(csv.DictReader(io.StringIO(summary)))["account_id"] == account
        assert (out / f"{account}-usage.png").read_bytes()[:4] == b"\x89PNG"

    # The snapshot's reports (from the worker's live outputs) equal the batch engine's on the published events of
    # each account's partition (an event file is one partition: SPEC 2's rule for its data_through).
    con, _ = open_snapshot(out / "ccmeter.duckdb")
    with con:
        engines = partition_engines(con, tmp_path)
    ccmeter = [sys.executable, "-m", "processor.cli"]
    for account, engine in sorted(engines.items()):
        args = ["report", "--snapshot", str(out / "ccmeter.duckdb"), "--account", account]
        args += ["--from", "2026-10-01", "--to", "2026-10-04", "--format", "json"]
        report = json.loads(subprocess.run([*ccmeter, *args], capture_output=True, text=True, check=True).stdout)
        assert report == engine.report(account, date(2026, 10, 1), date(2026, 10, 4)).to_json_dict()

    # Nothing is left running: the worker's port is free again and no child of the demo survives.
    leftovers = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True, check=False).stdout.split()
    assert leftovers == []
