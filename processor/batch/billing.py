"""Set-based reports of many accounts at once (a billing run): the same numbers as `report.build_report`, but each
aggregate is one SQL statement over every requested report, grouped by request, instead of a few statements per
account. Python picks each report's timezone and local day bounds (as report.py does) and assembles the results.

Requests are `(account_id, from_date, to_date)`; an account may appear more than once. The request tables are
registered Arrow tables (`ccm_req_*`), dropped again before returning.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import duckdb
import pyarrow as pa

from schemas.events import format_ms
from schemas.outputs import PeakUser, Report

from .calendar import local_midnight_ms
from .report import HOUR_MS, Bucket, PlanTerms, bucket_of, report_day

Request = tuple[str, date, date]

# Per request r and bucket b (the period as -1, day i as i): as report.BUCKET_SQL, grouped by request.
BUCKETS_SQL = """
WITH pieces AS (
  SELECT k.r, k.b, greatest(s.start_ms, k.lo) AS s, least(s.end_ms, k.hi) AS e, s.usage, s.licenses
  FROM ccm_req_buckets AS k JOIN segments AS s
    ON s.account_id = k.account_id AND s.start_ms < k.hi AND s.end_ms > k.lo
  WHERE k.lo < k.hi
)
SELECT r, b, max(usage) AS peak, min({'neg': -usage, 't': s}).t AS peak_at,
       sum(CASE WHEN usage > licenses THEN e - s ELSE 0 END) AS over_ms,
       sum((e - s) * usage) AS license_ms,
       max(greatest(usage - licenses, 0)) AS max_excess
FROM pieces GROUP BY r, b
"""

USERS_SQL = """
SELECT k.r, k.b, count(DISTINCT u.user_id)
FROM ccm_req_buckets AS k
JOIN user_intervals AS u ON u.account_id = k.account_id AND u.start_ms < k.hi AND u.end_ms > k.lo AND k.lo < k.hi
GROUP BY k.r, k.b
"""

# The known plan (at_ms < the account's known_until) in effect at each instant; NULLs before the first plan.
TERMS_SQL = """
SELECT t.r, t.i, p.licenses, p.overage_allowance, p.grace_minutes, p.grace_mode
FROM ccm_req_instants AS t
ASOF LEFT JOIN (
  SELECT p.* FROM plan_at AS p JOIN ccm_req_known AS k ON p.account_id = k.account_id AND p.at_ms < k.known_until
) AS p ON t.account_id = p.account_id AND t.at_ms >= p.at_ms
"""

# Excess stretches inside each request's known period (report.EXCESS_SQL per request r).
EXCESS_SQL = """
WITH x AS (
  SELECT q.r, greatest(s.start_ms, q.lo) AS s, least(s.end_ms, q.hi) AS e, s.usage - s.licenses AS x
  FROM ccm_req_periods AS q JOIN segments AS s
    ON s.account_id = q.account_id AND s.start_ms < q.hi AND s.end_ms > q.lo AND s.usage > s.licenses
  WHERE q.g = {g} AND q.mode = '{mode}'
), islands AS (
  SELECT *, sum(CASE WHEN prev_e = s THEN 0 ELSE 1 END) OVER (PARTITION BY r ORDER BY s ROWS UNBOUNDED PRECEDING)
              AS island
  FROM (SELECT *, lag(e) OVER (PARTITION BY r ORDER BY s) AS prev_e FROM x)
)
"""

CONTIGUOUS_SQL = (
    EXCESS_SQL
    + """
SELECT r, coalesce(max(m), 0) FROM (
  SELECT r, s, island_end,
         min(x) OVER (PARTITION BY r, island ORDER BY s RANGE BETWEEN CURRENT ROW AND {g_minus_1} FOLLOWING) AS m
  FROM (SELECT *, max(e) OVER (PARTITION BY r, island) AS island_end FROM islands)
) WHERE s + {g} <= island_end GROUP BY r
"""
)

CUMULATIVE_SQL = (
    EXCESS_SQL
    + """
SELECT r, coalesce(max(x), 0) FROM (
  SELECT r, x, sum(e - s) OVER (PARTITION BY r ORDER BY x DESC RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
           AS total
  FROM islands
) WHERE total >= {g} GROUP BY r
"""
)

MAX_EXCESS_SQL = EXCESS_SQL + "SELECT r, coalesce(max(x), 0) FROM islands GROUP BY r"

# The users counted at each request's peak instant, with the presences active then (report.PEAK_USERS_SQL).
PEAK_USERS_SQL = """
SELECT u.r, u.user_id,
       coalesce(list_sort(list_distinct(list(p.device_id) FILTER (WHERE p.kind = 'desktop'))), []) AS devices,
       coalesce(bool_or(p.kind = 'portal'), false) AS portal,
       coalesce(bool_or(p.kind = 'api'), false) AS api
FROM (SELECT DISTINCT q.r, q.account_id, q.t, i.user_id
      FROM ccm_req_peaks AS q JOIN user_intervals AS i
        ON i.account_id = q.account_id AND i.start_ms <= q.t AND i.end_ms > q.t) AS u
LEFT JOIN presence_intervals AS p
  ON p.account_id = u.account_id AND p.user_id = u.user_id AND p.start_ms <= u.t AND p.end_ms > u.t
GROUP BY u.r, u.user_id
ORDER BY u.r, u.user_id
"""

DATA_THROUGHS_SQL = """
SELECT account_id, greatest(max(at_ms) - $allowed, (SELECT max(at_ms) FROM parsed WHERE reason IS NULL) - $idle)
FROM parsed WHERE reason IS NULL GROUP BY account_id
"""

_midnight = lru_cache(maxsize=1 << 16)(local_midnight_ms)


def _known_until(data_through_ms: int | None) -> int:
    """Plans at or after this instant are not known yet (report.build_report's known_until)."""
    return -(2**62) if data_through_ms is None else data_through_ms


def data_throughs(con: duckdb.DuckDBPyConnection, allowed_ms: int, idle_ms: int) -> dict[str, int]:
    """The data_through of every account with a valid record, by the file rule (report.DATA_THROUGH_SQL)."""
    rows = con.execute(DATA_THROUGHS_SQL, {"allowed": allowed_ms, "idle": idle_ms}).fetchall()
    return {account: int(value) for account, value in rows}


@dataclass
class _Plan:
    """One request's timezone, day bounds and cut (what report.build_report computes in Python)."""

    account_id: str
    from_date: date
    to_date: date
    data_through_ms: int | None
    known_until: int
    zone: str
    dates: list[date]
    bounds: list[int]

    @property
    def period(self) -> tuple[int, int]:
        return self.bounds[0], self.bounds[-1]

    @property
    def cut(self) -> int:
        return self.bounds[0] if self.data_through_ms is None else self.data_through_ms


def build_reports(
    con: duckdb.DuckDBPyConnection, requests: Sequence[Request], data_through: Mapping[str, int | None]
) -> list[Report]:
    """The report of every request, in order, equal to `report.build_report` of each; `data_through` maps an
    account to its data_through (a missing account: nothing is known)."""
    for account, first, last in requests:
        if last < first:
            raise ValueError(f"to ({last}) is before from ({first}) for account {account!r}")
    if not requests:
        return []
    known = {account: _known_until(data_through.get(account)) for account, _, _ in requests}
    zones = _zones(con, known, requests)
    plans: list[_Plan] = []
    for (account, first, last), zone in zip(requests, zones, strict=True):
        dates = [first + timedelta(days=i) for i in range((last - first).days + 1)]
        bounds = [_midnight(zone, d) for d in dates] + [_midnight(zone, last + timedelta(days=1))]
        plans.append(_Plan(account, first, last, data_through.get(account), known[account], zone, dates, bounds))
    with _registered(con, _request_tables(plans, known)) as _:
        stats: dict[tuple[int, int], tuple] = {(r, b): rest for r, b, *rest in con.execute(BUCKETS_SQL).fetchall()}
        users = {(r, b): n for r, b, n in con.execute(USERS_SQL).fetchall()}
        terms: dict[tuple[int, int], PlanTerms] = {
            (r, i): PlanTerms() if row[0] is None else PlanTerms(*row)
            for r, i, *row in con.execute(TERMS_SQL).fetchall()
        }
        billable = _billable(con, plans, terms)
    peaks = {r: stats.get((r, -1), (0, None))[1] for r in range(len(plans))}
    peaks = {r: int(t) for r, t in peaks.items() if t is not None and int(stats[(r, -1)][0] or 0) != 0}
    holders = _peak_users(con, plans, peaks)
    return [
        _report(r, plan, stats, users, terms, billable.get(r, 0), holders.get(r, [])) for r, plan in enumerate(plans)
    ]


def _zones(con: duckdb.DuckDBPyConnection, known: Mapping[str, int], requests: Sequence[Request]) -> list[str]:
    """report.report_timezone of every request, from one read of the plans."""
    plans: dict[str, list[tuple[int, str]]] = {}
    rows = con.execute(
        "SELECT account_id, at_ms, timezone FROM plans WHERE account_id IN (SELECT unnest(?::VARCHAR[])) "
        "ORDER BY account_id, at_ms DESC, seq DESC",
        [sorted(known)],
    ).fetchall()
    for account, at_ms, zone in rows:
        plans.setdefault(account, []).append((at_ms, zone))
    zones = []
    for account, _, last in requests:
        after = last + timedelta(days=1)
        zone = "UTC"
        for at_ms, candidate in plans.get(account, ()):
            if at_ms < known[account] and at_ms < _midnight(candidate, after):
                zone = candidate
                break
        zones.append(zone)
    return zones


def _request_tables(plans: Sequence[_Plan], known: Mapping[str, int]) -> dict[str, pa.Table]:
    """The Arrow tables the statements read: buckets, plan instants, known_until per account, known periods."""
    buckets: dict[str, list] = {"r": [], "account_id": [], "b": [], "lo": [], "hi": []}
    instants: dict[str, list] = {"r": [], "account_id": [], "i": [], "at_ms": []}
    for r, plan in enumerate(plans):
        period, bounds, cut = plan.period, plan.bounds, plan.cut
        los = [period[0], *bounds[:-1]]
        his = [period[1], *bounds[1:]]
        n = len(los)
        buckets["r"] += [r] * n
        buckets["account_id"] += [plan.account_id] * n
        buckets["b"] += range(-1, n - 1)
        buckets["lo"] += los
        buckets["hi"] += [min(hi, cut) for hi in his]
        instants["r"] += [r] * n
        instants["account_id"] += [plan.account_id] * n
        instants["i"] += range(n)
        instants["at_ms"] += [hi - 1 for hi in his]
    int64 = pa.int64()
    return {
        "ccm_req_buckets": pa.table(
            {
                "r": pa.array(buckets["r"], int64),
                "account_id": pa.array(buckets["account_id"], pa.string()),
                "b": pa.array(buckets["b"], int64),
                "lo": pa.array(buckets["lo"], int64),
                "hi": pa.array(buckets["hi"], int64),
            }
        ),
        "ccm_req_instants": pa.table(
            {
                "r": pa.array(instants["r"], int64),
                "account_id": pa.array(instants["account_id"], pa.string()),
                "i": pa.array(instants["i"], int64),
                "at_ms": pa.array(instants["at_ms"], int64),
            }
        ),
        "ccm_req_known": pa.table(
            {
                "account_id": pa.array(list(known), pa.string()),
                "known_until": pa.array(list(known.values()), int64),
            }
        ),
    }


@contextmanager
def _registered(con: duckdb.DuckDBPyConnection, tables: Mapping[str, pa.Table]) -> Iterator[None]:
    """Register Arrow tables under their names for the duration of the block."""
    try:
        for name, table in tables.items():
            con.register(name, table)
        yield
    finally:
        for name in tables:
            con.unregister(name)


def _billable(
    con: duckdb.DuckDBPyConnection, plans: Sequence[_Plan], terms: Mapping[tuple[int, int], PlanTerms]
) -> dict[int, int]:
    """report.billable_overage of every request's known period: one statement per (grace, mode) in use."""
    rows: dict[str, list] = {"r": [], "account_id": [], "lo": [], "hi": [], "g": [], "mode": []}
    for r, plan in enumerate(plans):
        period = plan.period
        lo, hi = period[0], max(period[0], min(period[1], plan.cut))
        if hi <= lo:
            continue
        summary = terms[(r, 0)]
        g = summary.grace_minutes * 60_000
        mode = "max" if g == 0 else "cumulative" if summary.grace_mode == "cumulative" else "contiguous"
        for key, value in (("r", r), ("account_id", plan.account_id), ("lo", lo), ("hi", hi), ("g", g), ("mode", mode)):
            rows[key].append(value)
    if not rows["r"]:
        return {}
    table = pa.table(
        {
            "r": pa.array(rows["r"], pa.int64()),
            "account_id": pa.array(rows["account_id"], pa.string()),
            "lo": pa.array(rows["lo"], pa.int64()),
            "hi": pa.array(rows["hi"], pa.int64()),
            "g": pa.array(rows["g"], pa.int64()),
            "mode": pa.array(rows["mode"], pa.string()),
        }
    )
    out: dict[int, int] = {}
    with _registered(con, {"ccm_req_periods": table}):
        for g, mode in sorted(set(zip(rows["g"], rows["mode"], strict=True))):
            if mode == "max":
                sql = MAX_EXCESS_SQL.format(g=g, mode=mode)
            elif mode == "cumulative":
                sql = CUMULATIVE_SQL.format(g=g, mode=mode)
            else:
                sql = CONTIGUOUS_SQL.format(g=g, g_minus_1=g - 1, mode=mode)
            out.update((int(r), int(v)) for r, v in con.execute(sql).fetchall())
    return out


def _peak_users(
    con: duckdb.DuckDBPyConnection, plans: Sequence[_Plan], peaks: Mapping[int, int]
) -> dict[int, list[PeakUser]]:
    """The users counted at each request's peak instant (report.peak_users), by request."""
    if not peaks:
        return {}
    table = pa.table(
        {
            "r": pa.array(list(peaks), pa.int64()),
            "account_id": pa.array([plans[r].account_id for r in peaks], pa.string()),
            "t": pa.array(list(peaks.values()), pa.int64()),
        }
    )
    out: dict[int, list[PeakUser]] = {}
    with _registered(con, {"ccm_req_peaks": table}):
        for r, user, devices, portal, api in con.execute(PEAK_USERS_SQL).fetchall():
            out.setdefault(int(r), []).append(PeakUser(user_id=user, devices=list(devices), portal=portal, api=api))
    return out


def _report(
    r: int,
    plan: _Plan,
    stats: Mapping[tuple[int, int], tuple],
    users: Mapping[tuple[int, int], int],
    terms: Mapping[tuple[int, int], PlanTerms],
    billable: int,
    holders: list[PeakUser],
) -> Report:
    """One request's Report, assembled exactly as report.build_report does."""

    def bucket(key: int) -> Bucket:
        return bucket_of(stats.get((r, key)), users.get((r, key), 0))

    bounds, cut = plan.bounds, plan.cut
    known = plan.data_through_ms is not None
    days = [
        report_day(day, bucket(i), terms[(r, i + 1)], known and bounds[i] < cut, known and cut >= bounds[i + 1])
        for i, day in enumerate(plan.dates)
    ]
    peak, peak_at, over_ms, license_ms, _max_excess, distinct = bucket(-1)
    summary = terms[(r, 0)]
    period = plan.period
    return Report(
        account_id=plan.account_id,
        from_=plan.from_date.isoformat(),
        to=plan.to_date.isoformat(),
        timezone=plan.zone,
        licenses=summary.licenses,
        overage_allowance=summary.overage_allowance,
        peak_usage=peak,
        peak_at=None if peak_at is None else format_ms(peak_at),
        peak_users=holders if peak_at is not None else [],
        billable_overage=billable,
        over_allowance=max(0, billable - summary.overage_allowance),
        seconds_over_licenses=over_ms / 1000,
        license_hours=license_ms / HOUR_MS,
        distinct_users=distinct,
        data_through=None if plan.data_through_ms is None else format_ms(plan.data_through_ms),
        complete=known and cut >= period[1],
        days=days,
    )
