"""The billing-run export, timelines and charts agree between a snapshot and an event archive of the same events,
and bad input (missing, corrupt, newer-format snapshot, unknown account, empty period, a period before the first
event) is one clear line and a non-zero exit from `report`, `chart` and `timeline`.

The stream has one partition, so the archive's data_through (the file rule) is the snapshot's horizon."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from processor.cli import main
from processor.reports.render import BILLING_RUN_KEYS, line_id
from processor.snapshots.sink import SinkWriter
from processor.snapshots.snapshot import build_snapshot
from tests.processor.snapshots.streams import build_streams, feed, history_lines


@dataclass(frozen=True)
class Sources:
    snapshot: Path
    events: Path

    def flags(self, kind: str) -> list[str]:
        return ["--snapshot", str(self.snapshot)] if kind == "snapshot" else ["--events", str(self.events)]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    """3 accounts x 4 agents x 3 days (duplicates, late arrivals, malformed lines) on one partition: a snapshot
    built without Kafka, and the same events as a .jsonl archive."""
    base = tmp_path_factory.mktemp("billing-run")
    lines = history_lines(seed=5, accounts=3, agents=4, days=3, duplicates=0.02, out_of_order=0.05, malformed=0.01)
    streams = build_streams(lines, "ccmeter.events", partitions=1)
    feed(SinkWriter(base / "data", "ccmeter."), streams, flush_every=5000)
    build_snapshot(base / "data", base / "usage.duckdb")
    return Sources(base / "usage.duckdb", streams.events_file(base / "events.jsonl"))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("period", ["current", "2026-10", "2026-11"])
@pytest.mark.parametrize("fmt", ["json", "csv", "table"])
def test_snapshot_and_archive_give_identical_billing_runs(
    capsys: pytest.CaptureFixture[str], sources: Sources, period: str, fmt: str
) -> None:
    outputs = []
    for kind in ("snapshot", "events"):
        code, out, err = run_cli(capsys, "report", *sources.flags(kind), "--all", "--period", period,
                                 "--format", fmt, "--quiet")  # fmt: skip
        assert code == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1]
    if fmt == "json":
        rows = json.loads(outputs[0])
        assert [tuple(row) for row in rows] == [BILLING_RUN_KEYS] * 3
        assert [row["account_id"] for row in rows] == ["acct-0", "acct-1", "acct-2"]


def test_billing_run_lines(capsys: pytest.CaptureFixture[str], sources: Sources) -> None:
    code, out, _ = run_cli(capsys, "report", *sources.flags("snapshot"), "--all", "--period", "current",
                           "--format", "csv")  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 3
    for row in rows:
        assert row["line_id"] == line_id(row["account_id"], row["from"], row["to"]) and len(row["line_id"]) == 16
        assert row["restatement"] == "live" and row["complete"] == "false" and row["timezone"]
        assert row["period_start_local"].startswith(row["from"] + "T00:00:00.000")
        assert row["period_start_local"][-6] in "+-" and row["data_through_local"][-6] in "+-"
        hours, seconds = row["license_hours"], row["seconds_over_licenses"]
        assert len(hours.split(".")[1]) == 6 and len(seconds.split(".")[1]) == 3  # fixed decimals
        users = row["peak_users"].split(";")
        assert len(users) == int(row["peak_usage"]) and all("[" in user for user in users)
    # A restated line keeps its id: the id is the account and the period, nothing else.
    code, again, _ = run_cli(capsys, "report", *sources.flags("snapshot"), "--all", "--period", "current",
                             "--format", "json")  # fmt: skip
    assert [r["line_id"] for r in json.loads(again)] == [r["line_id"] for r in rows]
    code, single, _ = run_cli(capsys, "report", *sources.flags("events"), "--account", "acct-2", "--period",
                              "current", "--format", "csv", "--quiet")  # fmt: skip
    summary = list(csv.DictReader(io.StringIO(single.split("\n\n")[1])))
    assert code == 0 and summary == [rows[2]]  # the per-account CSV's summary is its billing-run line


def test_billing_run_leaves_out_accounts_not_started_and_refuses_an_empty_run(
    capsys: pytest.CaptureFixture[str], sources: Sources
) -> None:
    for kind in ("snapshot", "events"):
        code, out, err = run_cli(capsys, "report", *sources.flags(kind), "--all", "--period", "2026-09", "--quiet")
        assert code == 2 and out == "" and "no account has events in that period" in err
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["snapshot", "events"])
def test_timeline_from_either_source(capsys: pytest.CaptureFixture[str], sources: Sources, kind: str) -> None:
    code, whole, _ = run_cli(capsys, "timeline", *sources.flags(kind), "--account", "acct-1", "--quiet")
    rows = list(csv.DictReader(io.StringIO(whole)))
    assert code == 0 and list(rows[0]) == ["at", "at_local", "usage", "licenses", "change_id"] and len(rows) > 20
    assert all(row["at_local"].endswith("+11:00") for row in rows)  # acct-1 is in Australia/Sydney
    code, day, _ = run_cli(capsys, "timeline", *sources.flags(kind), "--account", "acct-1", "--from", "2026-11-03",
                           "--to", "2026-11-03", "--format", "json", "--quiet")  # fmt: skip
    changes = json.loads(day)["changes"]
    assert code == 0 and changes and all(c["at_local"].startswith("2026-11-03T") for c in changes)
    assert len(changes) < len(rows)


def test_timelines_and_charts_agree_between_sources(
    capsys: pytest.CaptureFixture[str], sources: Sources, tmp_path: Path
) -> None:
    texts = [run_cli(capsys, "timeline", *sources.flags(kind), "--account", "acct-2", "--quiet")[1]
             for kind in ("snapshot", "events")]  # fmt: skip
    assert texts[0] == texts[1] and texts[0].count("\n") > 20
    charts = []
    for kind in ("snapshot", "events"):
        out = tmp_path / f"{kind}.svg"
        code, _, err = run_cli(capsys, "chart", *sources.flags(kind), "--account", "acct-2", "--period", "current",
                               "--out", str(out))  # fmt: skip
        assert code == 0 and "billable overage 3" in err
        charts.append(out.read_bytes())
    assert charts[0] == charts[1] and charts[0].lstrip().startswith(b"<?xml") and b"</svg>" in charts[0]
    assert b"data through 2026-11-04" in charts[0]  # text stays text in the SVG


def _bad_snapshots(sources: Sources, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    corrupt = tmp_path / "corrupt.duckdb"
    corrupt.write_bytes(b"not a database at all\n" * 500)
    newer = tmp_path / "newer.duckdb"
    newer.write_bytes(sources.snapshot.read_bytes())
    return {
        "missing": (tmp_path / "nope.duckdb", "no such snapshot file"),
        "corrupt": (corrupt, "not a DuckDB database"),
        "newer": (newer, "newer DuckDB storage format"),
    }


def _as_if_newer(monkeypatch: pytest.MonkeyPatch, newer: Path) -> None:
    """DuckDB refuses `newer` with the error it gives for a storage version it does not read yet (a real file of a
    future DuckDB cannot be made here: its header carries a checksum of the future release's own making)."""
    import duckdb

    from processor.snapshots import snapshot

    real = duckdb.connect

    def connect(database: str, *args: object, **kwargs: object) -> duckdb.DuckDBPyConnection:
        if Path(database) == newer:
            raise duckdb.IOException(
                "IO Error: Trying to read a database file with version number 99, but we can only read versions "
                "between 64 and 68.\nThe database file was created with a newer version of DuckDB."
            )
        return real(database, *args, **kwargs)

    monkeypatch.setattr(snapshot.duckdb, "connect", connect)


COMMANDS = {
    "report": ["report", "--account", "acct-0", "--period", "current"],
    "chart": ["chart", "--account", "acct-0", "--period", "current", "--out", "{tmp}/c.png"],
    "timeline": ["timeline", "--account", "acct-0"],
    "billing run": ["report", "--all", "--period", "current"],
}


@pytest.mark.parametrize("problem", ["missing", "corrupt", "newer"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_snapshots_are_one_line(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    sources: Sources,
    tmp_path: Path,
    problem: str,
    command: str,
) -> None:
    path, message = _bad_snapshots(sources, tmp_path)[problem]
    if problem == "newer":
        _as_if_newer(monkeypatch, path)
    name, *rest = (arg.format(tmp=tmp_path) for arg in COMMANDS[command])
    code, out, err = run_cli(capsys, name, "--snapshot", str(path), *rest)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err


BAD_RANGES = [
    (["--account", "nobody", "--period", "current"], "account 'nobody' not found"),
    (["--account", "acct-0", "--period", "2026-09"], "ends before the first event of account 'acct-0'"),
    (["--account", "acct-0", "--from", "2020-01-01", "--to", "2020-01-31"], "ends before the first event"),
    (["--account", "acct-0", "--from", "2026-12-01", "--to", "2026-12-31"], "is empty for account 'acct-0'"),
    (["--account", "acct-0", "--period", "2027-01"], "is empty for account 'acct-0': data through 2026-11-0"),
]


@pytest.mark.parametrize("kind", ["snapshot", "events"])
@pytest.mark.parametrize("command", ["report", "chart", "timeline"])
@pytest.mark.parametrize(("args", "message"), BAD_RANGES)
def test_unknown_accounts_and_empty_periods_are_one_line(
    capsys: pytest.CaptureFixture[str],
    sources: Sources,
    tmp_path: Path,
    kind: str,
    command: str,
    args: list[str],
    message: str,
) -> None:
    extra = ["--out", str(tmp_path / "c.svg")] if command == "chart" else []
    quiet = [] if command == "chart" else ["--quiet"]
    code, out, err = run_cli(capsys, command, *sources.flags(kind), *args, *extra, *quiet)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c.svg").exists()
