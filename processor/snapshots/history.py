"""Account histories read back from a snapshot, billing-period resolution, and reports over them.

The report of a snapshot is `processor.core.billing.build_report` over the snapshot's `usage_changes`,
`user_intervals`, `presence_intervals` and `plans` (deduplicated by id), up to the account's `data_through` (view
`account_horizons`), so it is the same function the streaming outputs feed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import duckdb

from processor.core.billing import build_report, known_plans
from processor.core.model import DEFAULT_PLAN, NEVER, Plan, PresenceInterval, UsageChange, UserInterval
from processor.core.periods import (
    billing_period,
    current_and_previous,
    local_midnight_ms,
    period_containing,
    report_timezone,
)
from processor.snapshots.views import ACCOUNT_HORIZONS
from schemas.outputs import Report

PERIOD_RE = re.compile(r"\d{4}-\d{2}")
PERIOD_HELP = "current, previous or YYYY-MM (the billing period that starts in that month)"


@dataclass
class AccountHistory:
    """What a report of one account needs, in event-time (application) order."""

    account_id: str
    changes: list[UsageChange] = field(default_factory=list)
    intervals: list[UserInterval] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)
    presences: list[PresenceInterval] = field(default_factory=list)
    data_through_ms: int | None = None  # the account's horizon at the cut; None: nothing known

    @property
    def latest_plan(self) -> Plan:
        """The account's latest plan (the defaults before its first)."""
        return self.plans[-1] if self.plans else DEFAULT_PLAN

    def report(self, start: date, end: date) -> Report:
        """The licenses usage report for the local dates `start`..`end` (inclusive)."""
        return build_report(
            self.account_id,
            start,
            end,
            self.changes,
            self.intervals,
            self.plans,
            presences=self.presences,
            data_through_ms=self.data_through_ms,
        )

    def bounds_ms(self, start: date, end: date) -> tuple[int, int]:
        """`[midnight(start), midnight(end + 1))` in the report's timezone (as `build_report` uses)."""
        zone = report_timezone(known_plans(self.plans, self.data_through_ms), end)
        return local_midnight_ms(start, zone), local_midnight_ms(end + timedelta(days=1), zone)


def _in(column: str, accounts: Sequence[str] | None) -> tuple[str, list[object]]:
    if accounts is None:
        return "", []
    return f"WHERE {column} IN (SELECT unnest(?::VARCHAR[]))", [list(accounts)]


def load_histories(con: duckdb.DuckDBPyConnection, accounts: Sequence[str] | None = None) -> dict[str, AccountHistory]:
    """Histories of `accounts` (all when None) from a snapshot's tables."""
    histories: dict[str, AccountHistory] = {}

    def get(account_id: str) -> AccountHistory:
        history = histories.get(account_id)
        if history is None:
            history = histories[account_id] = AccountHistory(account_id)
        return history

    where, params = _in("account_id", accounts)
    rows = con.execute(
        f"SELECT account_id, epoch_ms(changed_at), usage, licenses FROM usage_changes {where} "
        "ORDER BY account_id, changed_at, kafka_partition, kafka_offset",
        params,
    ).fetchall()
    for account_id, at_ms, usage, licenses in rows:
        get(account_id).changes.append(UsageChange(account_id, at_ms, usage, licenses))
    rows = con.execute(
        f"SELECT account_id, user_id, epoch_ms(start_at), epoch_ms(end_at) FROM user_intervals {where} "
        "ORDER BY account_id, start_at, user_id",
        params,
    ).fetchall()
    for account_id, user_id, start_ms, end_ms in rows:  # an interval still open has no end yet
        get(account_id).intervals.append(
            UserInterval(account_id, user_id, start_ms, NEVER if end_ms is None else end_ms)
        )
    rows = con.execute(
        "SELECT account_id, epoch_ms(effective_at), licenses, overage_allowance, billing_anchor_day, timezone, "
        f"grace_minutes, grace_mode FROM plans {where} "
        "ORDER BY account_id, effective_at, kafka_partition, kafka_offset",
        params,
    ).fetchall()
    for account_id, at_ms, *values in rows:
        get(account_id).plans.append(Plan(at_ms, *values))
    _load_presences(con, where, params, get)
    rows = con.execute(
        f"SELECT account_id, epoch_ms(data_through) FROM ({ACCOUNT_HORIZONS}) {where}", params
    ).fetchall()
    for account_id, data_through_ms in rows:
        get(account_id).data_through_ms = data_through_ms
    return histories


def _load_presences(
    con: duckdb.DuckDBPyConnection, where: str, params: list[object], get: Callable[[str], AccountHistory]
) -> None:
    rows = con.execute(
        "SELECT account_id, user_id, kind, device_id, epoch_ms(start_at), epoch_ms(end_at) "
        f"FROM presence_intervals {where} ORDER BY account_id, start_at, user_id, kind, device_id",
        params,
    ).fetchall()
    for account_id, user_id, kind, device_id, start_ms, end_ms in rows:  # an open presence has no end yet
        end = NEVER if end_ms is None else end_ms
        get(account_id).presences.append(PresenceInterval(account_id, user_id, kind, device_id, start_ms, end))


def snapshot_accounts(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every account the snapshot knows: with valid events, usage changes, intervals, plans or horizons."""
    rows = con.execute(
        "SELECT account_id FROM events WHERE rejection IS NULL UNION SELECT account_id FROM usage_changes "
        "UNION SELECT account_id FROM user_intervals UNION SELECT account_id FROM plans "
        "UNION SELECT account_id FROM presence_intervals UNION SELECT account_id FROM horizons ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows if row[0] is not None]


def resolve_period(spec: str, plan: Plan, data_through_ms: int | None) -> tuple[date, date]:
    """The billing period (from, to inclusive) named by `spec` for an account whose latest plan is `plan`.

    `current` is the period containing the account's `data_through_ms` (event time, not the wall clock) and
    `previous` the one before. Raises ValueError with a user-facing message for a bad spec, or for `current` /
    `previous` when nothing is known of the account (no data_through).
    """
    text = spec.strip().lower()
    if text in ("current", "previous"):
        if data_through_ms is None:
            raise ValueError("the snapshot has no data_through for this account (nothing known), so no current period")
        current, previous = current_and_previous(plan.billing_anchor_day, plan.timezone, data_through_ms)
        return current if text == "current" else previous
    if PERIOD_RE.fullmatch(text):
        try:
            return billing_period(plan.billing_anchor_day, text)
        except ValueError:
            pass
    raise ValueError(f"--period must be {PERIOD_HELP}, not {spec!r}")


def periods_between(plan: Plan, first: date, last: date) -> Iterator[tuple[date, date]]:
    """Consecutive billing periods of `plan`'s anchor from the one containing `first` to the one containing `last`."""
    period = period_containing(plan.billing_anchor_day, first)
    while period[0] <= last:
        yield period
        period = period_containing(plan.billing_anchor_day, period[1] + timedelta(days=1))


def summary_rows(reports: Iterable[Report], keys: Sequence[str]) -> list[dict[str, object]]:
    """Selected summary fields of each report (JSON spelling: `from`)."""
    return [{key: report.to_json_dict()[key] for key in keys} for report in reports]
