"""Snapshots stop at each account's data_through (SPEC 4): the horizon records in the sink's tables, the
`account_horizons` rule (own horizon, raised by its partition's idle floor), billing tables and reports that count
nothing after it, `report --all`, and `ccmeter deadletters` with the `dead_letters_by_account` view."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pytest

from processor import deadletters
from processor.cli import main
from processor.cli.snapshots import LETTER_KEYS, escape_control
from processor.core.model import Plan as PlanValue
from processor.core.model import PresenceInterval, UsageChange, UserInterval
from processor.snapshots.sink import SinkWriter
from processor.snapshots.snapshot import build_snapshot
from processor.snapshots.tables import (
    HORIZONS_TABLE,
    PARTITION_HORIZONS_TABLE,
    PRESENCE_INTERVALS_TABLE,
    BadRecord,
    output_row,
)
from processor.topics import DEAD_LETTERS, EVENTS, INTERVALS, USAGE_CHANGES
from processor.worker import records as rec
from schemas.events import parse_timestamp, to_ms
from tests.processor.snapshots.streams import legacy_letter

H = 3_600_000


def ms(text: str) -> int:
    return to_ms(parse_timestamp(text))


class Log:
    """Records given to a SinkWriter as if consumed from Kafka (offsets counted per topic partition)."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.writer = SinkWriter(data, "ccmeter.")
        self.offsets: dict[tuple[str, int], int] = defaultdict(int)

    def add(
        self, topic: str, value: bytes | None, key: bytes | None, partition: int = 0, ts: int = 0, headers=()
    ) -> int:
        offset = self.offsets[(topic, partition)]
        self.offsets[(topic, partition)] += 1
        self.writer.add(topic, partition, offset, ts, key, value, headers)
        return offset

    def output(self, topic: str, record: dict[str, Any], key: str, partition: int = 0) -> None:
        self.add(topic, rec.dumps(record), key.encode(), partition, ms("2026-12-01T00:00:00Z"))

    def event(self, event: dict[str, Any], key: str, partition: int = 0) -> int:
        return self.add(EVENTS, json.dumps(event).encode(), key.encode(), partition, ms(event["occurred_at"]))

    def snapshot(self, out: Path) -> Path:
        self.writer.flush()
        build_snapshot(self.data, out)
        return out


def usage(log: Log, account: str, steps: list[tuple[str, int]], licenses: int) -> None:
    for at, level in steps:
        log.output(USAGE_CHANGES, rec.usage_change(UsageChange(account, ms(at), level, licenses)), account)


def counted(log: Log, account: str, user: str, kind: str, device: str | None, start: str, end: str | None) -> None:
    """A user counted by one presence during [start, end) (end None: still counted at the cut)."""
    end_ms = 2**62 if end is None else ms(end)
    log.output(INTERVALS, rec.user_interval(UserInterval(account, user, ms(start), end_ms)), account)
    presence = PresenceInterval(account, user, kind, device, ms(start), end_ms)  # type: ignore[arg-type]
    log.output(INTERVALS, rec.presence_interval(presence), account)


def horizon(log: Log, account: str, data_through: str, partition: int = 0) -> None:
    through = ms(data_through)
    log.output(INTERVALS, rec.horizon(account, partition, through, through + 600_000), account)


def idle_floor(log: Log, partition: int, floor: str) -> None:
    log.output(INTERVALS, rec.partition_horizon(partition, ms(floor)), f"partition-{partition}")


PLAN = PlanValue(at_ms=ms("2026-10-01T00:00:00Z"), licenses=1, billing_anchor_day=1, timezone="UTC")


@pytest.fixture(scope="module")
def mid_period(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Account `a` (1 license, UTC, anchor day 1): u1 counted from October 20 and still counted at the cut, u2 too on
    November 10 00:00-02:00; data_through November 15, 12:00 UTC."""
    base = tmp_path_factory.mktemp("mid")
    log = Log(base / "data")
    log.event({"event_id": "e1", "type": "api.request", "account_id": "a", "user_id": "u1",
               "occurred_at": "2026-11-15T12:10:00Z"}, "a")  # fmt: skip
    log.output(INTERVALS, rec.plan("a", PLAN), "a")
    usage(log, "a", [("2026-10-20T00:00:00Z", 1), ("2026-11-10T00:00:00Z", 2), ("2026-11-10T02:00:00Z", 1)], 1)
    counted(log, "a", "u1", "desktop", "dev-1", "2026-10-20T00:00:00Z", None)
    counted(log, "a", "u2", "portal", None, "2026-11-10T00:00:00Z", "2026-11-10T02:00:00Z")
    horizon(log, "a", "2026-11-01T00:00:00Z")
    horizon(log, "a", "2026-11-15T12:00:00Z")
    return log.snapshot(base / "usage.duckdb")


def query(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql).fetchall()


def test_a_running_period_counts_up_to_data_through_only(mid_period: Path) -> None:
    rows = query(
        mid_period,
        "SELECT period_from::VARCHAR, period_to::VARCHAR, is_current, complete, strftime(data_through, '%d %H:%M'), "
        "license_hours, peak_usage, billable_overage, seconds_over_licenses, distinct_users "
        "FROM billing_periods ORDER BY period_from",
    )
    # October: u1 from the 20th, 12 days. November: u1 for 14.5 days and u2 for 2 hours, nothing after the 15th
    # 12:00 (u1 is still counted, but what comes after data_through is not known). December is not listed.
    assert rows == [
        ("2026-10-01", "2026-10-31", False, True, "15 12:00", 288.0, 1, 0, 0.0, 1),
        ("2026-11-01", "2026-11-30", True, False, "15 12:00", 350.0, 2, 1, 7200.0, 2),
    ]
    peak_users = query(mid_period, "SELECT peak_users FROM billing_periods WHERE is_current")[0][0]
    assert peak_users == [
        {"user_id": "u1", "devices": ["dev-1"], "portal": False, "api": False},
        {"user_id": "u2", "devices": [], "portal": True, "api": False},
    ]
    top = query(mid_period, "SELECT account_id, billable_overage, complete, epoch_ms(data_through) "
                            "FROM top_accounts_by_overage")  # fmt: skip
    assert top == [("a", 1, False, ms("2026-11-15T12:00:00Z"))]


def test_days_after_data_through_are_null(mid_period: Path) -> None:
    days = {
        str(day): rest
        for day, *rest in query(
            mid_period,
            "SELECT date, complete, license_hours, peak_usage, peak_at IS NULL, max_excess, distinct_users, licenses "
            "FROM billing_days WHERE period_from = DATE '2026-11-01'",
        )
    }
    assert len(days) == 30
    assert days["2026-11-14"] == [True, 24.0, 1, False, 0, 1, 1]
    assert days["2026-11-15"] == [False, 12.0, 1, False, 0, 1, 1]  # counted up to 12:00, the day is not over
    for late in ("2026-11-16", "2026-11-30"):
        assert days[late] == [False, None, None, True, None, None, 1]
    assert query(mid_period, "SELECT count(*) FROM billing_days WHERE data_through IS NULL") == [(0,)]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_reports_say_data_through_in_every_format(capsys: pytest.CaptureFixture[str], mid_period: Path) -> None:
    snap = str(mid_period)
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--account", "a", "--period", "current",
                           "--format", "json")  # fmt: skip
    report = json.loads(out)
    assert code == 0 and (report["from"], report["to"]) == ("2026-11-01", "2026-11-30")
    assert report["data_through"] == "2026-11-15T12:00:00.000Z" and report["complete"] is False
    assert report["license_hours"] == 350.0
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--all", "--period", "current", "--format", "json")
    (line,) = json.loads(out)
    assert code == 0 and line | {
        "account_id": "a", "from": "2026-11-01", "to": "2026-11-30", "peak_usage": 2, "licenses": 1,
        "billable_overage": 1, "over_allowance": 1, "license_hours": 350.0,
        "data_through": "2026-11-15T12:00:00.000Z", "complete": False, "restatement": "live",
    } == line  # fmt: skip
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--all", "--period", "current", "--format", "csv")
    row = next(csv.DictReader(io.StringIO(out)))
    assert code == 0 and (row["data_through"], row["complete"]) == ("2026-11-15T12:00:00.000Z", "false")
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--all", "--period", "current")
    header, _, line = out.splitlines()
    assert code == 0 and header.split()[-4:] == ["data_through", "data_through_local", "complete", "restatement"]
    assert line.split()[1:4] == ["a", "2026-11-01", "2026-11-30"] and line.split()[-4:] == [
        "2026-11-15T12:00:00.000Z", "2026-11-15T12:00:00.000+00:00", "false", "live"
    ]  # fmt: skip
    code, out, _ = run_cli(capsys, "report", "--snapshot", snap, "--account", "a", "--period", "current")
    assert code == 0 and "data_through" in out and "2026-11-15T12:00:00.000Z" in out


def test_a_period_that_has_not_started_bills_nothing(capsys: pytest.CaptureFixture[str], mid_period: Path) -> None:
    code, out, _ = run_cli(capsys, "report", "--snapshot", str(mid_period), "--all", "--period", "2026-12",
                           "--format", "json")  # fmt: skip
    (row,) = json.loads(out)
    assert code == 0 and (row["from"], row["license_hours"], row["peak_usage"], row["complete"]) == (
        "2026-12-01", 0.0, 0, False
    )  # fmt: skip


def test_the_partition_idle_floor_raises_an_idle_accounts_data_through(tmp_path: Path) -> None:
    log = Log(tmp_path / "data")
    for account in ("idle", "busy", "moved"):
        log.event({"event_id": "e", "type": "api.request", "account_id": account, "user_id": "u",
                   "occurred_at": "2026-11-02T08:00:00Z"}, account)  # fmt: skip
    # `idle` stopped at 09:00 (own horizon 08:50) while its partition 0 went on to 18:00: floor 16:00.
    usage(log, "idle", [("2026-11-02T08:00:00Z", 1)], 0)
    counted(log, "idle", "u", "api", None, "2026-11-02T08:00:00Z", None)
    horizon(log, "idle", "2026-11-02T08:50:00Z")
    horizon(log, "busy", "2026-11-02T17:50:00Z")
    idle_floor(log, 0, "2026-11-02T12:00:00Z")
    idle_floor(log, 0, "2026-11-02T16:00:00Z")
    idle_floor(log, 1, "2026-11-02T20:00:00Z")  # another partition's floor does not apply
    # `moved`: its latest horizon record is on events partition 1, whose floor then counts.
    horizon(log, "moved", "2026-11-02T07:00:00Z", partition=0)
    horizon(log, "moved", "2026-11-02T06:00:00Z", partition=1)
    snap = log.snapshot(tmp_path / "usage.duckdb")
    horizons = query(snap, "SELECT account_id, strftime(data_through, '%H:%M'), events_partition, "
                           "strftime(own_horizon, '%H:%M') FROM account_horizons")  # fmt: skip
    assert horizons == [
        ("busy", "17:50", 0, "17:50"),
        ("idle", "16:00", 0, "08:50"),
        ("moved", "20:00", 1, "07:00"),
    ]
    idle = query(snap, "SELECT license_hours, complete FROM billing_days WHERE account_id = 'idle' "
                       "AND date = DATE '2026-11-02'")  # fmt: skip
    assert idle == [(8.0, False)]  # 08:00 to the floor at 16:00, not to 08:50 nor to the day's end


def test_an_account_without_horizon_has_no_billing_rows(tmp_path: Path) -> None:
    log = Log(tmp_path / "data")
    log.event({"event_id": "e", "type": "api.request", "account_id": "a", "user_id": "u",
               "occurred_at": "2026-11-02T08:00:00Z"}, "a")  # fmt: skip
    usage(log, "a", [("2026-11-02T08:00:00Z", 1)], 0)
    snap = log.snapshot(tmp_path / "usage.duckdb")
    assert query(snap, "SELECT count(*) FROM billing_periods") == [(0,)]
    assert query(snap, "SELECT count(*) FROM account_horizons") == [(0,)]


def test_intervals_records_of_the_new_kinds_parse_or_are_bad() -> None:
    presence = rec.presence_interval(PresenceInterval("a", "u", "desktop", "d", 0, 2**62))
    table, row = output_row(INTERVALS, 0, 5, 9, rec.dumps(presence))
    assert table is PRESENCE_INTERVALS_TABLE and row["end_at"] is None and row["device_id"] == "d"
    assert row["interval_id"] == presence["interval_id"] and row["kafka_offset"] == 5
    table, row = output_row(INTERVALS, 0, 6, 9, rec.dumps(rec.horizon("a", 2, 1000, None)))
    assert table is HORIZONS_TABLE
    assert (row["events_partition"], row["data_through"], row["watermark"]) == (2, 1000, None)
    table, row = output_row(INTERVALS, 0, 7, 9, rec.dumps(rec.partition_horizon(3, -5)))
    assert table is PARTITION_HORIZONS_TABLE and (row["events_partition"], row["idle_floor"]) == (3, -5)
    bad = [
        {**presence, "kind": "phone"},
        {**presence, "device_id": 7},
        {**presence, "start": "yesterday"},
        {"record": "horizon", "account_id": "a", "partition": "0", "data_through": "2026-11-01T00:00:00Z"},
        {"record": "horizon", "account_id": "a", "partition": True, "data_through": "2026-11-01T00:00:00Z"},
        {"record": "partition_horizon", "partition": 0},
        {"record": "surprise"},
    ]
    for record in bad:
        with pytest.raises(BadRecord):
            output_row(INTERVALS, 0, 8, 9, json.dumps(record).encode())


@pytest.fixture(scope="module")
def letters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dead letters of partition 0: offset 1 is not JSON (control characters), 2 is keyed `b` but decodes to account
    `a` (too late), 3 is not UTF-8, 4 belongs to `c`."""
    base = tmp_path_factory.mktemp("letters")
    log = Log(base / "data")
    good = {"event_id": "e1", "type": "api.request", "account_id": "a", "user_id": "u",
            "occurred_at": "2026-11-02T08:00:00Z"}  # fmt: skip
    log.event(good, "a")
    raws = [
        (b"a", b"\x01oops\n{\t\x7f", "invalid_json"),
        (b"b", json.dumps({**good, "event_id": "e2"}).encode(), "too_late"),
        (b"a", b"\xff\xfe bad bytes", "invalid_json"),
        (b"c", b"[]", "invalid_json"),
    ]
    for index, (key, raw, reason) in enumerate(raws):
        offset = log.add(EVENTS, raw, key, 0, ms("2026-11-02T09:00:00Z") + index)
        sent = ms("2026-12-01T00:00:00Z")
        if index % 2:  # format 1 (older workers) and format 2 letters are read alike
            log.add(DEAD_LETTERS, legacy_letter(reason, f"detail {offset}", raw, "ccmeter.events", 0, offset), None)
        else:
            letter = rec.dead_letter(reason, f"detail {offset}", raw, "ccmeter.events", 0, offset, key=key)
            letter_key, value, headers = deadletters.encode(letter)
            log.add(DEAD_LETTERS, value, letter_key, 0, sent, headers)
    big = b"[" * 100  # too_large: the letter has no value, only the size and digest of the original
    offset = log.add(EVENTS, big, b"a", 0, ms("2026-11-02T09:30:00Z"))
    letter = rec.too_large("JSON nested deeper than 64 levels", big, "ccmeter.events", 0, offset)
    letter_key, value, headers = deadletters.encode(letter)
    log.add(DEAD_LETTERS, value, letter_key, 0, ms("2026-12-01T00:00:00Z"), headers)
    return log.snapshot(base / "usage.duckdb")


def test_deadletters_of_one_account(capsys: pytest.CaptureFixture[str], letters: Path) -> None:
    code, out, _ = run_cli(capsys, "deadletters", "--snapshot", str(letters), "--account", "a", "--format", "json")
    rows = json.loads(out)
    assert code == 0 and [tuple(row) for row in rows] == [LETTER_KEYS] * 4
    assert [(r["reason"], r["source_offset"], r["detail"]) for r in rows] == [
        ("invalid_json", 1, "detail 1"), ("too_late", 2, "detail 2"), ("invalid_json", 3, "detail 3"),
        ("too_large", 5, "JSON nested deeper than 64 levels"),
    ]  # fmt: skip
    assert [r["original_size"] for r in rows] == [9, len(rows[1]["original"]), 12, 100]
    assert rows[3]["original"] == "" and rows[3]["original_sha256"] == hashlib.sha256(b"[" * 100).hexdigest()
    assert rows[0]["original_sha256"] == hashlib.sha256(b"\x01oops\n{\t\x7f").hexdigest()
    assert rows[0]["original"] == "\\x01oops\\n{\\t\\x7f" and rows[2]["original"] == "\\xff\\xfe bad bytes"
    assert rows[0]["kafka_ts"] == "2026-11-02T09:00:00.000Z" and rows[0]["source_partition"] == 0
    code, out, _ = run_cli(capsys, "deadletters", "--snapshot", str(letters), "--account", "b", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and tuple(table[0]) == LETTER_KEYS and [r["source_offset"] for r in table] == ["2"]
    code, out, _ = run_cli(capsys, "deadletters", "--snapshot", str(letters), "--account", "a", "--limit", "1")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == list(LETTER_KEYS) and len(lines) == 3
    assert "\\x01oops\\n{\\t\\x7f" in lines[2] and "\n" not in lines[2]
    by_view = query(letters, "SELECT account_id, source_offset FROM dead_letters_by_account ORDER BY 1, 2")
    assert by_view == [("a", 1), ("a", 2), ("a", 3), ("a", 5), ("b", 2), ("c", 4)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "nobody"], "account 'nobody' not found in snapshot"),
        (["--account", "a", "--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_deadletters_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], letters: Path, args: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, "deadletters", "--snapshot", str(letters), *args)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_missing_or_old_snapshots_are_one_line_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "deadletters", "--snapshot", str(tmp_path / "nope.duckdb"), "--account", "a")
    assert code == 2 and "no such snapshot file" in err and len(err.strip().splitlines()) == 1
    old = tmp_path / "old.duckdb"
    with duckdb.connect(str(old)) as con:
        con.execute("CREATE TABLE snapshot_info (watermark TIMESTAMPTZ)")
    for command in (["deadletters", "--account", "a"], ["report", "--account", "a", "--period", "current"]):
        code, _, err = run_cli(capsys, command[0], "--snapshot", str(old), *command[1:])
        assert code == 2 and "older ccmeter" in err and len(err.strip().splitlines()) == 1


def test_escape_control_keeps_text_on_one_line() -> None:
    assert escape_control("a\r\nb\x00\u2028é\x9b") == "a\\r\\nb\\x00\\u2028é\\x9b"


def test_a_closed_presence_supersedes_its_open_copy(tmp_path: Path) -> None:
    log = Log(tmp_path / "data")
    opened = PresenceInterval("a", "u", "desktop", "d", ms("2026-11-02T08:00:00Z"), 2**62)
    closed = PresenceInterval("a", "u", "desktop", "d", ms("2026-11-02T08:00:00Z"), ms("2026-11-02T09:00:00Z"))
    still_open = PresenceInterval("a", "u", "portal", None, ms("2026-11-02T08:30:00Z"), 2**62)
    for presence in (opened, closed, opened, still_open):  # the open copy re-delivered after the closed one
        log.output(INTERVALS, rec.presence_interval(presence), "a")
    snap = log.snapshot(tmp_path / "usage.duckdb")
    rows = query(snap, "SELECT kind, device_id, strftime(start_at, '%H:%M'), strftime(end_at, '%H:%M') "
                       "FROM presence_intervals ORDER BY start_at")  # fmt: skip
    assert rows == [("desktop", "d", "08:00", "09:00"), ("portal", None, "08:30", None)]
