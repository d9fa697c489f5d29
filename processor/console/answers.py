"""The console API's answers, as JSON-ready dicts computed from one account's `AccountHistory` (pure, no I/O).

"Now" is the account's `data_through` (SPEC 4): the last known instant is `data_through - 1 ms`, nothing after it is
counted. The billing numbers come from `processor.core.billing` (the same functions as `ccmeter report`).
"""

from __future__ import annotations

from bisect import bisect_left
from datetime import date, timedelta
from typing import Any

from processor.core.billing import known_end_ms, known_plans, peak_users, plan_at, usage_segments
from processor.core.model import DEFAULT_PLAN, Plan
from processor.core.periods import local_date, local_midnight_ms, report_timezone
from processor.reports.render import local_time
from processor.snapshots.history import AccountHistory, resolve_period
from schemas.events import format_ms
from schemas.outputs import Report

MS_PER_MINUTE = 60_000


class AnswerError(ValueError):
    """A request the answers cannot serve (bad parameter, nothing known): one line for the client (HTTP 400)."""


def _ts(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)


def plan_json(plan: Plan) -> dict[str, Any]:
    """A plan's settings (its `since` is null for the defaults in effect before the account's first plan)."""
    return {
        "since": None if plan.at_ms == DEFAULT_PLAN.at_ms else _ts(plan.at_ms),
        "licenses": plan.licenses,
        "overage_allowance": plan.overage_allowance,
        "billing_anchor_day": plan.billing_anchor_day,
        "timezone": plan.timezone,
        "grace_minutes": plan.grace_minutes,
        "grace_mode": plan.grace_mode,
    }


def current_plan(history: AccountHistory) -> Plan:
    """The plan in effect at the last known instant (only plans that took effect before data_through are known)."""
    plans = known_plans(history.plans, history.data_through_ms)
    if history.data_through_ms is None:
        return plan_at(plans, 0)
    return plan_at(plans, history.data_through_ms - 1)


def usage_at(history: AccountHistory, at_ms: int) -> int:
    """Usage at the instant `at_ms` (0 before the first change)."""
    segments = usage_segments(history.changes, (), at_ms, at_ms + 1)
    return segments[0].usage if segments else 0


def usage_now(history: AccountHistory) -> dict[str, Any]:
    """Usage, headroom and today's peak as of data_through (the live query's fields, plus `plan` and `today`)."""
    through = history.data_through_ms
    plan = current_plan(history)
    usage, peak, peak_at, today = 0, 0, None, None
    if through is not None:
        usage = usage_at(history, through - 1)
        day = local_date(through - 1, plan.timezone)
        report = history.report(day, day)
        peak, peak_at, today = report.peak_usage, report.peak_at, day.isoformat()
    return {
        "account_id": history.account_id,
        "usage": usage,
        "licenses": plan.licenses,
        "overage_allowance": plan.overage_allowance,
        "headroom": plan.licenses - usage,
        "today": today,
        "today_peak": peak,
        "today_peak_at": peak_at,
        "as_of": _ts(through),
        "data_through": _ts(through),
        "data_through_local": local_time(_ts(through), plan.timezone),
        "plan": plan_json(plan),
        "billable_rule": grace_rule(plan),
    }


def period_dates(history: AccountHistory, which: str) -> tuple[date, date] | None:
    """The local dates of the `current` or `previous` billing period (None when nothing is known of the account)."""
    if history.data_through_ms is None:
        return None
    return resolve_period(which, current_plan(history), history.data_through_ms)


def account_row(history: AccountHistory, report: Report | None) -> dict[str, Any]:
    """One line of the accounts overview: usage now, and from `report` (the current period's, None when nothing is
    known of the account) its peak and billable overage so far."""
    now = usage_now(history)
    row: dict[str, Any] = {
        key: now[key] for key in ("account_id", "usage", "licenses", "overage_allowance", "headroom", "data_through")
    }
    row["timezone"] = now["plan"]["timezone"]
    row.update(
        {
            "period_from": report.from_ if report else None,
            "period_to": report.to if report else None,
            "peak_usage": report.peak_usage if report else 0,
            "peak_at": report.peak_at if report else None,
            "billable_overage": report.billable_overage if report else 0,
            "over_allowance": report.over_allowance if report else 0,
            "complete": report.complete if report else False,
        }
    )
    return row


def changes_between(history: AccountHistory, start_ms: int, end_ms: int) -> dict[str, Any]:
    """The usage step function on `[start, min(end, data_through))`: the level at its start and every change in it."""
    if end_ms <= start_ms:
        raise AnswerError(f"'to' ({format_ms(end_ms)}) must be after 'from' ({format_ms(start_ms)})")
    known_end = known_end_ms(start_ms, end_ms, history.data_through_ms)
    plans = known_plans(history.plans, history.data_through_ms)
    changes = history.changes
    first = bisect_left(changes, start_ms, key=lambda change: change.at_ms)
    last = bisect_left(changes, known_end, key=lambda change: change.at_ms)
    rows = [
        {"at": format_ms(c.at_ms), "usage": c.usage, "licenses": c.licenses, "change_id": c.change_id}
        for c in changes[first:last]
    ]
    start_plan = plan_at(plans, start_ms)
    return {
        "account_id": history.account_id,
        "from": format_ms(start_ms),
        "to": format_ms(end_ms),
        "known_until": format_ms(known_end),
        "data_through": _ts(history.data_through_ms),
        "start_usage": usage_at(history, start_ms) if known_end > start_ms else 0,
        "start_licenses": start_plan.licenses,
        "changes": rows,
    }


def day_minutes(history: AccountHistory, day: date) -> dict[str, Any]:
    """One account-local day at minute resolution: each known minute's highest usage and licenses (up to
    data_through; a day lasts 23, 24 or 25 hours by DST)."""
    plans = known_plans(history.plans, history.data_through_ms)
    zone = report_timezone(plans, day)
    start_ms, end_ms = local_midnight_ms(day, zone), local_midnight_ms(day + timedelta(days=1), zone)
    known_end = known_end_ms(start_ms, end_ms, history.data_through_ms)
    n_known = -(-(known_end - start_ms) // MS_PER_MINUTE)
    peaks = [0] * n_known
    licenses = [plan_at(plans, start_ms + k * MS_PER_MINUTE).licenses for k in range(n_known)]
    for segment in usage_segments(history.changes, plans, start_ms, known_end):
        first = (segment.start_ms - start_ms) // MS_PER_MINUTE
        last = (segment.end_ms - 1 - start_ms) // MS_PER_MINUTE
        for k in range(first, last + 1):
            peaks[k] = max(peaks[k], segment.usage)
            licenses[k] = max(licenses[k], segment.licenses)
    allowance = [plan_at(plans, start_ms + k * MS_PER_MINUTE).overage_allowance for k in range(n_known)]
    return {
        "account_id": history.account_id,
        "date": day.isoformat(),
        "timezone": zone,
        "start": format_ms(start_ms),
        "end": format_ms(end_ms),
        "minutes": (end_ms - start_ms) // MS_PER_MINUTE,
        "data_through": _ts(history.data_through_ms),
        "max_usage": peaks,
        "licenses": licenses,
        "overage_allowance": allowance,
    }


def users_at(history: AccountHistory, at_ms: int) -> dict[str, Any]:
    """The users counted at the instant `at_ms`, with the presences that made them count (as the report's
    `peak_users`); an instant at or after data_through is not known yet (AnswerError)."""
    through = history.data_through_ms
    if through is None or at_ms >= through:
        known = "nothing is known of the account" if through is None else f"data through {format_ms(through)}"
        raise AnswerError(f"{format_ms(at_ms)} is not known yet: {known}")
    users = peak_users(at_ms, history.intervals, history.presences)
    return {
        "account_id": history.account_id,
        "at": format_ms(at_ms),
        "usage": usage_at(history, at_ms),
        "users": [user.model_dump(mode="json") for user in users],
    }


def grace_rule(plan: Plan) -> str:
    """The billable-overage rule of `plan` in one sentence."""
    if plan.grace_minutes == 0:
        return "Billable overage is the largest excess over licenses reached at any instant of the period."
    minutes = f"{plan.grace_minutes} minute{'s' if plan.grace_minutes != 1 else ''}"
    if plan.grace_mode == "cumulative":
        return (
            f"Billable overage is the largest excess over licenses held for at least {minutes} in total in the period."
        )
    return f"Billable overage is the largest excess over licenses held without a break for at least {minutes}."
