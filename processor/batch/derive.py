"""Set-based derivation of presences, counted intervals, usage, segments and peak windows (docs/semantics.md 1-5).

Every statement reads the deduplicated `events` table (application order = `(at_ms, seq)`) and writes one table.
Timers become rows: a liveness mark (device), an idle mark (portal) or an activity end (api) at its due instant,
ordered before the events of that instant (`prio` 0 against 1).
"""

from __future__ import annotations

from schemas.events import CONTACT_CENTER_PAGES

from .wire import DEVICE_TYPES, _sql_list

CC_PAGES = _sql_list(sorted(CONTACT_CENTER_PAGES))
DEVICE_TYPES_SQL = _sql_list(DEVICE_TYPES)
FIXED_KINDS_SQL = "(VALUES ('15m', 900000::BIGINT), ('1h', 3600000::BIGINT))"

# First arrival of (account_id, event_id) wins; a later copy is a duplicate, or a conflict when its normalised
# payload (schema_version aside, as in schemas.events.fingerprint) differs.
PAYLOAD = (
    "{'type': type, 'at_ms': at_ms, 'user_id': user_id, 'device_id': device_id, 'page': page, "
    "'endpoint': endpoint, 'licenses': licenses, 'overage_allowance': overage_allowance, "
    "'billing_anchor_day': billing_anchor_day, 'timezone': timezone, 'grace_minutes': grace_minutes, "
    "'grace_mode': grace_mode}"
)

# Too late as a stream would judge it (SPEC 2), for engines that drop late events: below the account's horizon
# `max(W_a - allowed_lateness, W_p - account_idle_lateness)`, where W_a and W_p are the largest occurred_at of the
# account's and of all valid records that arrived before (a too-late record never raises either, so the records
# before need no verdict of their own). The file is one partition. Empty when every event counts (a file's default).
LATE_SQL = """
CREATE OR REPLACE TABLE late_rows AS
SELECT seq, arrival FROM (
  SELECT seq, arrival, at_ms,
         max(at_ms) OVER (PARTITION BY account_id ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS wa,
         max(at_ms) OVER (ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS wp
  FROM parsed WHERE reason IS NULL AND {enabled}
) WHERE at_ms < greatest(wa - {lateness}, wp - {idle_lateness})
"""

# Copies are rare: only keys whose hash repeats go through the (string-partitioned) window. Repeated hashes are
# found by sorting the hashes (equal ones are neighbours), which costs less than a hash table of every key, and
# only the (seq, hash) pairs are sorted, never the admitted rows themselves.
RANKED_SQL = f"""
CREATE OR REPLACE TABLE copies AS
WITH keyed AS (
  SELECT p.seq, hash(p.account_id, p.event_id) AS h
  FROM parsed AS p ANTI JOIN late_rows AS l ON p.seq = l.seq WHERE p.reason IS NULL
), repeated AS (
  SELECT seq FROM (SELECT seq, h, lag(h) OVER o AS before, lead(h) OVER o AS after FROM keyed WINDOW o AS (ORDER BY h))
  WHERE h = before OR h = after
)
SELECT seq, account_id, event_id, row_number() OVER w AS copy,
       first_value({PAYLOAD}) OVER w IS DISTINCT FROM {PAYLOAD} AS conflict
FROM parsed SEMI JOIN repeated USING (seq)
WINDOW w AS (PARTITION BY account_id, event_id ORDER BY seq ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
"""

EVENTS_SQL = """
CREATE OR REPLACE VIEW events AS
SELECT p.seq, p.arrival, p.account_id, p.event_id, p.type, p.at_ms, p.user_id, p.device_id, p.page, p.endpoint,
       p.licenses, p.overage_allowance, p.billing_anchor_day, p.timezone, p.grace_minutes, p.grace_mode,
       p.schema_version
FROM parsed AS p ANTI JOIN (SELECT seq FROM copies WHERE copy > 1 UNION ALL SELECT seq FROM late_rows) AS r
  ON p.seq = r.seq
WHERE p.reason IS NULL
"""

# Plans in application order; of two plans at one instant the later arrival wins (plan_at: one row per instant).
PLANS_SQL = """
CREATE OR REPLACE TABLE plans AS
SELECT account_id, at_ms, seq, licenses, overage_allowance, billing_anchor_day, timezone, grace_minutes, grace_mode
FROM events WHERE type = 'account.plan_changed' ORDER BY account_id, at_ms, seq;
CREATE OR REPLACE TABLE plan_at AS
SELECT account_id, at_ms, arg_max(licenses, seq) AS licenses, arg_max(overage_allowance, seq) AS overage_allowance,
       arg_max(timezone, seq) AS timezone, arg_max(grace_minutes, seq) AS grace_minutes,
       arg_max(grace_mode, seq) AS grace_mode
FROM plans GROUP BY account_id, at_ms;
"""

# Desktop (per user and device). A liveness mark sits at e + timeout after each event e whose next event of the
# device is at or after that instant (or that has none). Found without sorting the heartbeats: cut time into buckets
# of one timeout; two events of one bucket are closer than the timeout, so only the last event of a bucket can get a
# mark, and only when the next bucket is empty or starts at or after that event + timeout (a bucket further on
# always does). Then, over the other device events and the marks ordered by (at, prio, seq): `si` is the last of
# signed_in (1) / signed_out or mark (0) so far; every signed_out, mark or work_session.ended closes the group of
# items before it. A session runs from the first work_session.started of a group that found the device signed in
# to the item that closes the group.
DESKTOP_SQL = """
CREATE OR REPLACE TEMP TABLE desktop_iv AS
WITH buckets AS (
  SELECT account_id, user_id, device_id, ccm_fdiv(at_ms, {timeout}) AS k, min(at_ms) AS lo, max(at_ms) AS hi
  FROM events WHERE type IN {device_types} GROUP BY ALL
), marks AS (
  SELECT b.account_id, b.user_id, b.device_id, b.hi + {timeout} AS at_ms
  FROM buckets AS b LEFT JOIN buckets AS n
    ON n.account_id = b.account_id AND n.user_id = b.user_id AND n.device_id = b.device_id AND n.k = b.k + 1
  WHERE n.lo IS NULL OR n.lo >= b.hi + {timeout}
), items AS (
  SELECT account_id, user_id, device_id, at_ms, 1 AS prio, seq,
         CASE type WHEN 'desktop.signed_in' THEN 'in' WHEN 'desktop.signed_out' THEN 'out'
                   WHEN 'work_session.started' THEN 'start' ELSE 'end' END AS kind
  FROM events WHERE type IN {device_types} AND type <> 'desktop.heartbeat'
  UNION ALL
  SELECT account_id, user_id, device_id, at_ms, 0, 0, 'out' FROM marks
), walked AS (
  SELECT *,
    last_value(CASE kind WHEN 'in' THEN 1 WHEN 'out' THEN 0 END IGNORE NULLS) OVER w AS si,
    sum(CASE WHEN kind IN ('out', 'end') THEN 1 ELSE 0 END) OVER w AS grp
  FROM items
  WINDOW w AS (PARTITION BY account_id, user_id, device_id ORDER BY at_ms, prio, seq
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT s.account_id, s.user_id, s.device_id, s.start_ms, e.at_ms AS end_ms
FROM (SELECT account_id, user_id, device_id, grp, min(at_ms) AS start_ms
      FROM walked WHERE kind = 'start' AND si = 1 GROUP BY ALL) AS s
JOIN (SELECT account_id, user_id, device_id, grp - 1 AS grp, at_ms
      FROM walked WHERE kind IN ('out', 'end')) AS e
  USING (account_id, user_id, device_id, grp)
WHERE e.at_ms > s.start_ms
"""

# Portal (per user): a Contact Center view turns the presence on; another view, a portal sign-out or an idle mark
# (last CC view + idle timeout, unless the next CC view comes first) turns it off.
PORTAL_SQL = """
CREATE OR REPLACE TEMP TABLE portal_iv AS
WITH ev AS (
  SELECT account_id, user_id, at_ms, seq, type = 'portal.page_viewed' AND page IN {cc_pages} AS cc
  FROM events WHERE type IN ('portal.page_viewed', 'portal.signed_out')
), marks AS (
  SELECT DISTINCT account_id, user_id, at_ms + {idle} AS at_ms
  FROM (SELECT account_id, user_id, at_ms,
               lead(at_ms) OVER (PARTITION BY account_id, user_id ORDER BY at_ms) AS next_ms
        FROM ev WHERE cc)
  WHERE next_ms IS NULL OR next_ms >= at_ms + {idle}
), items AS (
  SELECT account_id, user_id, at_ms, 1 AS prio, seq, cc AS on_ FROM ev
  UNION ALL
  SELECT account_id, user_id, at_ms, 0, 0, FALSE FROM marks
), walked AS (
  SELECT *, sum(CASE WHEN on_ THEN 0 ELSE 1 END) OVER (
      PARTITION BY account_id, user_id ORDER BY at_ms, prio, seq
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS grp
  FROM items
)
SELECT s.account_id, s.user_id, s.start_ms, e.at_ms AS end_ms
FROM (SELECT account_id, user_id, grp, min(at_ms) AS start_ms FROM walked WHERE on_ GROUP BY ALL) AS s
JOIN (SELECT account_id, user_id, grp - 1 AS grp, at_ms FROM walked WHERE NOT on_) AS e
  USING (account_id, user_id, grp)
WHERE e.at_ms > s.start_ms
"""

# API (per user): requests closer than the activity window chain into one interval [first, last + window). A
# request starts an interval when the one before is at least a window earlier (or there is none) and ends one when
# the next is at least a window later (or there is none); each start pairs with the first end at or after it. One
# sort (lag and lead share their window) instead of two.
API_SQL = """
CREATE OR REPLACE TEMP TABLE api_iv AS
WITH r AS (
  SELECT account_id, user_id, at_ms, lag(at_ms) OVER w AS prev_ms, lead(at_ms) OVER w AS next_ms
  FROM events WHERE type = 'api.request'
  WINDOW w AS (PARTITION BY account_id, user_id ORDER BY at_ms)
), starts AS (
  SELECT account_id, user_id, at_ms FROM r WHERE prev_ms IS NULL OR prev_ms + {window} <= at_ms
), ends AS (
  SELECT account_id, user_id, at_ms FROM r WHERE next_ms IS NULL OR at_ms + {window} <= next_ms
)
SELECT s.account_id, s.user_id, s.at_ms AS start_ms, e.at_ms + {window} AS end_ms
FROM starts AS s ASOF JOIN ends AS e
  ON s.account_id = e.account_id AND s.user_id = e.user_id AND e.at_ms >= s.at_ms
"""

# Counted intervals: per user, the union of all presences, overlapping or touching intervals merged.
USER_INTERVALS_SQL = """
CREATE OR REPLACE TABLE user_intervals AS
WITH p AS (
  SELECT account_id, user_id, start_ms, end_ms FROM desktop_iv
  UNION ALL SELECT account_id, user_id, start_ms, end_ms FROM portal_iv
  UNION ALL SELECT account_id, user_id, start_ms, end_ms FROM api_iv
), flagged AS (
  SELECT *, CASE WHEN max(end_ms) OVER (
      PARTITION BY account_id, user_id ORDER BY start_ms, end_ms
      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) >= start_ms THEN 0 ELSE 1 END AS fresh
  FROM p
)
SELECT account_id, user_id, min(start_ms) AS start_ms, max(end_ms) AS end_ms
FROM (SELECT *, sum(fresh) OVER (PARTITION BY account_id, user_id ORDER BY start_ms, end_ms
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS isl FROM flagged)
GROUP BY account_id, user_id, isl
ORDER BY account_id, user_id, start_ms
"""

# Every presence interval, by kind (device_id for desktop only): who was present how, for a report's peak_users.
PRESENCE_INTERVALS_SQL = """
CREATE OR REPLACE TABLE presence_intervals AS
SELECT * FROM (
  SELECT account_id, user_id, 'desktop' AS kind, device_id, start_ms, end_ms FROM desktop_iv
  UNION ALL SELECT account_id, user_id, 'portal', NULL::VARCHAR, start_ms, end_ms FROM portal_iv
  UNION ALL SELECT account_id, user_id, 'api', NULL::VARCHAR, start_ms, end_ms FROM api_iv
)
ORDER BY account_id, user_id, start_ms, kind, device_id
"""

# Usage after each instant where it changes, with the licenses of the plan in effect then.
USAGE_SQL = """
CREATE OR REPLACE TABLE usage_changes AS
WITH steps AS (
  SELECT account_id, t AS at_ms, sum(d) AS d
  FROM (SELECT account_id, start_ms AS t, 1 AS d FROM user_intervals
        UNION ALL SELECT account_id, end_ms, -1 FROM user_intervals)
  GROUP BY account_id, t HAVING sum(d) <> 0
), usage AS (
  SELECT account_id, at_ms, sum(d) OVER (PARTITION BY account_id ORDER BY at_ms
                                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS usage
  FROM steps
)
SELECT u.account_id, u.at_ms, u.usage::BIGINT AS usage, coalesce(p.licenses, 0) AS licenses
FROM usage AS u ASOF LEFT JOIN plan_at AS p ON u.account_id = p.account_id AND u.at_ms >= p.at_ms
ORDER BY u.account_id, u.at_ms
"""

# The step function cut at usage changes and plan changes: [start_ms, end_ms) with constant usage and plan.
# Only pieces with usage > 0 are kept (nothing else contributes to windows or reports).
SEGMENTS_SQL = """
CREATE OR REPLACE TABLE segments AS
WITH b AS (
  SELECT account_id, at_ms FROM usage_changes UNION SELECT account_id, at_ms FROM plan_at
), cut AS (
  SELECT account_id, at_ms AS start_ms, lead(at_ms) OVER (PARTITION BY account_id ORDER BY at_ms) AS end_ms FROM b
)
SELECT c.account_id, c.start_ms, c.end_ms, u.usage,
       coalesce(p.licenses, 0) AS licenses, coalesce(p.overage_allowance, 0) AS overage_allowance,
       coalesce(p.timezone, 'UTC') AS timezone
FROM cut AS c
ASOF LEFT JOIN usage_changes AS u ON c.account_id = u.account_id AND c.start_ms >= u.at_ms
ASOF LEFT JOIN plan_at AS p ON c.account_id = p.account_id AND c.start_ms >= p.at_ms
WHERE c.end_ms IS NOT NULL AND u.usage > 0
ORDER BY c.account_id, c.start_ms
"""

_WINDOW_AGG = """
  SELECT account_id, kind, ws AS start_ms, we AS end_ms, max(usage) AS max_usage,
         min({'neg': -usage, 't': greatest(start_ms, ws)}).t AS max_at_ms,
         sum(CASE WHEN usage > licenses THEN least(end_ms, we) - greatest(start_ms, ws) ELSE 0 END) AS over_ms,
         sum((least(end_ms, we) - greatest(start_ms, ws)) * usage) AS license_ms
  FROM pieces GROUP BY account_id, kind, ws, we
"""

# Peak windows: fixed kinds are epoch-aligned; `1d` pieces come from the calendar of each segment's timezone
# (`calendar(tz, idx, start_ms, end_ms)`: non-empty local days, idx = days since 1970-01-01 of the local date).
# 1m windows are sparse (SPEC 5): only minutes that hold a change point (a segment boundary: usage changed or a plan
# took effect). Segments are cut at every change point, so a segment meets exactly two such minutes: the one of its
# start, and the one of its end when the end is inside a minute.
WINDOWS_SQL = f"""
CREATE OR REPLACE TABLE peak_windows AS
WITH fixed AS (
  SELECT s.*, k.kind, k.w,
         unnest(generate_series(ccm_fdiv(s.start_ms, k.w) * k.w, ccm_fdiv(s.end_ms - 1, k.w) * k.w, k.w)) AS ws
  FROM segments AS s, {FIXED_KINDS_SQL} AS k(kind, w)
), minutes AS (
  SELECT s.*, '1m' AS kind, 60000::BIGINT AS w, ccm_fdiv(s.start_ms, 60000) * 60000 AS ws FROM segments AS s
  UNION ALL
  SELECT s.*, '1m', 60000::BIGINT, ccm_fdiv(s.end_ms, 60000) * 60000 FROM segments AS s
  WHERE s.end_ms % 60000 <> 0 AND ccm_fdiv(s.end_ms, 60000) <> ccm_fdiv(s.start_ms, 60000)
), fixed_pieces AS (
  SELECT account_id, kind, ws, ws + w AS we, start_ms, end_ms, usage, licenses FROM fixed
  UNION ALL
  SELECT account_id, kind, ws, ws + w AS we, start_ms, end_ms, usage, licenses FROM minutes
), spans AS (
  SELECT s.*, c1.idx AS first_idx, c2.idx AS last_idx
  FROM segments AS s
  ASOF JOIN calendar AS c1 ON s.timezone = c1.tz AND s.start_ms >= c1.start_ms
  ASOF JOIN calendar AS c2 ON s.timezone = c2.tz AND s.end_ms - 1 >= c2.start_ms
), day_pieces AS (
  SELECT x.account_id, '1d' AS kind, c.start_ms AS ws, c.end_ms AS we, x.start_ms, x.end_ms, x.usage, x.licenses
  FROM (SELECT *, unnest(generate_series(first_idx, last_idx)) AS idx FROM spans) AS x
  JOIN calendar AS c ON c.tz = x.timezone AND c.idx = x.idx
), pieces AS (
  SELECT * FROM fixed_pieces UNION ALL SELECT * FROM day_pieces
)
{_WINDOW_AGG}
ORDER BY account_id, kind, start_ms, end_ms
"""


def derive_statements(
    device_timeout_ms: int,
    portal_idle_timeout_ms: int,
    api_activity_window_ms: int,
    late: tuple[int, int] | None = None,
) -> list[str]:
    """The statements, in order, that rebuild everything after `parsed` changed (calendar excepted).

    `late` = `(allowed_lateness_ms, account_idle_lateness_ms)` drops too-late events as a stream would; None counts
    every valid event (a file is the restated view)."""
    lateness, idle = late if late is not None else (0, 0)
    return [
        LATE_SQL.format(enabled="true" if late is not None else "false", lateness=lateness, idle_lateness=idle),
        RANKED_SQL,
        EVENTS_SQL,
        PLANS_SQL,
        DESKTOP_SQL.format(device_types=DEVICE_TYPES_SQL, timeout=device_timeout_ms),
        PORTAL_SQL.format(cc_pages=CC_PAGES, idle=portal_idle_timeout_ms),
        API_SQL.format(window=api_activity_window_ms),
        USER_INTERVALS_SQL,
        PRESENCE_INTERVALS_SQL,
        USAGE_SQL,
        SEGMENTS_SQL,
    ]
