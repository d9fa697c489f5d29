"""Applied restatements: part of the billing record (SPEC 4, "Restatement").

`ccmeter replay restate --apply` records a restatement in the sink's data directory, beside the data it restates:
`DIR/restatements/<restatement_id>.parquet`, one row per too-late event it counts (its position on the events topic,
its event id and its original bytes) with the account, the period, the reason, when it was applied, the version
(topic prefix) of the snapshot it was applied from and the counting rules. `restatement_id` is a hash of (account,
period): restating a period again replaces its record (the late events of both runs, the first `restated_at` when
nothing new was found), so restating twice changes nothing.

The rule (reconciled, never lost): every `ccmeter snapshot` recomputes each restated period from ITS OWN data, the
events the live worker applied (by the partition clocks, as `replay verify` does) plus the recorded late events, with
the batch engine, and puts that report into `billing_periods` / `billing_days` (`restated` true). A live update of the
period after the restatement (events applied later) is in the snapshot's events, so it is in the restated numbers
too; the late events are never dropped again. `adjustments` holds, per restated period, each field that differs
between the live report of this snapshot (`before`) and the restated one (`after`), like a credit note. Because the
record holds event positions and bytes, not numbers, it is valid for every version built from the same events topic:
a rebuilt version's sink (`ccmeter sink --events-prefix`) carries the records over (`ccmeter replay restate
--carry-from DIR`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from hashlib import sha256
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from processor.core.model import Settings
from schemas.outputs import DAY_KEYS, SUMMARY_KEYS, Report

RESTATEMENTS_DIR = "restatements"
DEFAULT_REASON = "too-late events counted (ccmeter replay restate --apply)"
# Fields of a report that are not billing numbers: they follow the restated report but make no adjustment row.
NOT_ADJUSTED = ("account_id", "from", "to", "timezone", "data_through", "complete", "date")
log = logging.getLogger("ccmeter.snapshot")

RECORD_SCHEMA = pa.schema(
    [
        ("restatement_id", pa.string()),
        ("account_id", pa.string()),
        ("period_from", pa.date32()),
        ("period_to", pa.date32()),
        ("reason", pa.string()),
        ("restated_at", pa.timestamp("ms", tz="UTC")),
        ("version", pa.string()),
        ("settings", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("event_id", pa.string()),
        ("original", pa.binary()),
    ]
)
ADJUSTMENTS_DDL = (
    "adjustment_id VARCHAR, restatement_id VARCHAR, account_id VARCHAR, period_from DATE, period_to DATE, "
    "date DATE, field VARCHAR, before VARCHAR, after VARCHAR, reason VARCHAR, restated_at TIMESTAMPTZ, "
    "version VARCHAR, event_ids VARCHAR[]"
)
RESTATEMENTS_DDL = (
    "restatement_id VARCHAR, account_id VARCHAR, period_from DATE, period_to DATE, reason VARCHAR, version VARCHAR, "
    "event_ids VARCHAR[], late_events BIGINT, report VARCHAR, restated_at TIMESTAMPTZ"
)
RESTATEMENT_COMMENTS: dict[str, str] = {
    "restatement_id": "Id of the restatement: one per account and billing period.",
    "period_from": "First local day of the restated billing period.",
    "period_to": "Last local day of the restated billing period (inclusive).",
    "reason": "Why the period was restated.",
    "version": "The topic prefix (app version) of the snapshot the restatement was applied from.",
    "event_ids": "The event ids of the too-late events the restatement counts.",
    "late_events": "How many too-late events the restatement counts.",
    "report": "The restated licenses usage report of this snapshot (JSON, as `ccmeter report --format json`).",
    "restated_at": "When the restatement was applied (wall clock, UTC).",
}
ADJUSTMENT_COMMENTS: dict[str, str] = {
    "adjustment_id": "Deterministic id of the adjustment: the same restatement gives the same ids in every snapshot.",
    "restatement_id": "The restatement (one per account and billing period) the adjustment belongs to.",
    "date": "The account-local day the adjusted field is of; NULL for a field of the period's summary.",
    "field": "The adjusted report field, e.g. peak_usage or billable_overage (SPEC 4).",
    "before": "The field's value in the live report of this snapshot (JSON text).",
    "after": "The field's value in the restated report of this snapshot (JSON text).",
    "reason": "Why the period was restated.",
    "restated_at": "When the restatement was applied (wall clock, UTC).",
    "version": "The topic prefix (app version) of the snapshot the restatement was applied from.",
    "event_ids": "The event ids of the too-late events the restatement counts.",
}


@dataclass
class Restatement:
    """One applied restatement: an account's period and the too-late events that count in it."""

    account_id: str
    period_from: date
    period_to: date
    reason: str = DEFAULT_REASON
    restated_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    version: str = ""
    settings: Settings = field(default_factory=Settings)
    late: dict[tuple[int, int], tuple[str, bytes]] = field(default_factory=dict)  # position -> (event_id, bytes)

    @property
    def restatement_id(self) -> str:
        """sha256 of (account, period): one restatement per account and period."""
        return restatement_id(self.account_id, self.period_from, self.period_to)

    @property
    def event_ids(self) -> list[str]:
        """The late events' ids, in position order."""
        return [event_id for _, (event_id, _) in sorted(self.late.items())]


def restatement_id(account_id: str, period_from: date, period_to: date) -> str:
    """The id of the restatement of an account's period."""
    return sha256(f"{account_id}|{period_from}|{period_to}".encode()).hexdigest()[:16]


def adjustment_id(restatement: str, day: date | None, name: str) -> str:
    """The id of one adjusted field (of the summary when `day` is None)."""
    return sha256(f"{restatement}|{day or ''}|{name}".encode()).hexdigest()[:16]


def record_path(data_dir: Path, restatement: str) -> Path:
    """Where the record of a restatement lives."""
    return data_dir / RESTATEMENTS_DIR / f"{restatement}.parquet"


def _table(record: Restatement) -> pa.Table:
    settings = json.dumps(dataclasses.asdict(record.settings), sort_keys=True)
    rows = [
        {
            "restatement_id": record.restatement_id,
            "account_id": record.account_id,
            "period_from": record.period_from,
            "period_to": record.period_to,
            "reason": record.reason,
            "restated_at": record.restated_at,
            "version": record.version,
            "settings": settings,
            "kafka_partition": partition,
            "kafka_offset": offset,
            "event_id": event_id,
            "original": original,
        }
        for (partition, offset), (event_id, original) in sorted(record.late.items())
    ]
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


def _from_table(table: pa.Table) -> Restatement:
    rows = table.to_pylist()
    first = rows[0]
    return Restatement(
        account_id=first["account_id"],
        period_from=first["period_from"],
        period_to=first["period_to"],
        reason=first["reason"],
        restated_at=first["restated_at"],
        version=first["version"],
        settings=Settings(**json.loads(first["settings"])),
        late={(r["kafka_partition"], r["kafka_offset"]): (r["event_id"], r["original"]) for r in rows},
    )


def read_record(path: Path) -> Restatement:
    """One restatement record."""
    return _from_table(pq.read_table(path, schema=RECORD_SCHEMA))


def read_records(data_dir: Path) -> list[Restatement]:
    """Every restatement recorded in a data directory (by id)."""
    root = data_dir / RESTATEMENTS_DIR
    if not root.is_dir():
        return []
    return [read_record(path) for path in sorted(root.glob("*.parquet")) if not path.name.startswith(".")]


def _write(path: Path, record: Restatement) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(_table(record), tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    tmp.replace(path)


def apply_record(data_dir: Path, record: Restatement) -> tuple[Restatement, bool]:
    """Record (or replace) a restatement; the late events of an earlier record of the same period are kept, and so
    is its `restated_at` when no new event was found (and its reason when none is given). Returns the stored record
    and whether anything changed."""
    path = record_path(data_dir, record.restatement_id)
    if path.exists():
        old = read_record(path)
        if record.reason == DEFAULT_REASON:  # no reason given: the earlier one stands
            record = dataclasses.replace(record, reason=old.reason)
        merged = dict(old.late) | dict(record.late)
        if merged.keys() == old.late.keys() and record.settings == old.settings and record.reason == old.reason:
            return old, False
        record = dataclasses.replace(record, late=merged)
    _write(path, record)
    return record, True


def carry_over(source: Path, target: Path) -> list[Restatement]:
    """Copy the restatements of one data directory into another (a rebuilt version's); idempotent."""
    return [apply_record(target, record)[0] for record in read_records(source)]


@dataclass
class Applied:
    """A restated period as a snapshot computed it."""

    record: Restatement
    last: Report
    restated: Report


def adjustment_rows(applied: Applied) -> list[dict[str, object]]:
    """Each billing field that differs between the live and the restated report: summary fields, then days."""
    record, rid = applied.record, applied.record.restatement_id
    old, new = applied.last.to_json_dict(), applied.restated.to_json_dict()
    changes: list[tuple[date | None, str, object, object]] = [
        (None, key, old.get(key), new.get(key))
        for key in SUMMARY_KEYS
        if key not in NOT_ADJUSTED and old.get(key) != new.get(key)
    ]
    old_days, new_days = {d["date"]: d for d in old["days"]}, {d["date"]: d for d in new["days"]}
    for day in sorted(old_days.keys() | new_days.keys()):
        a, b = old_days.get(day, {}), new_days.get(day, {})
        changes += [
            (date.fromisoformat(day), key, a.get(key), b.get(key))
            for key in DAY_KEYS
            if key not in NOT_ADJUSTED and a.get(key) != b.get(key)
        ]
    return [
        {
            "adjustment_id": adjustment_id(rid, day, name),
            "restatement_id": rid,
            "account_id": record.account_id,
            "period_from": record.period_from,
            "period_to": record.period_to,
            "date": day,
            "field": name,
            "before": json.dumps(before),
            "after": json.dumps(after),
            "reason": record.reason,
            "restated_at": record.restated_at,
            "version": record.version,
            "event_ids": record.event_ids,
        }
        for day, name, before, after in changes
    ]


def restatement_row(applied: Applied) -> dict[str, object]:
    """The `restatements` row of an applied restatement (RESTATEMENTS_DDL order)."""
    record = applied.record
    return {
        "restatement_id": record.restatement_id,
        "account_id": record.account_id,
        "period_from": record.period_from,
        "period_to": record.period_to,
        "reason": record.reason,
        "version": record.version,
        "event_ids": record.event_ids,
        "late_events": len(record.late),
        "report": json.dumps(applied.restated.to_json_dict()),
        "restated_at": record.restated_at,
    }


def restated_reports(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str, str], Report]:
    """The restated reports of a snapshot by (account_id, from, to) (none in a snapshot of an older ccmeter)."""
    try:
        rows = con.execute("SELECT report FROM restatements").fetchall()
    except duckdb.CatalogException:
        return {}
    reports = [Report.model_validate(json.loads(text)) for (text,) in rows]
    return {(r.account_id, r.from_, r.to): r for r in reports}


def recompute(con: duckdb.DuckDBPyConnection, record: Restatement, last: Report) -> Report:
    """The restated report of `record` from the snapshot's own events plus the recorded late events (the same
    recomputation as `ccmeter replay restate`). Raises ValueError when the snapshot has no applied event of the
    account (a sink that does not read the events topic)."""
    from processor.cli import CliError
    from replay.restate import LateEvents, restate

    late = LateEvents()
    for position, (_, original) in sorted(record.late.items()):
        late.add("restatement record", position, original)
    try:
        result = restate(
            con, record.account_id, record.period_from, record.period_to, record.settings, last, late, progress=False
        )
    except CliError as exc:
        raise ValueError(str(exc)) from None
    return result.restated


def apply_all(
    con: duckdb.DuckDBPyConnection,
    records: Iterable[Restatement],
    last_report: Callable[[str, date, date], Report | None],
    progress: Callable[[str], None] | None = None,
) -> list[Applied]:
    """Recompute every recorded restatement in the snapshot being built; those that cannot be recomputed (no
    events of the account, or an account the snapshot does not know) are skipped with a warning."""
    applied: list[Applied] = []
    for record in records:
        last = last_report(record.account_id, record.period_from, record.period_to)
        try:
            if last is None:
                raise ValueError(f"account {record.account_id!r} is not in this snapshot")
            applied.append(Applied(record, last, recompute(con, record, last)))
        except ValueError as exc:
            line = (
                f"restatement {record.restatement_id} ({record.account_id} {record.period_from}..{record.period_to}) "
                f"not applied: {exc} (a sink of a rebuilt version needs --events-prefix)"
            )
            log.warning("snapshot: %s", line)
            if progress:
                progress(line)
    return applied
