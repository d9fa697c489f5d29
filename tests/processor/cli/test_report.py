"""`ccmeter report` and `ccmeter timeline` through the real console script, on a simulated history."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from processor.core.billing import build_report
from processor.core.model import Settings
from processor.core.partition import fold_history
from processor.eventfile import read_events
from processor.reports.render import BILLING_RUN_KEYS, EXPORT_DAY_KEYS
from processor.simulation import SimConfig, write_events
from schemas.events import Rejection, to_ms
from schemas.outputs import DAY_KEYS, SUMMARY_KEYS

CCMETER = str(Path(sys.executable).parent / "ccmeter")
START, END = "2026-11-02", "2026-11-04"
PAST = "2026-11-06"  # the simulated history ends on 2026-11-05: a period to PAST runs past data_through


def ccmeter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CCMETER, *args], capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "events.jsonl"
    faults = {"duplicates": 0.01, "out_of_order": 0.01, "malformed": 0.001}
    config = SimConfig(accounts=3, agents=6, days=3, seed=11, start=date(2026, 11, 2), **faults)
    write_events(path, config)
    return path


def test_json_report_has_exactly_the_contract_keys_and_equals_the_pure_fold(events_file: Path) -> None:
    done = ccmeter("report", "--events", str(events_file), "--account", "acct-2", "--from", START, "--to", END,
                   "--format", "json", "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert list(report) == [*SUMMARY_KEYS, "days"]
    assert [day["date"] for day in report["days"]] == ["2026-11-02", "2026-11-03", "2026-11-04"]
    assert all(list(day) == list(DAY_KEYS) for day in report["days"])
    assert report["peak_usage"] > 0 and report["peak_at"].endswith("Z")

    # The same report from the other implementation: the pure fold plus the pure billing math.
    events = [event for _, event in read_events(events_file) if not isinstance(event, Rejection)]
    output, _, _ = fold_history(events)
    account = "acct-2"
    changes = sorted((c for c in output.usage_changes if c.account_id == account), key=lambda c: c.at_ms)
    intervals = [i for i in output.intervals if i.account_id == account]
    plans = [plan for owner, plan in output.plans if owner == account]
    presences = [p for p in output.presences if p.account_id == account]
    # data_through of a file: the account's horizon after every valid event (W_a, W_p: largest occurred_at)
    w_p = max(to_ms(e.occurred_at) for e in events)
    w_a = max(to_ms(e.occurred_at) for e in events if e.account_id == account)
    data_through = Settings().horizon(w_a, w_p)
    expected = build_report(
        account, date(2026, 11, 2), date(2026, 11, 4), changes, intervals, plans,
        presences=presences, data_through_ms=data_through,
    )  # fmt: skip
    assert report == expected.to_json_dict()
    assert report["complete"] is True and all(day["complete"] for day in report["days"])  # data through Nov 5
    assert [u["user_id"] for u in report["peak_users"]] == sorted(u["user_id"] for u in report["peak_users"])
    assert len(report["peak_users"]) == report["peak_usage"]


def test_csv_report_has_the_days_then_the_summary(events_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "acct-0.csv"
    done = ccmeter("report", "--events", str(events_file), "--account", "acct-0", "--from", START, "--to", PAST,
                   "--format", "csv", "--out", str(out), "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    days_text, summary_text = out.read_text().split("\n\n")  # two sections: the days, then the summary
    rows = list(csv.DictReader(io.StringIO(days_text)))
    assert [row["date"] for row in rows] == ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05", PAST]
    assert list(rows[0]) == ["account_id", *EXPORT_DAY_KEYS]
    assert {row["account_id"] for row in rows} == {"acct-0"}
    assert [row["complete"] for row in rows] == ["true", "true", "true", "false", "false"]
    assert rows[3]["peak_usage"] != "" and rows[4]["peak_usage"] == rows[4]["license_hours"] == ""  # null: empty
    (summary,) = csv.DictReader(io.StringIO(summary_text))
    assert list(summary) == list(BILLING_RUN_KEYS)
    assert (summary["account_id"], summary["from"], summary["to"]) == ("acct-0", START, PAST)
    assert summary["complete"] == "false" and summary["data_through"].startswith("2026-11-05T")
    # one cell: user[devices...,portal,api] per user, joined by ';'
    users = summary["peak_users"].split(";")
    assert len(users) == int(summary["peak_usage"]) and all(u.endswith("]") and "[" in u for u in users)


def test_table_report_names_the_account_and_every_day(events_file: Path) -> None:
    done = ccmeter("report", "--events", str(events_file), "--account", "acct-1", "--from", START, "--to", END)
    assert done.returncode == 0, done.stderr
    assert "acct-1" in done.stdout and "billable_overage" in done.stdout
    assert all(day in done.stdout for day in ("2026-11-02", "2026-11-03", "2026-11-04"))
    assert done.stdout.splitlines()[1] == ""  # complete: no partial line
    assert "peak_users" in done.stdout and "data_through" in done.stdout
    done = ccmeter("report", "--events", str(events_file), "--account", "acct-1", "--from", START, "--to", PAST)
    assert done.returncode == 0, done.stderr
    first, partial = done.stdout.splitlines()[:2]
    assert first.startswith(f"Licenses usage report: acct-1, {START} to {PAST} (")
    assert partial.startswith("partial: data through 2026-11-05T")
    assert done.stdout.rstrip().splitlines()[-1].split()[1:3] == ["-", "-"]  # the last day: null peak, peak_at


def test_timeline_lists_the_usage_changes(events_file: Path) -> None:
    done = ccmeter("timeline", "--events", str(events_file), "--account", "acct-0", "--format", "json", "--quiet")
    assert done.returncode == 0, done.stderr
    changes = json.loads(done.stdout)["changes"]
    assert len(changes) > 10
    assert [c["at"] for c in changes] == sorted(c["at"] for c in changes)
    assert all(a["usage"] != b["usage"] for a, b in zip(changes, changes[1:], strict=False))
    assert changes[-1]["usage"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events", "/nonexistent/events.jsonl", "--account", "a", "--from", START, "--to", END], "no such file"),
        (["--events", "{events}", "--account", "nobody", "--from", START, "--to", END], "account 'nobody' not found"),
        (["--events", "{events}", "--account", "acct-0", "--from", "2026-13-01", "--to", END], "--from must be a date"),
        (["--events", "{events}", "--account", "acct-0", "--from", END, "--to", START], "is before --from"),
        (["--events", "{events}", "--account", "acct-0", "--from", START, "--to", "9999-12-31"], "--to must be betw"),
        (["--events", "{events}", "--account", "acct-0", "--from", "0001-01-01", "--to", END], "--from must be betw"),
        (["--events", "{events}.csv", "--account", "acct-0", "--from", START, "--to", END], ".jsonl or .parquet"),
    ],
)
def test_errors_are_one_clear_line_and_a_non_zero_exit(events_file: Path, args: list[str], message: str) -> None:
    done = ccmeter("report", *(arg.format(events=events_file) for arg in args), "--quiet")
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_billing_run_from_an_archive(events_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "run.csv"
    done = ccmeter("report", "--events", str(events_file), "--all", "--period", "current", "--format", "csv",
                   "--out", str(out), "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [row["account_id"] for row in rows] == ["acct-0", "acct-1", "acct-2"] and list(rows[0]) == [
        *BILLING_RUN_KEYS
    ]
    done = ccmeter("report", "--events", str(events_file), "--all", "--period", "current", "--format", "json",
                   "--quiet")  # fmt: skip
    for row, line in zip(rows, json.loads(done.stdout), strict=True):
        one = ccmeter("report", "--events", str(events_file), "--account", row["account_id"], "--from", row["from"],
                      "--to", row["to"], "--format", "json", "--quiet")  # fmt: skip
        report = json.loads(one.stdout)
        assert {key: line[key] for key in SUMMARY_KEYS} == {key: report[key] for key in SUMMARY_KEYS}
        assert float(row["license_hours"]) == round(line["license_hours"], 6)
        assert row["peak_at_local"][:10] >= row["from"] and row["complete"] == "false"
    done = ccmeter("report", "--events", str(events_file), "--all", "--period", "2026-12", "--quiet")  # not started
    header, _, *lines = done.stdout.splitlines()
    assert done.returncode == 0 and header.split()[:3] == ["line_id", "account_id", "from"] and len(lines) == 3


def test_timeline_range_and_chart_from_an_archive(events_file: Path, tmp_path: Path) -> None:
    done = ccmeter("timeline", "--events", str(events_file), "--account", "acct-0", "--from", "2026-11-03", "--to",
                   "2026-11-03", "--quiet")  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert done.returncode == 0 and rows and list(rows[0]) == ["at", "at_local", "usage", "licenses", "change_id"]
    assert all(row["at_local"].startswith("2026-11-03T") for row in rows)
    for name in ("usage.svg", "usage.png"):
        done = ccmeter("chart", "--events", str(events_file), "--account", "acct-0", "--period", "current", "--out",
                       str(tmp_path / name))  # fmt: skip
        assert done.returncode == 0 and "wrote" in done.stderr, done.stderr
    assert (tmp_path / "usage.svg").read_text().rstrip().endswith("</svg>")
    assert (tmp_path / "usage.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["report", "--all", "--period", "2026-09"], "no account has events in that period"),
        (["report", "--account", "acct-0", "--period", "2027-03"], "is empty for account 'acct-0'"),
        (["report", "--account", "acct-0", "--from", "2026-10-01", "--to", "2026-10-31"], "ends before the first"),
        (["report", "--all", "--account", "acct-0", "--period", "current"], "either --account or --all"),
        (["timeline", "--account", "nobody"], "account 'nobody' not found"),
        (["timeline", "--account", "acct-0", "--from", "2026-11-03"], "or both --from and --to"),
        (["chart", "--account", "acct-0", "--period", "current", "--out", "x.pdf"], ".png or .svg"),
        (["chart", "--account", "acct-0", "--period", "2020-01", "--out", "x.svg"], "ends before the first event"),
    ],
)
def test_archive_errors_are_one_line(events_file: Path, command: list[str], message: str) -> None:
    quiet = [] if command[0] == "chart" else ["--quiet"]
    done = ccmeter(command[0], "--events", str(events_file), *command[1:], *quiet)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and done.stdout == "" and len(lines) == 1 and message in lines[0], done.stderr
