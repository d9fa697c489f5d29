"""The sink's tables: Arrow schemas of the Parquet files and the rows of each Kafka record.

Every row keeps where it came from (`kafka_partition`, `kafka_offset`, `kafka_ts`). Column names avoid SQL keywords:
the records' `at` is `changed_at` (usage changes), `alert_at` (alerts) or `effective_at` (plans); `start`/`end` are
`start_at`/`end_at`. Timestamps are stored as
`timestamp[ms, UTC]` (DuckDB reads them as TIMESTAMPTZ). Each row also has a `date` (UTC) that picks its
`date=YYYY-MM-DD` directory: the event's `occurred_at` (else the Kafka timestamp), the output's `at` / `start`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import Any

import pyarrow as pa

from processor import deadletters
from processor.topics import ALERTS, DEAD_LETTERS, EVENTS, INTERVALS, PEAK_WINDOWS, USAGE_CHANGES
from schemas.events import EPOCH, ONE_MS, Rejection, decode, from_ms

TS = pa.timestamp("ms", tz="UTC")
_SOURCE: list[tuple[str, pa.DataType]] = [
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("kafka_ts", TS),
]

Row = dict[str, Any]
PRESENCE_KINDS: tuple[str, ...] = ("desktop", "portal", "api")


@dataclass(frozen=True)
class Table:
    """One table of the sink: its name (= directory), source topic (logical key), schema and row id columns."""

    name: str
    topic: str
    schema: pa.Schema
    ids: tuple[str, ...]  # columns that identify a row for deduplication (besides the Kafka position)
    time_column: str | None  # the column whose UTC date partitions the files (None: the Kafka timestamp)


def _schema(*fields: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([*_SOURCE, *fields])


EVENTS_TABLE = Table(
    "events",
    EVENTS,
    _schema(
        ("kafka_key", pa.string()),
        ("account_id", pa.string()),
        ("event_id", pa.string()),
        ("type", pa.string()),
        ("occurred_at", TS),
        ("user_id", pa.string()),
        ("device_id", pa.string()),
        ("page", pa.string()),
        ("endpoint", pa.string()),
        ("licenses", pa.int64()),
        ("overage_allowance", pa.int64()),
        ("billing_anchor_day", pa.int32()),
        ("timezone", pa.string()),
        ("grace_minutes", pa.int64()),
        ("grace_mode", pa.string()),
        ("schema_version", pa.int64()),
        ("rejection", pa.string()),
        ("rejection_detail", pa.string()),
        ("raw", pa.string()),
        ("raw_bytes", pa.binary()),
    ),
    (),
    "occurred_at",
)
USAGE_CHANGES_TABLE = Table(
    "usage_changes",
    USAGE_CHANGES,
    _schema(
        ("change_id", pa.string()),
        ("account_id", pa.string()),
        ("changed_at", TS),
        ("usage", pa.int64()),
        ("licenses", pa.int64()),
    ),
    ("change_id",),
    "changed_at",
)
PEAK_WINDOWS_TABLE = Table(
    "peak_windows",
    PEAK_WINDOWS,
    _schema(
        ("window_id", pa.string()),
        ("account_id", pa.string()),
        ("kind", pa.string()),
        ("start_at", TS),
        ("end_at", TS),
        ("max_usage", pa.int64()),
        ("max_at", TS),
        ("seconds_over_licenses", pa.float64()),
        ("license_seconds", pa.float64()),
    ),
    ("window_id",),
    "start_at",
)
ALERTS_TABLE = Table(
    "alerts",
    ALERTS,
    _schema(
        ("alert_id", pa.string()),
        ("account_id", pa.string()),
        ("kind", pa.string()),
        ("state", pa.string()),
        ("alert_at", TS),
        ("usage", pa.int64()),
        ("licenses", pa.int64()),
        ("overage_allowance", pa.int64()),
        ("message", pa.string()),
    ),
    ("alert_id", "state"),
    "alert_at",
)
DEAD_LETTERS_TABLE = Table(
    "dead_letters",
    DEAD_LETTERS,
    _schema(
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("original", pa.binary()),
        ("original_text", pa.string()),
        ("source_topic", pa.string()),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("source_line", pa.int64()),
        ("original_size", pa.int64()),
        ("original_sha256", pa.string()),
        ("source_timestamp", TS),
    ),
    ("source_topic", "source_partition", "source_offset"),
    None,
)
USER_INTERVALS_TABLE = Table(
    "user_intervals",
    INTERVALS,
    _schema(
        ("interval_id", pa.string()),
        ("account_id", pa.string()),
        ("user_id", pa.string()),
        ("start_at", TS),
        ("end_at", TS),
    ),
    ("interval_id",),
    "start_at",
)
PRESENCE_INTERVALS_TABLE = Table(
    "presence_intervals",
    INTERVALS,
    _schema(
        ("interval_id", pa.string()),
        ("account_id", pa.string()),
        ("user_id", pa.string()),
        ("kind", pa.string()),
        ("device_id", pa.string()),
        ("start_at", TS),
        ("end_at", TS),
    ),
    ("interval_id",),
    "start_at",
)
HORIZONS_TABLE = Table(
    "horizons",
    INTERVALS,
    _schema(
        ("account_id", pa.string()),
        ("events_partition", pa.int32()),
        ("data_through", TS),
        ("watermark", TS),
    ),
    ("account_id", "events_partition", "data_through", "watermark"),
    "data_through",
)
PARTITION_HORIZONS_TABLE = Table(
    "partition_horizons",
    INTERVALS,
    _schema(
        ("events_partition", pa.int32()),
        ("idle_floor", TS),
    ),
    ("events_partition", "idle_floor"),
    "idle_floor",
)
PLANS_TABLE = Table(
    "plans",
    INTERVALS,
    _schema(
        ("plan_id", pa.string()),
        ("account_id", pa.string()),
        ("effective_at", TS),
        ("licenses", pa.int64()),
        ("overage_allowance", pa.int64()),
        ("billing_anchor_day", pa.int32()),
        ("timezone", pa.string()),
        ("grace_minutes", pa.int64()),
        ("grace_mode", pa.string()),
    ),
    ("plan_id",),
    "effective_at",
)

TABLES: tuple[Table, ...] = (
    EVENTS_TABLE,
    USAGE_CHANGES_TABLE,
    PEAK_WINDOWS_TABLE,
    ALERTS_TABLE,
    DEAD_LETTERS_TABLE,
    USER_INTERVALS_TABLE,
    PLANS_TABLE,
    PRESENCE_INTERVALS_TABLE,
    HORIZONS_TABLE,
    PARTITION_HORIZONS_TABLE,
)
TABLES_BY_NAME: dict[str, Table] = {table.name: table for table in TABLES}
TOPIC_KEYS: tuple[str, ...] = (EVENTS, USAGE_CHANGES, PEAK_WINDOWS, ALERTS, DEAD_LETTERS, INTERVALS)


class BadRecord(ValueError):
    """An output record that is not the JSON object its topic carries."""


def ts_ms(text: Any) -> int:
    """Milliseconds of an RFC 3339 timestamp of an output record."""
    if not isinstance(text, str):
        raise BadRecord(f"expected a timestamp, got {text!r}")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise BadRecord(f"bad timestamp {text!r}") from exc
    if moment.tzinfo is None:
        raise BadRecord(f"timestamp without offset {text!r}")
    return (moment - EPOCH) // ONE_MS


def utc_date(ms: int) -> str:
    """YYYY-MM-DD (UTC) of an instant."""
    day = from_ms(ms).date()
    return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"


def _source(partition: int, offset: int, timestamp_ms: int) -> Row:
    return {"kafka_partition": partition, "kafka_offset": offset, "kafka_ts": timestamp_ms}


def event_row(partition: int, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None) -> Row:
    """The `events` row of one record of the events topic: raw text kept, fields filled where it decodes."""
    raw = value or b""
    row = _source(partition, offset, timestamp_ms)
    row["kafka_key"] = key.decode("utf-8", "replace") if key is not None else None
    try:
        row["raw"], row["raw_bytes"] = raw.decode("utf-8"), None
    except UnicodeDecodeError:
        row["raw"], row["raw_bytes"] = raw.decode("utf-8", "replace"), raw
    decoded = decode(raw)
    row["rejection"] = row["rejection_detail"] = None
    if isinstance(decoded, Rejection):
        row["rejection"], row["rejection_detail"] = decoded.reason, decoded.detail
        return row
    row.update(decoded.model_dump(exclude={"occurred_at"}))
    row["occurred_at"] = decoded.at_ms
    return row


def _require(record: dict[str, Any], *names: str) -> None:
    missing = [name for name in names if record.get(name) is None]
    if missing:
        raise BadRecord(f"missing {', '.join(missing)}")


def _usage_change(record: dict[str, Any]) -> tuple[Table, Row]:
    _require(record, "change_id", "account_id", "at", "usage", "licenses")
    row = {name: record[name] for name in ("change_id", "account_id", "usage", "licenses")}
    row["changed_at"] = ts_ms(record["at"])
    return USAGE_CHANGES_TABLE, row


def _peak_window(record: dict[str, Any]) -> tuple[Table, Row]:
    _require(record, "window_id", "account_id", "kind", "start", "end", "max_usage", "max_at")
    row = {name: record.get(name) for name in ("window_id", "account_id", "kind", "max_usage")}
    row["seconds_over_licenses"] = record.get("seconds_over_licenses")
    row["license_seconds"] = record.get("license_seconds")
    row["start_at"], row["end_at"], row["max_at"] = (ts_ms(record[k]) for k in ("start", "end", "max_at"))
    return PEAK_WINDOWS_TABLE, row


def _alert(record: dict[str, Any]) -> tuple[Table, Row]:
    _require(record, "alert_id", "account_id", "kind", "state", "at")
    names = ("alert_id", "account_id", "kind", "state", "usage", "licenses", "overage_allowance", "message")
    row = {name: record.get(name) for name in names}
    row["alert_at"] = ts_ms(record["at"])
    return ALERTS_TABLE, row


def dead_letter_row(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()) -> Row:
    """The `dead_letters` row of a dead-letter record of either format (processor/deadletters.py)."""
    try:
        letter = deadletters.read(key, value, headers)
    except deadletters.BadLetter as exc:
        raise BadRecord(str(exc)) from exc
    original = letter["original"]
    try:
        text = None if original is None else original.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    digest = letter["sha256"]
    if digest is None and original is not None:
        digest = sha256(original).hexdigest()
    return {
        "reason": letter["reason"],
        "detail": letter["detail"],
        "original": original,
        "original_text": text,
        "source_topic": letter["topic"],
        "source_partition": letter["partition"],
        "source_offset": letter["offset"],
        "source_line": letter["line"],
        "original_size": letter["size"],
        "original_sha256": digest,
        "source_timestamp": letter["timestamp"],
    }


def _text(record: dict[str, Any], name: str, *, optional: bool = False) -> str | None:
    value = record.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise BadRecord(f"{name} must be a non-empty string, got {value!r}")
    return value


def _partition(record: dict[str, Any]) -> int:
    value = record.get("partition")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        raise BadRecord(f"partition must be a partition number, got {value!r}")
    return value


def _presence_interval(record: dict[str, Any]) -> tuple[Table, Row]:
    _require(record, "interval_id", "account_id", "user_id", "kind", "start")
    if record["kind"] not in PRESENCE_KINDS:
        raise BadRecord(f"presence kind must be one of {', '.join(PRESENCE_KINDS)}, got {record['kind']!r}")
    row: Row = {name: _text(record, name) for name in ("interval_id", "account_id", "user_id", "kind")}
    row["device_id"] = _text(record, "device_id", optional=True)
    end = record.get("end")  # None while the presence is open; its closed copy (same id) supersedes it
    row["start_at"], row["end_at"] = ts_ms(record["start"]), None if end is None else ts_ms(end)
    return PRESENCE_INTERVALS_TABLE, row


def _horizon(record: dict[str, Any]) -> tuple[Table, Row]:
    _require(record, "account_id", "partition", "data_through")
    watermark = record.get("watermark")
    return HORIZONS_TABLE, {
        "account_id": _text(record, "account_id"),
        "events_partition": _partition(record),
        "data_through": ts_ms(record["data_through"]),
        "watermark": None if watermark is None else ts_ms(watermark),
    }


def _partition_horizon(record: dict[str, Any]) -> tuple[Table, Row]:
    _require(record, "partition", "idle_floor")
    return PARTITION_HORIZONS_TABLE, {"events_partition": _partition(record), "idle_floor": ts_ms(record["idle_floor"])}


def _interval_or_plan(record: dict[str, Any]) -> tuple[Table, Row]:
    kind = record.get("record")
    parser = _INTERVALS_RECORDS.get(kind) if isinstance(kind, str) else None
    if parser is not None:
        return parser(record)
    if kind == "user_interval":
        _require(record, "interval_id", "account_id", "user_id", "start")
        row = {name: record[name] for name in ("interval_id", "account_id", "user_id")}
        end = record.get("end")  # None while the interval is open; its closed copy (same id) supersedes it
        row["start_at"], row["end_at"] = ts_ms(record["start"]), None if end is None else ts_ms(end)
        return USER_INTERVALS_TABLE, row
    if kind == "plan":
        names = ("plan_id", "account_id", "licenses", "overage_allowance", "billing_anchor_day", "timezone")
        _require(record, *names, "at")
        row = {name: record[name] for name in names}
        row["grace_minutes"] = record.get("grace_minutes", 30)
        row["grace_mode"] = record.get("grace_mode", "contiguous")
        row["effective_at"] = ts_ms(record["at"])
        return PLANS_TABLE, row
    raise BadRecord(f"unknown intervals record {kind!r}")


_INTERVALS_RECORDS: dict[str, Callable[[dict[str, Any]], tuple[Table, Row]]] = {
    "presence_interval": _presence_interval,
    "horizon": _horizon,
    "partition_horizon": _partition_horizon,
}
_OUTPUT_PARSERS: dict[str, Callable[[dict[str, Any]], tuple[Table, Row]]] = {
    USAGE_CHANGES: _usage_change,
    PEAK_WINDOWS: _peak_window,
    ALERTS: _alert,
    INTERVALS: _interval_or_plan,
}


def output_row(
    topic_key: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    value: bytes | None,
    key: bytes | None = None,
    headers: Sequence[tuple[str, bytes]] = (),
) -> tuple[Table, Row]:
    """The table and row of one output record; raises BadRecord when it is not what the topic carries (`key` and
    `headers` are read for dead letters only)."""
    if topic_key == DEAD_LETTERS:
        row = dead_letter_row(key, value, headers)
        row.update(_source(partition, offset, timestamp_ms))
        return DEAD_LETTERS_TABLE, row
    try:
        record = json.loads(value or b"")
    except ValueError as exc:
        raise BadRecord("not JSON") from exc
    if not isinstance(record, dict):
        raise BadRecord("not a JSON object")
    try:
        table, row = _OUTPUT_PARSERS[topic_key](record)
    except (TypeError, KeyError) as exc:
        raise BadRecord(f"unexpected shape: {exc!r}") from exc
    row.update(_source(partition, offset, timestamp_ms))
    return table, row


def row_date(table: Table, row: Row) -> str:
    """The UTC date directory of a row: its time column, else its Kafka timestamp."""
    at = row.get(table.time_column) if table.time_column else None
    return utc_date(at if at is not None else row["kafka_ts"])


def arrow_table(table: Table, rows: list[Row]) -> pa.Table:
    """Rows as an Arrow table of the table's schema (missing columns are null)."""
    return pa.Table.from_pylist(rows, schema=table.schema)


# Descriptions written into every snapshot (`COMMENT ON`), from docs/analysts.md and SPEC.md.
TABLE_COMMENTS: dict[str, str] = {
    "events": "Every record of the events topic once (by Kafka position), valid or not; rejection says why not.",
    "usage_changes": "One row per change of an account's usage (distinct users counted), deduplicated by change_id.",
    "peak_windows": "Closed windows (1m, 15m, 1h, account-local 1d) in which someone was counted, by window_id.",
    "alerts": "Alert transitions (raised, resolved) of each account, by alert_id and state.",
    "dead_letters": "Input the processor did not apply, with the original bytes (or, too_large, their size and "
    "SHA-256) and the reason.",
    "user_intervals": "Half-open times during which a user was counted (the closed copy kept, by interval_id).",
    "presence_intervals": "Half-open times during which one presence (desktop device, portal, api) was active.",
    "horizons": "Horizon records of the processor: how far each account was known when the record was written.",
    "partition_horizons": "Idle floor records of each events partition: idle accounts are known up to it.",
    "plans": "Plans taking effect (account.plan_changed), by plan_id; a plan holds until the account's next one.",
}
COLUMN_COMMENTS: dict[str, str] = {
    "kafka_partition": "Kafka partition of the record this row came from.",
    "kafka_offset": "Kafka offset of the record this row came from (unique within its partition).",
    "kafka_ts": "Kafka timestamp of the record this row came from (when it was published).",
    "kafka_key": "Kafka key of the events record (the producer's account_id); NULL when keyless.",
    "account_id": "The contact-center account.",
    "event_id": "Event id, unique per account; a second copy of an event changes nothing.",
    "type": "Event type, e.g. desktop.signed_in, portal.page_viewed or account.plan_changed.",
    "occurred_at": "Event time (UTC instant); all computation uses it, never the arrival time.",
    "user_id": "The user (agent) id.",
    "device_id": "The desktop device id (desktop events and presences only).",
    "page": "The portal page viewed (portal.page_viewed); only Contact Center pages count.",
    "endpoint": "The API endpoint called (api.request, optional).",
    "licenses": "Licenses of the plan in effect (0 before the account's first plan).",
    "overage_allowance": "Extra licenses that may be used and are billed as overage (plan field).",
    "billing_anchor_day": "Day of the month (1..28) on which the account's billing periods start (plan field).",
    "timezone": "The account's IANA timezone (plan field): local days and periods use it.",
    "grace_minutes": "Grace period in minutes before an excess becomes billable overage (plan field).",
    "grace_mode": "How the grace period is counted: contiguous or cumulative (plan field).",
    "schema_version": "The event's schema_version (default 1).",
    "rejection": "NULL when the record decodes; else why it was rejected (e.g. invalid_json, unknown_type).",
    "rejection_detail": "Detail of the rejection, NULL when the record decodes.",
    "raw": "The original record text (invalid UTF-8 replaced).",
    "raw_bytes": "The original record bytes, only when they are not valid UTF-8.",
    "change_id": "Deterministic id of the usage change (re-deliveries share it).",
    "changed_at": "Instant the usage changed (UTC).",
    "usage": "Distinct users counted from this instant on.",
    "window_id": "Deterministic id of the peak window.",
    "start_at": "Start of the half-open interval (UTC instant).",
    "end_at": "End of the half-open interval (UTC instant); NULL while it is still open.",
    "max_usage": "Largest usage in the window.",
    "max_at": "First instant the window's largest usage was reached.",
    "seconds_over_licenses": "Seconds during which usage was above the licenses.",
    "license_seconds": "Integral of usage over the window, in seconds.",
    "alert_id": "Id of the alert; its raised and resolved transitions share it.",
    "state": "Alert transition: raised or resolved.",
    "alert_at": "Instant of the alert transition (event time).",
    "message": "Human-readable alert text.",
    "reason": "Why the input was not applied, e.g. invalid_json, missing_field:user_id, too_late.",
    "detail": "More about the reason (the field, the parser's message).",
    "original": "The original record bytes; NULL for a too_large letter (by reference) or a null value.",
    "original_text": "The original record as text; NULL when it is not valid UTF-8.",
    "source_topic": "Topic of the record that was dead-lettered.",
    "source_partition": "Partition of the record that was dead-lettered.",
    "source_offset": "Offset of the record that was dead-lettered.",
    "source_line": "Line of the archive file the record came from (replays of files only).",
    "original_size": "Bytes of the original record value (NULL for a null value).",
    "original_sha256": "SHA-256 (hex) of the original record value: matches a too_large letter to its record.",
    "source_timestamp": "Kafka timestamp of the record that was dead-lettered (NULL in older letters).",
    "interval_id": "Deterministic id of the interval; its open and closed copies share it.",
    "events_partition": "The events topic partition the record is about.",
    "data_through": "The account's data_through: everything before it is final; nothing after it is counted.",
    "watermark": "Event-time watermark: the latest accepted occurred_at.",
    "idle_floor": "The partition's watermark minus the account idle lateness (2 h by default).",
    "plan_id": "Deterministic id of the plan record.",
    "effective_at": "Instant the plan takes effect (the plan event's occurred_at).",
}
TABLE_COLUMN_COMMENTS: dict[str, dict[str, str]] = {
    "usage_changes": {"licenses": "Licenses of the plan in effect at changed_at."},
    "peak_windows": {
        "kind": "Window length: 1m, 15m, 1h or 1d (an account-local day).",
        "start_at": "Start of the window (UTC instant, inclusive).",
        "end_at": "End of the window (UTC instant, exclusive).",
    },
    "alerts": {
        "kind": "near_capacity, over_licenses, over_grace or over_allowance.",
        "usage": "Usage at the transition.",
        "licenses": "Licenses in effect at the transition.",
        "overage_allowance": "Overage allowance in effect at the transition.",
    },
    "presence_intervals": {"kind": "The presence: desktop (per device), portal or api."},
    "horizons": {
        "data_through": "The account's horizon when the record was written.",
        "watermark": "The account's latest event time when the record was written.",
    },
}
