"""The licenses usage report (SPEC 4, docs/semantics.md 6) from the engine's `segments`, `plan_at`,
`user_intervals` and `presence_intervals` tables: every aggregate is one SQL statement; Python only picks the
timezone and the day bounds. Every metric covers the part of a bucket before the account's data_through (the file
rule: `max(W_a - allowed_lateness, W_p - account_idle_lateness)` over the valid records, DATA_THROUGH_SQL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import duckdb

from schemas.events import format_ms
from schemas.outputs import PeakUser, Report, ReportDay

from .calendar import local_midnight_ms

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class PlanTerms:
    """What the report needs of the plan in effect at one instant."""

    licenses: int = 0
    overage_allowance: int = 0
    grace_minutes: int = 30
    grace_mode: str = "contiguous"


def report_timezone(con: duckdb.DuckDBPyConnection, account_id: str, to_date: date, known_until: int) -> str:
    """The zone of the latest known plan p (application order; p.at < `known_until`, the data_through) with
    p.at < local midnight of `to + 1` in p's zone."""
    plans = con.execute(
        "SELECT at_ms, timezone FROM plans WHERE account_id = ? AND at_ms < ? ORDER BY at_ms DESC, seq DESC",
        [account_id, known_until],
    ).fetchall()
    after = to_date + timedelta(days=1)
    for at_ms, zone in plans:
        if at_ms < local_midnight_ms(zone, after):
            return zone
    return "UTC"


def plan_terms_at(
    con: duckdb.DuckDBPyConnection, account_id: str, instants: list[int], known_until: int
) -> list[PlanTerms]:
    """The known plan (p.at < `known_until`) in effect at each instant (ASOF over `plan_at`), defaults before the
    first plan."""
    rows = con.execute(
        """SELECT t.i, p.licenses, p.overage_allowance, p.grace_minutes, p.grace_mode
           FROM (SELECT unnest(?::BIGINT[]) AS at_ms, unnest(range(len(?::BIGINT[]))) AS i) AS t
           ASOF LEFT JOIN (SELECT * FROM plan_at WHERE account_id = ? AND at_ms < ?) AS p ON t.at_ms >= p.at_ms
           ORDER BY t.i""",
        [instants, instants, account_id, known_until],
    ).fetchall()
    return [PlanTerms() if row[1] is None else PlanTerms(row[1], row[2], row[3], row[4]) for row in rows]


# Per bucket (the period as bucket -1, each day as bucket i): peak, first instant of the peak, time over
# licenses, license-ms, max excess. Segments hold usage > 0 only, so an empty bucket has peak 0.
BUCKET_SQL = """
WITH buckets AS (
  SELECT * FROM (SELECT unnest(?::BIGINT[]) AS b, unnest(?::BIGINT[]) AS lo, unnest(?::BIGINT[]) AS hi) WHERE lo < hi
), pieces AS (
  SELECT k.b, greatest(s.start_ms, k.lo) AS s, least(s.end_ms, k.hi) AS e, s.usage, s.licenses
  FROM buckets AS k JOIN segments AS s
    ON s.account_id = ? AND s.start_ms < k.hi AND s.end_ms > k.lo
)
SELECT b, max(usage) AS peak, min({'neg': -usage, 't': s}).t AS peak_at,
       sum(CASE WHEN usage > licenses THEN e - s ELSE 0 END) AS over_ms,
       sum((e - s) * usage) AS license_ms,
       max(greatest(usage - licenses, 0)) AS max_excess
FROM pieces GROUP BY b
"""

USERS_SQL = """
SELECT k.b, count(DISTINCT u.user_id)
FROM (SELECT unnest(?::BIGINT[]) AS b, unnest(?::BIGINT[]) AS lo, unnest(?::BIGINT[]) AS hi) AS k
JOIN user_intervals AS u ON u.account_id = ? AND u.start_ms < k.hi AND u.end_ms > k.lo AND k.lo < k.hi
GROUP BY k.b
"""

# The users counted at one instant (half-open intervals), with the presences active then.
PEAK_USERS_SQL = """
SELECT u.user_id,
       coalesce(list_sort(list_distinct(list(p.device_id) FILTER (WHERE p.kind = 'desktop'))), []) AS devices,
       coalesce(bool_or(p.kind = 'portal'), false) AS portal,
       coalesce(bool_or(p.kind = 'api'), false) AS api
FROM (SELECT DISTINCT user_id FROM user_intervals WHERE account_id = $account AND start_ms <= $t AND end_ms > $t) AS u
LEFT JOIN presence_intervals AS p
  ON p.account_id = $account AND p.user_id = u.user_id AND p.start_ms <= $t AND p.end_ms > $t
GROUP BY u.user_id
ORDER BY u.user_id
"""

# The file rule of data_through: the account's horizon after every valid record of the (one-partition) input.
DATA_THROUGH_SQL = """
SELECT CASE WHEN w_a IS NOT NULL THEN greatest(w_a - $allowed, w_p - $idle) END
FROM (SELECT max(at_ms) FILTER (WHERE account_id = $account) AS w_a, max(at_ms) AS w_p
      FROM parsed WHERE reason IS NULL)
"""

# Excess stretches inside the period; an island is a run of back-to-back segments with excess > 0.
EXCESS_SQL = """
WITH x AS (
  SELECT greatest(start_ms, ?) AS s, least(end_ms, ?) AS e, usage - licenses AS x
  FROM segments WHERE account_id = ? AND start_ms < ? AND end_ms > ? AND usage > licenses
), islands AS (
  SELECT *, sum(CASE WHEN prev_e = s THEN 0 ELSE 1 END) OVER (ORDER BY s ROWS UNBOUNDED PRECEDING) AS island
  FROM (SELECT *, lag(e) OVER (ORDER BY s) AS prev_e FROM x)
)
"""

# contiguous: the best window [s, s + G) that starts at a segment start inside one island.
CONTIGUOUS_SQL = (
    EXCESS_SQL
    + """
SELECT coalesce(max(m), 0) FROM (
  SELECT s, island_end,
         min(x) OVER (PARTITION BY island ORDER BY s RANGE BETWEEN CURRENT ROW AND {g_minus_1} FOLLOWING) AS m
  FROM (SELECT *, max(e) OVER (PARTITION BY island) AS island_end FROM islands)
) WHERE s + {g} <= island_end
"""
)

# cumulative: the largest excess level whose total time at or above it reaches G.
CUMULATIVE_SQL = (
    EXCESS_SQL
    + """
SELECT coalesce(max(x), 0) FROM (
  SELECT x, sum(e - s) OVER (ORDER BY x DESC RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS total
  FROM islands
) WHERE total >= {g}
"""
)

MAX_EXCESS_SQL = EXCESS_SQL + "SELECT coalesce(max(x), 0) FROM islands"


def billable_overage(
    con: duckdb.DuckDBPyConnection, account_id: str, period: tuple[int, int], grace_minutes: int, grace_mode: str
) -> int:
    """Grace-aware billable overage of the period (docs/semantics.md 6)."""
    lo, hi = period
    if hi <= lo:
        return 0
    params = [lo, hi, account_id, hi, lo]
    g = grace_minutes * 60_000
    if g == 0:
        sql = MAX_EXCESS_SQL
    elif grace_mode == "cumulative":
        sql = CUMULATIVE_SQL.format(g=g)
    else:
        sql = CONTIGUOUS_SQL.format(g=g, g_minus_1=g - 1)
    return int(con.execute(sql, params).fetchall()[0][0])


def data_through(con: duckdb.DuckDBPyConnection, account_id: str, allowed_ms: int, idle_ms: int) -> int | None:
    """The account's data_through by the file rule (None when it has no valid record)."""
    row = con.execute(DATA_THROUGH_SQL, {"account": account_id, "allowed": allowed_ms, "idle": idle_ms}).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def peak_users(con: duckdb.DuckDBPyConnection, account_id: str, at_ms: int | None) -> list[PeakUser]:
    """The users counted at `at_ms`, sorted, with their active presences ([] when `at_ms` is None)."""
    if at_ms is None:
        return []
    rows = con.execute(PEAK_USERS_SQL, {"account": account_id, "t": at_ms}).fetchall()
    return [PeakUser(user_id=u, devices=list(devices), portal=portal, api=api) for u, devices, portal, api in rows]


# One bucket's numbers: peak, peak_at (None at peak 0), over_ms, license_ms, max_excess, distinct users.
Bucket = tuple[int, int | None, int, int, int, int]


def bucket_of(row: Sequence[Any] | None, users: int) -> Bucket:
    """A bucket's values from its BUCKET_SQL row `(peak, peak_at, over_ms, license_ms, max_excess)` (None: no
    usage in it) and its distinct users."""
    peak, peak_at, over_ms, license_ms, max_excess = row if row is not None else (0, None, 0, 0, 0)
    peak = int(peak or 0)
    return (
        peak,
        None if peak == 0 else int(peak_at),
        int(over_ms or 0),
        int(license_ms or 0),
        int(max_excess or 0),
        int(users),
    )


def report_day(day: date, values: Bucket, terms: PlanTerms, known: bool, complete: bool) -> ReportDay:
    """One report day; metrics null when the day starts at or after data_through (`known` false)."""
    peak, peak_at, over_ms, license_ms, max_excess, distinct = values
    return ReportDay(
        date=day.isoformat(),
        peak_usage=peak if known else None,
        peak_at=None if peak_at is None or not known else format_ms(peak_at),
        licenses=terms.licenses,
        overage_allowance=terms.overage_allowance,
        seconds_over_licenses=over_ms / 1000 if known else None,
        max_excess=max_excess if known else None,
        license_hours=license_ms / HOUR_MS if known else None,
        distinct_users=distinct if known else None,
        complete=complete,
    )


def build_report(
    con: duckdb.DuckDBPyConnection, account_id: str, from_date: date, to_date: date, data_through_ms: int | None
) -> Report:
    """The report of `account_id` for the local dates `from_date`..`to_date` (inclusive), counting nothing at or
    after `data_through_ms` (None: nothing is known)."""
    if to_date < from_date:
        raise ValueError(f"to ({to_date}) is before from ({from_date})")
    known_until = -(2**62) if data_through_ms is None else data_through_ms  # plans after it are not known yet
    zone = report_timezone(con, account_id, to_date, known_until)
    dates = [from_date + timedelta(days=i) for i in range((to_date - from_date).days + 1)]
    bounds = [local_midnight_ms(zone, d) for d in dates] + [local_midnight_ms(zone, to_date + timedelta(days=1))]
    period = (bounds[0], bounds[-1])
    cut = bounds[0] if data_through_ms is None else data_through_ms  # nothing at or after `cut` counts
    keys = [-1, *range(len(dates))]
    los = [period[0], *bounds[:-1]]
    his = [min(hi, cut) for hi in (period[1], *bounds[1:])]

    stats = {row[0]: row[1:] for row in con.execute(BUCKET_SQL, [keys, los, his, account_id]).fetchall()}
    users = dict(con.execute(USERS_SQL, [keys, los, his, account_id]).fetchall())
    terms = plan_terms_at(con, account_id, [hi - 1 for hi in (period[1], *bounds[1:])], known_until)

    def bucket(key: int) -> Bucket:
        return bucket_of(stats.get(key), users.get(key, 0))

    known = data_through_ms is not None
    days = [
        report_day(day, bucket(i), terms[i + 1], known and bounds[i] < cut, known and cut >= bounds[i + 1])
        for i, day in enumerate(dates)
    ]
    peak, peak_at, over_ms, license_ms, _max_excess, distinct = bucket(-1)
    summary = terms[0]
    known_period = (period[0], max(period[0], min(period[1], cut)))
    billable = billable_overage(con, account_id, known_period, summary.grace_minutes, summary.grace_mode)
    return Report(
        account_id=account_id,
        from_=from_date.isoformat(),
        to=to_date.isoformat(),
        timezone=zone,
        licenses=summary.licenses,
        overage_allowance=summary.overage_allowance,
        peak_usage=peak,
        peak_at=None if peak_at is None else format_ms(peak_at),
        peak_users=peak_users(con, account_id, peak_at),
        billable_overage=billable,
        over_allowance=max(0, billable - summary.overage_allowance),
        seconds_over_licenses=over_ms / 1000,
        license_hours=license_ms / HOUR_MS,
        distinct_users=distinct,
        data_through=None if data_through_ms is None else format_ms(data_through_ms),
        complete=known and cut >= period[1],
        days=days,
    )
