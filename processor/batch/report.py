"""The licenses usage report (SPEC 4, docs/semantics.md 6) from the engine's `segments`, `plan_at` and
`user_intervals` tables: every aggregate is one SQL statement; Python only picks the timezone and the day bounds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import duckdb

from schemas.events import format_ms
from schemas.outputs import Report, ReportDay

from .calendar import local_midnight_ms

HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class PlanTerms:
    """What the report needs of the plan in effect at one instant."""

    licenses: int = 0
    overage_allowance: int = 0
    grace_minutes: int = 30
    grace_mode: str = "contiguous"


def report_timezone(con: duckdb.DuckDBPyConnection, account_id: str, to_date: date) -> str:
    """The zone of the latest plan p (application order) with p.at < local midnight of `to + 1` in p's zone."""
    plans = con.execute(
        "SELECT at_ms, timezone FROM plans WHERE account_id = ? ORDER BY at_ms DESC, seq DESC", [account_id]
    ).fetchall()
    after = to_date + timedelta(days=1)
    for at_ms, zone in plans:
        if at_ms < local_midnight_ms(zone, after):
            return zone
    return "UTC"


def plan_terms_at(con: duckdb.DuckDBPyConnection, account_id: str, instants: list[int]) -> list[PlanTerms]:
    """The plan in effect at each instant (ASOF over `plan_at`), defaults before the first plan."""
    rows = con.execute(
        """SELECT t.i, p.licenses, p.overage_allowance, p.grace_minutes, p.grace_mode
           FROM (SELECT unnest(?::BIGINT[]) AS at_ms, unnest(range(len(?::BIGINT[]))) AS i) AS t
           ASOF LEFT JOIN (SELECT * FROM plan_at WHERE account_id = ?) AS p ON t.at_ms >= p.at_ms
           ORDER BY t.i""",
        [instants, instants, account_id],
    ).fetchall()
    return [PlanTerms() if row[1] is None else PlanTerms(row[1], row[2], row[3], row[4]) for row in rows]


# Per bucket (the period as bucket -1, each day as bucket i): peak, first instant of the peak, time over
# licenses, license-ms, max excess. Segments hold usage > 0 only, so an empty bucket has peak 0.
BUCKET_SQL = """
WITH buckets AS (
  SELECT unnest(?::BIGINT[]) AS b, unnest(?::BIGINT[]) AS lo, unnest(?::BIGINT[]) AS hi
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
JOIN user_intervals AS u ON u.account_id = ? AND u.start_ms < k.hi AND u.end_ms > k.lo
GROUP BY k.b
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
    params = [lo, hi, account_id, hi, lo]
    g = grace_minutes * 60_000
    if g == 0:
        sql = MAX_EXCESS_SQL
    elif grace_mode == "cumulative":
        sql = CUMULATIVE_SQL.format(g=g)
    else:
        sql = CONTIGUOUS_SQL.format(g=g, g_minus_1=g - 1)
    return int(con.execute(sql, params).fetchall()[0][0])


def build_report(con: duckdb.DuckDBPyConnection, account_id: str, from_date: date, to_date: date) -> Report:
    """The report of `account_id` for the local dates `from_date`..`to_date` (inclusive)."""
    if to_date < from_date:
        raise ValueError(f"to ({to_date}) is before from ({from_date})")
    zone = report_timezone(con, account_id, to_date)
    dates = [from_date + timedelta(days=i) for i in range((to_date - from_date).days + 1)]
    bounds = [local_midnight_ms(zone, d) for d in dates] + [local_midnight_ms(zone, to_date + timedelta(days=1))]
    period = (bounds[0], bounds[-1])
    keys = [-1, *range(len(dates))]
    los = [period[0], *bounds[:-1]]
    his = [period[1], *bounds[1:]]

    stats = {row[0]: row[1:] for row in con.execute(BUCKET_SQL, [keys, los, his, account_id]).fetchall()}
    users = dict(con.execute(USERS_SQL, [keys, los, his, account_id]).fetchall())
    terms = plan_terms_at(con, account_id, [hi - 1 for hi in his])

    def bucket(key: int) -> tuple[int, int | None, int, int, int, int]:
        peak, peak_at, over_ms, license_ms, max_excess = stats.get(key, (0, None, 0, 0, 0))
        peak = int(peak or 0)
        return (
            peak,
            None if peak == 0 else int(peak_at),
            int(over_ms or 0),
            int(license_ms or 0),
            int(max_excess or 0),
            int(users.get(key, 0)),
        )

    days: list[ReportDay] = []
    for i, day in enumerate(dates):
        peak, peak_at, over_ms, license_ms, max_excess, distinct = bucket(i)
        days.append(
            ReportDay(
                date=day.isoformat(),
                peak_usage=peak,
                peak_at=None if peak_at is None else format_ms(peak_at),
                licenses=terms[i + 1].licenses,
                overage_allowance=terms[i + 1].overage_allowance,
                seconds_over_licenses=over_ms / 1000,
                max_excess=max_excess,
                license_hours=license_ms / HOUR_MS,
                distinct_users=distinct,
            )
        )
    peak, peak_at, over_ms, license_ms, _max_excess, distinct = bucket(-1)
    summary = terms[0]
    billable = billable_overage(con, account_id, period, summary.grace_minutes, summary.grace_mode)
    return Report(
        account_id=account_id,
        from_=from_date.isoformat(),
        to=to_date.isoformat(),
        timezone=zone,
        licenses=summary.licenses,
        overage_allowance=summary.overage_allowance,
        peak_usage=peak,
        peak_at=None if peak_at is None else format_ms(peak_at),
        billable_overage=billable,
        over_allowance=max(0, billable - summary.overage_allowance),
        seconds_over_licenses=over_ms / 1000,
        license_hours=license_ms / HOUR_MS,
        distinct_users=distinct,
        days=days,
    )
