""" "Who was counted": the table macro `users_at(account, instant)` and the view `user_license_hours` of a snapshot
agree with the report (core `build_report`): the users at each period's peak are its `peak_users`, and the users'
license hours add up to the period's `license_hours`."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from processor.snapshots.history import load_histories


@pytest.fixture
def con(snapshot_path: Path) -> duckdb.DuckDBPyConnection:
    with duckdb.connect(str(snapshot_path), read_only=True) as connection:
        connection.execute("SET TimeZone = 'America/Los_Angeles'")  # the answers do not depend on it
        yield connection


def test_users_at_the_peak_are_the_reports_peak_users(con: duckdb.DuckDBPyConnection) -> None:
    periods = con.execute(
        "SELECT account_id, period_from, peak_at, to_json(peak_users) FROM billing_periods WHERE peak_at IS NOT NULL "
        "ORDER BY ALL"
    ).fetchall()
    assert len(periods) >= 4
    for account, period_from, peak_at, expected in periods:
        rows = con.execute("SELECT user_id, devices, portal, api FROM users_at(?, ?)", [account, peak_at]).fetchall()
        got = [{"user_id": u, "devices": d, "portal": p, "api": a} for u, d, p, a in rows]
        assert got == json.loads(expected), f"{account} {period_from} at {peak_at}"


def test_users_at_any_instant_count_the_usage(con: duckdb.DuckDBPyConnection) -> None:
    """At the start of every usage step before data_through, the users counted are `usage` many."""
    steps = con.execute(
        "SELECT s.account_id, s.start_at, s.usage FROM usage_steps s JOIN account_horizons h USING (account_id) "
        "WHERE s.start_at < h.data_through QUALIFY row_number() OVER (ORDER BY s.account_id, s.start_at) % 5 = 0 "
        "ORDER BY ALL"
    ).fetchall()
    assert len(steps) >= 30 and any(usage > 1 for *_, usage in steps)
    for account, at, usage in steps:
        users = con.execute("SELECT count(*) FROM users_at(?, ?)", [account, at]).fetchall()[0][0]
        assert users == usage, f"{account} at {at}"


def test_users_at_knows_nothing_at_or_after_data_through(con: duckdb.DuckDBPyConnection) -> None:
    account, through = con.execute("SELECT account_id, data_through FROM account_horizons LIMIT 1").fetchall()[0]
    assert con.execute("SELECT count(*) FROM users_at(?, ?)", [account, through]).fetchall()[0][0] == 0
    assert con.execute("SELECT count(*) FROM users_at('nobody', TIMESTAMPTZ '2026-11-01 12:00:00+00')").fetchall() == [
        (0,)
    ]


def test_user_license_hours_add_up_to_the_period(con: duckdb.DuckDBPyConnection, snapshot_path: Path) -> None:
    rows = con.execute(
        "SELECT p.account_id, p.period_from, p.license_hours, sum(u.license_hours), count(u.user_id), "
        "sum(u.share), min(u.rank) "
        "FROM billing_periods p JOIN user_license_hours u USING (account_id, period_from) GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows and all(row[3] > 0 for row in rows)
    for account, period_from, period_hours, user_hours, users, share, best in rows:
        assert user_hours == pytest.approx(period_hours, abs=1e-6), f"{account} {period_from}"
        assert share == pytest.approx(1.0) and best == 1 and users >= 1
    with duckdb.connect(str(snapshot_path), read_only=True) as other:
        histories = load_histories(other)
    account, period_from = rows[0][0], rows[0][1]
    ranked = con.execute(
        "SELECT user_id, license_hours FROM user_license_hours WHERE account_id = ? AND period_from = ? "
        "ORDER BY rank, user_id",
        [account, period_from],
    ).fetchall()
    history = histories[account]
    period_to = con.execute(
        "SELECT period_to FROM billing_periods WHERE account_id = ? AND period_from = ?", [account, period_from]
    ).fetchall()[0][0]
    start_ms, end_ms = history.bounds_ms(period_from, period_to)
    end_ms = min(end_ms, history.data_through_ms or end_ms)
    by_user: dict[str, int] = {}
    for interval in history.intervals:  # the pure core's intervals, clipped as the report clips them
        lo, hi = max(interval.start_ms, start_ms), min(interval.end_ms, end_ms)
        if lo < hi:
            by_user[interval.user_id] = by_user.get(interval.user_id, 0) + hi - lo
    assert {user: pytest.approx(ms / 3_600_000, abs=1e-6) for user, ms in by_user.items()} == dict(ranked)
    assert [hours for _, hours in ranked] == sorted((hours for _, hours in ranked), reverse=True)
