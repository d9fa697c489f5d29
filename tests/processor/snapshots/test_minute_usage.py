"""`minute_usage`: every minute with usage, although 1m peak windows exist only for minutes that changed (SPEC 5)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from pathlib import Path

import duckdb

MINUTE = 60_000
Minute = tuple[int, int, int, float, float, int]  # start, max_usage, max_at, seconds over, license seconds, licenses


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def dense_minutes(changes: list[tuple[int, int]], plans: list[tuple[int, int]], through: int) -> list[Minute]:
    """Every closed minute with usage, computed the long way: the step function (usage cut at plan changes) split
    at every minute boundary."""
    cuts = sorted({t for t, _ in changes} | {t for t, _ in plans if t < through} | {through})
    acc: dict[int, list[int]] = {}

    def level(points: list[tuple[int, int]], t: int) -> int:
        return ([value for at, value in points if at <= t] or [0])[-1]

    for a, b in zip(cuts, cuts[1:], strict=False):
        usage, licenses = level(changes, a), level(plans, a)
        if usage == 0:
            continue
        x = a
        while x < b:
            start = x - x % MINUTE
            y = min(b, start + MINUTE)
            row = acc.setdefault(start, [0, start, 0, 0])
            if usage > row[0]:
                row[0], row[1] = usage, x
            row[2] += (y - x) if usage > licenses else 0
            row[3] += usage * (y - x)
            x = y
    return [
        (start, m, at, over / 1000, lic / 1000, level(plans, start))
        for start, (m, at, over, lic) in sorted(acc.items())
        if start + MINUTE <= through
    ]


def test_minute_usage_answers_every_minute_from_sparse_windows(snapshot_path: Path) -> None:
    con = duckdb.connect(str(snapshot_path), read_only=True)
    changes: dict[str, list[tuple[int, int]]] = defaultdict(list)
    change_rows = con.execute("SELECT account_id, changed_at, usage FROM usage_changes ORDER BY ALL").fetchall()
    for account, at, usage in change_rows:
        changes[account].append((ms(at), usage))
    plans: dict[str, list[tuple[int, int]]] = defaultdict(list)
    plan_rows = con.execute("SELECT account_id, effective_at, licenses FROM plans ORDER BY ALL").fetchall()
    for account, at, licenses in plan_rows:
        plans[account].append((ms(at), licenses))
    through = {a: ms(t) for a, t in con.sql("SELECT account_id, data_through FROM account_horizons").fetchall()}
    minutes = 0
    for account in sorted(changes):
        got = con.sql(
            "SELECT epoch_ms(start_at), max_usage, epoch_ms(max_at), seconds_over_licenses, license_seconds, licenses "
            "FROM minute_usage WHERE account_id = ? ORDER BY start_at",
            params=[account],
        ).fetchall()
        want = dense_minutes(changes[account], plans[account], through[account])
        assert [tuple(row) for row in got] == want, account
        minutes += len(want)
    windows = con.execute(
        "SELECT count(*) FROM peak_windows JOIN account_horizons USING (account_id) "
        "WHERE kind = '1m' AND end_at <= data_through"
    ).fetchall()[0][0]
    changed = con.execute("SELECT count(*) FROM minute_usage WHERE changed").fetchall()[0][0]
    assert changed == windows  # the explicit rows are the 1m windows, each once
    assert 0 < windows < minutes / 2  # the windows are sparse: most minutes with usage are quiet
