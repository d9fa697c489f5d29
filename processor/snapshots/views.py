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

# The dead letters of each account: the key of the events record they came from (joined by Kafka position), and
# its decoded account_id when that differs.
_LETTER_COLUMNS = (
    "reason, detail, source_topic, source_partition, source_offset, kafka_ts, dead_lettered_at, original_text, original"
)
DEAD_LETTERS_BY_ACCOUNT = f"""
    WITH letters AS (
        SELECT d.reason, d.detail, d.source_topic, d.source_partition, d.source_offset, e.kafka_ts,
               d.kafka_ts AS dead_lettered_at, d.original_text, d.original, e.kafka_key,
               e.account_id AS event_account
        FROM dead_letters d
        LEFT JOIN events e ON e.kafka_partition = d.source_partition AND e.kafka_offset = d.source_offset
    )
    SELECT kafka_key AS account_id, {_LETTER_COLUMNS} FROM letters WHERE kafka_key IS NOT NULL
    UNION ALL
    SELECT event_account AS account_id, {_LETTER_COLUMNS} FROM letters
    WHERE event_account IS NOT NULL AND event_account IS DISTINCT FROM kafka_key"""

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
               overage_allowance, seconds_over_licenses, license_hours, data_through, complete
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
}


def create_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create (or replace) every view of VIEWS, in order."""
    for name, body in VIEWS.items():
        con.execute(f"CREATE OR REPLACE VIEW {name} AS {body}")
