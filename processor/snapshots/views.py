"""SQL views created in every snapshot, for analysts (documented in docs/analysts.md).

Views only read the snapshot's tables, so they work in any DuckDB session that opens the file, whatever its
TimeZone setting: every local time is computed with an explicit `timezone(zone, instant)`.
"""

from __future__ import annotations

import duckdb

# An account's data_through (SPEC 4): the greatest of its horizon records' `data_through` and of the idle floors of
# the events partition of its latest horizon record (the partition moves on while the account is idle).
ACCOUNT_HORIZONS = """
    WITH latest AS (
        SELECT account_id, events_partition
        FROM horizons
        QUALIFY row_number() OVER (PARTITION BY account_id ORDER BY kafka_ts DESC, kafka_partition DESC,
                                   kafka_offset DESC) = 1
    ),
    own AS (SELECT account_id, max(data_through) AS own_horizon, max(watermark) AS watermark
            FROM horizons GROUP BY account_id),
    floors AS (SELECT events_partition, max(idle_floor) AS idle_floor FROM partition_horizons GROUP BY ALL)
    SELECT own.account_id, greatest(own.own_horizon, coalesce(f.idle_floor, own.own_horizon)) AS data_through,
           latest.events_partition, own.own_horizon, f.idle_floor, own.watermark
    FROM own JOIN latest USING (account_id) LEFT JOIN floors f USING (events_partition)
    ORDER BY own.account_id"""

# Every closed minute with usage, up to each account's data_through: the sparse 1m peak windows (minutes in which usage
# changed or a plan took effect, SPEC 5) and the quiet minutes between them, implied by the usage steps: a step
# [a, b) with usage u holds the whole minutes after a's minute that end by b; level u, max at the minute's start,
# licenses of the plan in effect then. Minutes with an explicit window (a plan change) are not implied again.
MINUTE_USAGE = """
    WITH steps AS (
        SELECT s.account_id, s.usage, epoch_ms(s.start_at) AS a,
               epoch_ms(coalesce(least(s.end_at, h.data_through), s.end_at, h.data_through)) AS b
        FROM usage_steps s LEFT JOIN account_horizons h USING (account_id)
        WHERE s.usage > 0
    ),
    quiet AS (
        SELECT account_id, usage,
               to_timestamp(unnest(generate_series((a // 60000 + 1) * 60000, b - 60000, 60000)) // 1000) AS start_at
        FROM steps WHERE b IS NOT NULL AND b - 60000 >= (a // 60000 + 1) * 60000
    ),
    implied AS (
        SELECT q.account_id, q.start_at, q.start_at + INTERVAL 1 MINUTE AS end_at, q.usage AS max_usage,
               q.start_at AS max_at,
               CASE WHEN q.usage > coalesce(p.licenses, 0) THEN 60.0 ELSE 0.0 END AS seconds_over_licenses,
               60.0 * q.usage AS license_seconds, coalesce(p.licenses, 0) AS licenses, false AS changed
        FROM quiet q
        ASOF LEFT JOIN plans p ON q.account_id = p.account_id AND q.start_at >= p.effective_at
        ANTI JOIN (SELECT account_id, start_at FROM peak_windows WHERE kind = '1m') w
            ON w.account_id = q.account_id AND w.start_at = q.start_at
    )
    SELECT w.account_id, w.start_at, w.end_at, w.max_usage, w.max_at, w.seconds_over_licenses, w.license_seconds,
           coalesce(p.licenses, 0) AS licenses, true AS changed
    FROM peak_windows w
    ASOF LEFT JOIN plans p ON w.account_id = p.account_id AND w.start_at >= p.effective_at
    LEFT JOIN account_horizons h ON h.account_id = w.account_id
    WHERE w.kind = '1m' AND (h.data_through IS NULL OR w.end_at <= h.data_through)
    UNION ALL SELECT * FROM implied"""

# The dead letters of each account: the key of the events record they came from (joined by Kafka position), and
# its decoded account_id when that differs.
_LETTER_COLUMNS = (
    "reason, detail, source_topic, source_partition, source_offset, kafka_ts, dead_lettered_at, original_text, "
    "original, original_size, original_sha256"
)
DEAD_LETTERS_BY_ACCOUNT = f"""
    WITH letters AS (
        SELECT d.reason, d.detail, d.source_topic, d.source_partition, d.source_offset, e.kafka_ts,
               d.kafka_ts AS dead_lettered_at, d.original_text, d.original, d.original_size, d.original_sha256,
               e.kafka_key,
               e.account_id AS event_account
        FROM dead_letters d
        LEFT JOIN events e ON e.kafka_partition = d.source_partition AND e.kafka_offset = d.source_offset
    )
    SELECT kafka_key AS account_id, {_LETTER_COLUMNS} FROM letters WHERE kafka_key IS NOT NULL
    UNION ALL
    SELECT event_account AS account_id, {_LETTER_COLUMNS} FROM letters
    WHERE event_account IS NOT NULL AND event_account IS DISTINCT FROM kafka_key"""

# Per billing period and user: the user's counted time (user_intervals) inside the period's local days, up to the
# account's data_through (as the report counts it), in hours; the users' hours add up to the period's license_hours.
# Durations are epoch_ms differences: a TIMESTAMPTZ difference is a calendar interval in the session's TimeZone,
# which loses or gains an hour across a DST change.
USER_LICENSE_HOURS = """
    WITH periods AS (
        SELECT account_id, period_from, period_to, is_current, complete, license_hours AS period_license_hours,
               timezone(timezone, period_from::TIMESTAMP) AS start_at,
               least(timezone(timezone, (period_to + 1)::TIMESTAMP), data_through) AS end_at
        FROM billing_periods
    ),
    clipped AS (
        SELECT p.account_id, p.period_from, p.period_to, p.is_current, p.complete, p.period_license_hours,
               i.user_id,
               (epoch_ms(least(coalesce(i.end_at, p.end_at), p.end_at)) - epoch_ms(greatest(i.start_at, p.start_at)))
                   / 1000 AS seconds
        FROM periods p JOIN user_intervals i USING (account_id)
        WHERE i.start_at < p.end_at AND coalesce(i.end_at, p.end_at) > p.start_at
    )
    SELECT account_id, period_from, period_to, is_current, complete, user_id,
           sum(seconds) / 3600 AS license_hours,
           CASE WHEN any_value(period_license_hours) > 0
                THEN sum(seconds) / 3600 / any_value(period_license_hours) END AS share,
           rank() OVER (PARTITION BY account_id, period_from ORDER BY sum(seconds) DESC) AS rank
    FROM clipped
    GROUP BY account_id, period_from, period_to, is_current, complete, user_id"""

# `users_at(account, instant)`: the users counted at one instant (as `peak_users` of a report), each with the
# presences active then; nothing at or after the account's data_through (nothing is known there).
USERS_AT = """
    WITH counted AS (
        SELECT user_id, min(start_at) AS counted_since
        FROM user_intervals
        WHERE account_id = account AND start_at <= CAST(instant AS TIMESTAMPTZ)
          AND (end_at IS NULL OR CAST(instant AS TIMESTAMPTZ) < end_at)
          AND CAST(instant AS TIMESTAMPTZ) < (SELECT data_through FROM account_horizons h WHERE h.account_id = account)
        GROUP BY user_id
    ),
    active AS (
        SELECT user_id, kind, device_id
        FROM presence_intervals
        WHERE account_id = account AND start_at <= CAST(instant AS TIMESTAMPTZ)
          AND (end_at IS NULL OR CAST(instant AS TIMESTAMPTZ) < end_at)
    )
    SELECT c.user_id, c.counted_since,
           coalesce(list_sort(list_distinct(list(a.device_id) FILTER (WHERE a.kind = 'desktop'))), []::VARCHAR[])
               AS devices,
           coalesce(bool_or(a.kind = 'portal'), false) AS portal,
           coalesce(bool_or(a.kind = 'api'), false) AS api
    FROM counted c LEFT JOIN active a USING (user_id)
    GROUP BY c.user_id, c.counted_since
    ORDER BY c.user_id"""
MACROS: dict[str, tuple[str, str]] = {  # name: (parameters, body)
    "users_at": ("account, instant", USERS_AT),
}
MACRO_COMMENTS: dict[str, str] = {
    "users_at": "Table macro users_at(account, instant): the users counted at that instant, with their presences.",
}

# The timezone of the plan in effect at an instant: ASOF joins on `plans` (before the first plan: UTC).
VIEWS: dict[str, str] = {
    "snapshot_offsets": """
        SELECT o.topic_key, o.topic, o.partition, o.next_offset, w.watermark
        FROM (SELECT unnest(offsets, recursive := true) FROM snapshot_info) AS o
        LEFT JOIN (SELECT unnest(watermarks, recursive := true) FROM snapshot_info) AS w
          ON o.topic_key = 'events' AND w.partition = o.partition
        ORDER BY o.topic_key, o.partition""",
    "account_horizons": ACCOUNT_HORIZONS,
    "latest_plans": """
        SELECT account_id, effective_at AS since, licenses, overage_allowance, billing_anchor_day, timezone,
               grace_minutes, grace_mode
        FROM plans
        QUALIFY row_number() OVER (PARTITION BY account_id ORDER BY effective_at DESC, kafka_partition DESC,
                                   kafka_offset DESC) = 1""",
    "accounts": """
        WITH ids AS (
            SELECT account_id FROM events WHERE rejection IS NULL
            UNION SELECT account_id FROM usage_changes
            UNION SELECT account_id FROM plans
        ),
        ev AS (
            SELECT account_id, count(*) AS events, min(occurred_at) AS first_event_at,
                   max(occurred_at) AS last_event_at, count(DISTINCT user_id) AS users, any_value(kafka_partition)
                   AS kafka_partition
            FROM events WHERE rejection IS NULL GROUP BY account_id
        )
        SELECT ids.account_id, coalesce(ev.events, 0) AS events, ev.users, ev.first_event_at, ev.last_event_at,
               ev.kafka_partition, coalesce(p.licenses, 0) AS licenses, coalesce(p.overage_allowance, 0)
               AS overage_allowance, coalesce(p.billing_anchor_day, 1) AS billing_anchor_day,
               coalesce(p.timezone, 'UTC') AS timezone
        FROM ids LEFT JOIN ev USING (account_id) LEFT JOIN latest_plans p USING (account_id)
        ORDER BY ids.account_id""",
    "usage_steps": """
        SELECT account_id, changed_at AS start_at,
               lead(changed_at) OVER (PARTITION BY account_id ORDER BY changed_at, kafka_partition, kafka_offset)
               AS end_at,
               usage, licenses, greatest(usage - licenses, 0) AS excess
        FROM usage_changes""",
    "minute_usage": MINUTE_USAGE,
    "current_usage": """
        SELECT s.account_id, s.start_at AS since, s.usage, coalesce(p.licenses, 0) AS licenses,
               coalesce(p.overage_allowance, 0) AS overage_allowance,
               coalesce(p.licenses, 0) - s.usage AS headroom
        FROM usage_steps s LEFT JOIN latest_plans p USING (account_id)
        WHERE s.end_at IS NULL
        ORDER BY s.account_id""",
    "daily_peaks": """
        SELECT w.account_id,
               CAST(timezone(coalesce(p.timezone, 'UTC'), w.start_at) AS DATE) AS date,
               coalesce(p.timezone, 'UTC') AS timezone,
               w.start_at AS day_start, w.end_at AS day_end, w.max_usage, w.max_at,
               coalesce(p.licenses, 0) AS licenses,
               greatest(w.max_usage - coalesce(p.licenses, 0), 0) AS peak_excess,
               w.seconds_over_licenses, w.license_seconds / 3600 AS license_hours
        FROM peak_windows w
        ASOF LEFT JOIN plans p ON w.account_id = p.account_id AND w.start_at >= p.effective_at
        WHERE w.kind = '1d'""",
    "hourly_heatmap": """
        WITH h AS (
            SELECT w.account_id, coalesce(p.timezone, 'UTC') AS timezone, w.max_usage,
                   timezone(coalesce(p.timezone, 'UTC'), w.start_at) AS local_start
            FROM peak_windows w
            ASOF LEFT JOIN plans p ON w.account_id = p.account_id AND w.start_at >= p.effective_at
            WHERE w.kind = '1h'
        )
        SELECT account_id, timezone, isodow(local_start) AS weekday, dayname(local_start) AS weekday_name,
               hour(local_start) AS local_hour, max(max_usage) AS max_usage, avg(max_usage) AS avg_peak,
               count(*) AS active_hours
        FROM h GROUP BY ALL""",
    "hourly_heatmap_utc": """
        SELECT account_id, isodow(timezone('UTC', start_at)) AS weekday,
               dayname(timezone('UTC', start_at)) AS weekday_name, hour(timezone('UTC', start_at)) AS utc_hour,
               max(max_usage) AS max_usage, avg(max_usage) AS avg_peak, count(*) AS active_hours
        FROM peak_windows WHERE kind = '1h' GROUP BY ALL""",
    "top_accounts_by_overage": """
        SELECT rank() OVER (ORDER BY billable_overage DESC, over_allowance DESC) AS rank,
               account_id, period_from, period_to, billable_overage, over_allowance, peak_usage, licenses,
               overage_allowance, seconds_over_licenses, license_hours, data_through, complete, restated
        FROM billing_periods
        WHERE is_current
        ORDER BY billable_overage DESC, over_allowance DESC, peak_usage DESC, account_id""",
    "alert_history": """
        SELECT r.alert_id, r.account_id, r.kind, r.alert_at AS raised_at, s.alert_at AS resolved_at,
               s.alert_at - r.alert_at AS duration, r.usage AS usage_at_raise, r.licenses, r.overage_allowance,
               r.message
        FROM alerts r
        LEFT JOIN alerts s ON s.alert_id = r.alert_id AND s.state = 'resolved'
        WHERE r.state = 'raised'""",
    "open_alerts": """
        SELECT alert_id, account_id, kind, raised_at, usage_at_raise, licenses, overage_allowance, message
        FROM alert_history WHERE resolved_at IS NULL""",
    "dead_letter_summary": """
        SELECT reason, count(*) AS records, min(kafka_ts) AS first_at, max(kafka_ts) AS last_at
        FROM dead_letters GROUP BY reason ORDER BY records DESC, reason""",
    "dead_letters_by_account": DEAD_LETTERS_BY_ACCOUNT,
    "event_counts_daily": """
        SELECT account_id, CAST(timezone('UTC', occurred_at) AS DATE) AS utc_date, type, count(*) AS events
        FROM events WHERE rejection IS NULL GROUP BY ALL""",
    "user_license_hours": USER_LICENSE_HOURS,
}

# Descriptions written into every snapshot (`COMMENT ON`), from docs/analysts.md; columns not named here take the
# description of the same column name in tables.COLUMN_COMMENTS (or of the billing tables).
VIEW_COMMENTS: dict[str, str] = {
    "snapshot_offsets": "The snapshot's cut as rows: the next Kafka offset per topic and partition.",
    "account_horizons": "Per account: its data_through and what it is made of (own horizon, partition idle floor).",
    "latest_plans": "The plan in effect now, per account.",
    "accounts": "Every account with its event count, users, first and last event and current plan.",
    "usage_steps": "The usage step function of each account: one row per step, the last one open.",
    "minute_usage": "Every minute with usage up to data_through: the 1m peak windows and the quiet minutes implied.",
    "current_usage": "Usage at the snapshot's cut, licenses and headroom per account.",
    "daily_peaks": "Per account-local day (from the 1d peak windows): peak, excess, time over licenses, license hours.",
    "hourly_heatmap": "Per account, local weekday and local hour: peaks of the hours with usage.",
    "hourly_heatmap_utc": "Per account, UTC weekday and UTC hour: peaks of the hours with usage.",
    "top_accounts_by_overage": "The current billing period of every account, ranked by billable overage.",
    "alert_history": "Each alert with when it was raised and resolved and how long it lasted.",
    "open_alerts": "Alerts raised and not resolved yet.",
    "dead_letter_summary": "Dead letters counted by reason.",
    "dead_letters_by_account": "Each dead letter under the account that keyed its events record (and the decoded one).",
    "event_counts_daily": "Valid events per account, UTC date and type.",
    "user_license_hours": "Per billing period and user: license hours the user consumed (who used the most).",
}
VIEW_COLUMN_COMMENTS: dict[str, dict[str, str]] = {
    "snapshot_offsets": {
        "topic_key": "Logical topic: events, usage-changes, peak-windows, alerts, dead-letters or intervals.",
        "topic": "Kafka topic name (with the deployment's prefix).",
        "partition": "Kafka partition.",
        "next_offset": "The snapshot holds every record of the partition below this offset and nothing else.",
        "watermark": "Event-time watermark of the events partition at the cut (events topic only).",
    },
    "account_horizons": {
        "events_partition": "The events partition of the account's latest horizon record.",
        "own_horizon": "The largest data_through of the account's own horizon records.",
        "idle_floor": "The latest idle floor of that partition.",
        "watermark": "The account's latest event time.",
    },
    "latest_plans": {"since": "Instant the plan took effect."},
    "minute_usage": {
        "start_at": "Start of the UTC minute.",
        "max_usage": "Peak usage in the minute (a quiet minute: the level of the last change).",
        "max_at": "First instant the peak was reached (a quiet minute: its start).",
        "seconds_over_licenses": "Seconds of the minute with usage above the licenses.",
        "license_seconds": "Usage integrated over the minute, in user-seconds.",
        "licenses": "Licenses of the plan in effect at the minute's start.",
        "changed": "True for a minute with a 1m peak window (usage changed or a plan took effect in it).",
    },
    "accounts": {
        "events": "Valid events of the account.",
        "users": "Distinct user ids in the account's valid events.",
        "first_event_at": "Earliest occurred_at of the account's valid events.",
        "last_event_at": "Latest occurred_at of the account's valid events.",
        "kafka_partition": "The events partition the account's records are on.",
        "licenses": "Licenses of the current plan (0 without a plan).",
    },
    "usage_steps": {
        "start_at": "Instant the step starts (a usage change).",
        "end_at": "Instant of the next change; NULL for the last step.",
        "usage": "Distinct users counted during the step.",
        "licenses": "Licenses in effect during the step.",
        "excess": "Users above the licenses during the step (0 when not over).",
    },
    "current_usage": {
        "since": "Instant of the account's latest usage change.",
        "usage": "Distinct users counted at the cut.",
        "licenses": "Licenses of the current plan.",
        "overage_allowance": "Overage allowance of the current plan.",
        "headroom": "Licenses minus usage (negative when over).",
    },
    "daily_peaks": {
        "date": "The account-local date.",
        "timezone": "Timezone of the plan in effect at the day's start.",
        "day_start": "Start of the local day (UTC instant).",
        "day_end": "End of the local day (UTC instant, exclusive).",
        "max_usage": "Peak usage of the day.",
        "max_at": "First instant the day's peak was reached.",
        "licenses": "Licenses of the plan in effect at the day's start.",
        "peak_excess": "Users above the licenses at the day's peak.",
        "license_hours": "Integral of usage over the day, in hours.",
    },
    "hourly_heatmap": {
        "timezone": "Timezone of the plan in effect at each hour's start.",
        "weekday": "Local ISO weekday (1 = Monday).",
        "weekday_name": "Local weekday name.",
        "local_hour": "Local hour of the day (0..23).",
        "max_usage": "Largest hourly peak.",
        "avg_peak": "Average hourly peak over the hours with usage.",
        "active_hours": "Hours with usage.",
    },
    "hourly_heatmap_utc": {
        "weekday": "UTC ISO weekday (1 = Monday).",
        "weekday_name": "UTC weekday name.",
        "utc_hour": "UTC hour of the day (0..23).",
        "max_usage": "Largest hourly peak.",
        "avg_peak": "Average hourly peak over the hours with usage.",
        "active_hours": "Hours with usage.",
    },
    "top_accounts_by_overage": {"rank": "Rank by billable overage, then over allowance (1 = most)."},
    "alert_history": {
        "kind": "near_capacity, over_licenses, over_grace or over_allowance.",
        "raised_at": "Instant the alert was raised.",
        "resolved_at": "Instant it was resolved; NULL while open.",
        "duration": "How long it was raised; NULL while open.",
        "usage_at_raise": "Usage when it was raised.",
        "licenses": "Licenses in effect when it was raised.",
        "overage_allowance": "Overage allowance in effect when it was raised.",
    },
    "open_alerts": {
        "kind": "near_capacity, over_licenses, over_grace or over_allowance.",
        "raised_at": "Instant the alert was raised.",
        "usage_at_raise": "Usage when it was raised.",
        "licenses": "Licenses in effect when it was raised.",
        "overage_allowance": "Overage allowance in effect when it was raised.",
    },
    "dead_letter_summary": {
        "records": "Dead letters with this reason.",
        "first_at": "Kafka timestamp of the first of them.",
        "last_at": "Kafka timestamp of the last of them.",
    },
    "dead_letters_by_account": {
        "account_id": "The account that keyed the events record, or the account_id it decoded to.",
        "kafka_ts": "Kafka timestamp of the original events record (when it was published).",
        "dead_lettered_at": "Kafka timestamp of the dead letter.",
    },
    "event_counts_daily": {"utc_date": "UTC date of occurred_at.", "events": "Valid events."},
    "user_license_hours": {
        "license_hours": "Hours the user was counted in the period, up to data_through.",
        "share": "The user's part of the period's license_hours (0..1; NULL when the period has none).",
        "rank": "Rank by license hours within the account's period (1 = the most).",
    },
}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create (or replace) every view of VIEWS, in order, then the table macros of MACROS with their descriptions."""
    for name, body in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {body}")
    for name, (parameters, body) in MACROS.items():
        con.execute(f"CREATE OR REPLACE MACRO {name}({parameters}) AS TABLE {body}")
        comment = MACRO_COMMENTS[name].replace("'", "''")
        con.execute(f"COMMENT ON MACRO TABLE {name} IS '{comment}'")
