"""The independent batch engine: every valid event of a file, folded with set-based DuckDB SQL.

It is ccmeter's correctness oracle: it follows docs/semantics.md without sharing code with the pure fold
(`processor/core/fold.py`); property tests compare the two. Only `schemas/` and the plain value types of
`processor/core/model.py` are shared. By default a file is the restated view: every valid event counts however late
it arrived; with `late_events="drop"` the events a stream would find too late are dropped (derive.LATE_SQL).

Pipeline: wire validation (wire.py) -> `parsed`; duplicates -> `copies`, view `events`; presences, counted
intervals, usage, segments (derive.py); a zoneinfo calendar of local days -> `peak_windows`; reports on demand
(report.py). Tables (in `self.con`, usable for snapshot views; `TABLES`, `relation(name)`): `parsed` (every input
record, `reason` NULL when valid), `copies` (records whose key repeats: copy number, conflict flag), `events`
(view: valid first copies), `plans` (every plan change), `plan_at` (the winning plan per instant),
`user_intervals`, `presence_intervals` (account, user, kind, device_id, start, end), `usage_changes`,
`segments` (usage > 0 pieces of the step function with their plan), `calendar` and `peak_windows`.

Decisions beyond docs/semantics.md:
* Arrival: `seq` orders records (line number; Parquet `arrival` column, then row order, nulls by row number);
  `load()` appends, and a second file's arrivals continue after the rows loaded before (as if concatenated).
* LoadStats: rows = valid + rejected, counted per load; duplicates and duplicate_conflicts are valid later
  copies (exclusive counts), also against earlier loads. `rejected()` lists invalid records only.
* `plans(account)` lists every valid plan event in application order, including one superseded by a later
  arrival at the same instant; `plan_at` keeps the winner.
* Peak windows are ordered by (account, kind as text, start, end); a `1d` window is the calendar day of the
  plan timezone in effect, local midnight = `datetime(d, tzinfo=ZoneInfo(tz))` (fold 0) in UTC.
* Timeouts must be positive (a zero timeout has no order against the event that sets it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import numpy as np
import pyarrow as pa

from processor.core.model import LateEvents, PeakWindow, Plan, PresenceInterval, Settings, UsageChange, UserInterval
from schemas.events import MAX_RECORD_BYTES
from schemas.outputs import Report

from . import derive, wire
from .billing import build_reports, data_throughs
from .calendar import calendar_rows
from .report import build_report, data_through

TABLES: tuple[str, ...] = (
    "parsed",
    "copies",
    "events",
    "plans",
    "plan_at",
    "user_intervals",
    "presence_intervals",
    "usage_changes",
    "segments",
    "calendar",
    "peak_windows",
)

PARSED_COLUMNS = """
  seq BIGINT, arrival BIGINT, reason VARCHAR, event_id VARCHAR, type VARCHAR, account_id VARCHAR, at_ms BIGINT,
  schema_version BIGINT, user_id VARCHAR, device_id VARCHAR, page VARCHAR, endpoint VARCHAR, licenses BIGINT,
  overage_allowance BIGINT, billing_anchor_day BIGINT, timezone VARCHAR, grace_minutes BIGINT, grace_mode VARCHAR,
  tier BIGINT, needs_lex BOOLEAN
"""
EVENT_COLUMNS = (
    "seq, arrival, reason, event_id, type, account_id, at_ms, schema_version, user_id, device_id, page, endpoint, "
    "licenses, overage_allowance, billing_anchor_day, timezone, grace_minutes, grace_mode"
)
INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"}
)
NAIVE_TIMESTAMPS = frozenset({"TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATETIME"})
CHUNK_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadStats:
    """What one `load` read: rows = valid + rejected; duplicates and conflicts are valid later copies."""

    rows: int
    valid: int
    rejected: int
    duplicates: int
    duplicate_conflicts: int


def zone_status(name: str) -> str:
    """How `schemas.events.PlanChanged` judges a timezone string: 'ok', 'invalid' or 'crash' (invalid_json)."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "invalid"
    except Exception:  # noqa: BLE001 - e.g. IsADirectoryError escapes pydantic, decode() says invalid_json
        return "crash"
    return "ok"


def _line_batches(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[pa.Array, int]]:
    """The file's lines as Arrow binary arrays of about `chunk_bytes`, with the bytes each batch covers.

    A line is what iterating the file in binary mode yields: it ends after a b"\\n" (kept: JSON reads it as
    whitespace, as it does the b"\\r" of CRLF files), and there is no empty line after a final newline.
    """
    with path.open("rb") as handle:
        carry = b""
        while True:
            block = handle.read(chunk_bytes)
            data = carry + block
            if not data:
                return
            ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
            if block:  # keep an unfinished last line for the next block
                cut = int(ends[-1]) if len(ends) else 0
                data, carry = data[:cut], data[cut:]
            elif not len(ends) or ends[-1] != len(data):  # end of file: the last line has no newline
                ends = np.append(ends, len(data))
            if len(data):
                offsets = np.concatenate(([0], ends)).astype(np.int64)
                array = pa.LargeBinaryArray.from_buffers(
                    pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
                )
                yield array, len(data)
            if not block:
                return


def _content_sizes(lines: pa.Array) -> np.ndarray:
    """Bytes of each line of a `_line_batches` array without its line break (a final b"\\n", then one b"\\r")."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    data = np.frombuffer(lines.buffers()[2], dtype=np.uint8)
    ends = offsets[1:]
    sizes = ends - offsets[:-1]
    newline = (sizes > 0) & (data[np.maximum(ends - 1, 0)] == 10)
    sizes = sizes - newline
    return sizes - (newline & (sizes > 0) & (data[np.maximum(ends - 2, 0)] == 13))


class BatchEngine:
    """Load event files, then query usage changes, peak windows, user intervals, plans and reports."""

    def __init__(
        self,
        settings: Settings = Settings(),
        database: str = ":memory:",
        late_events: LateEvents = "count",
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        """`database`: ':memory:' or a DuckDB file; records already in a file's `parsed` table are kept.

        `late_events`: "count" reads a file as the restated view (every valid event counts, SPEC 2); "drop" drops
        the events a stream would find too late (below their account's horizon at arrival), like the worker.
        `max_record_bytes`: a `.jsonl` line longer than this (without its line break) is `too_large`, like a
        record the worker's `--max-record-bytes` refuses."""
        self.late_events = late_events
        self.max_record_bytes = max_record_bytes
        for name in ("device_timeout_ms", "portal_idle_timeout_ms", "api_activity_window_ms"):
            if getattr(settings, name) <= 0:
                raise ValueError(f"{name} must be positive")
        self.settings = settings
        self.con = duckdb.connect(database)
        self.con.execute(wire.MACROS_SQL)
        self.con.execute(wire.LEX_MACRO_SQL)
        self.con.create_function("ccm_zone_status", zone_status, ["VARCHAR"], "VARCHAR", side_effects=False)
        self.con.execute(f"CREATE TABLE IF NOT EXISTS parsed ({PARSED_COLUMNS})")
        self._next_seq = int(self.con.execute("SELECT coalesce(max(seq) + 1, 0) FROM parsed").fetchall()[0][0])
        self._derive()

    # --- loading -------------------------------------------------------------------------------------------------

    def load(self, path: str | Path, progress: bool = False) -> LoadStats:
        """Read a `.jsonl` or `.parquet` file (appending to what was loaded before) and rebuild every table.

        Arrival is the 0-based line number (`.jsonl`) or the `arrival` column, else the row order (`.parquet`);
        a second file's arrivals follow the first's (offset by the rows loaded before).
        """
        file = Path(path)
        first = self._next_seq
        bar = _progress(progress, file.name)
        try:
            if file.suffix == ".parquet":
                self._load_parquet(file, first, bar)
            elif file.suffix == ".jsonl":
                self._load_jsonl(file, first, bar)
            else:
                raise ValueError(f"{file}: expected a .jsonl or .parquet file")
            bar.set_postfix_str("deriving")
            self._derive(bar)
            rows, valid = self.con.execute(
                "SELECT count(*), count(*) FILTER (WHERE reason IS NULL) FROM parsed WHERE seq >= ?", [first]
            ).fetchall()[0]
            duplicates, conflicts = self.con.execute(
                "SELECT count(*) FILTER (WHERE NOT conflict), count(*) FILTER (WHERE conflict) "
                "FROM copies WHERE seq >= ? AND copy > 1",
                [first],
            ).fetchall()[0]
        finally:
            bar.close()
        self._next_seq = first + rows
        return LoadStats(rows, valid, rows - valid, duplicates, conflicts)

    def _load_jsonl(self, file: Path, first: int, bar: _Bar) -> None:
        """Validate the file chunk by chunk into `parsed`; keep only the lines that need the exact slow paths."""
        con = self.con
        con.execute("CREATE OR REPLACE TEMP TABLE pending_lines (seq BIGINT, arrival BIGINT, line BLOB)")
        checked = wire.jsonl_checked_sql(wire.jsonl_fields_sql("raw_chunk", self.max_record_bytes))
        bar.reset(total=file.stat().st_size)
        bar.set_postfix_str("parsing")
        count = 0
        for array, consumed in _line_batches(file):
            low, high = first + count, first + count + len(array)
            numbers = pa.array(np.arange(low, high, dtype=np.int64))
            sizes = pa.array(_content_sizes(array))
            con.register("raw_chunk", pa.table({"seq": numbers, "arrival": numbers, "line": array, "size": sizes}))
            try:
                con.execute(f"INSERT INTO parsed BY NAME SELECT {EVENT_COLUMNS}, tier, needs_lex FROM ({checked})")
                con.execute(
                    "INSERT INTO pending_lines SELECT r.seq, r.arrival, r.line FROM raw_chunk AS r SEMI JOIN "
                    "(SELECT seq FROM parsed WHERE seq >= ? AND seq < ? AND (tier = 3 OR needs_lex)) AS p "
                    "ON r.seq = p.seq",
                    [low, high],
                )
            finally:
                con.unregister("raw_chunk")
            count += len(array)
            bar.update(consumed)
        bar.set_postfix_str("exact paths")
        # Repeated keys: pydantic keeps the last copy of a key; redo these lines from json_each.
        con.execute(
            "CREATE OR REPLACE TEMP TABLE dupkey_seqs AS SELECT seq FROM parsed WHERE seq >= ? AND tier = 3", [first]
        )
        if con.execute("SELECT count(*) FROM dupkey_seqs").fetchall()[0][0]:
            con.execute("DELETE FROM parsed WHERE seq IN (SELECT seq FROM dupkey_seqs)")
            checked = wire.jsonl_checked_sql(wire.jsonl_dupkey_fields_sql("pending_lines", "dupkey_seqs"))
            con.execute(f"INSERT INTO parsed BY NAME SELECT {EVENT_COLUMNS}, tier, needs_lex FROM ({checked})")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE lex_lines AS SELECT r.seq, r.line FROM pending_lines AS r "
            "SEMI JOIN (SELECT seq FROM parsed WHERE seq >= ? AND needs_lex) AS p ON r.seq = p.seq",
            [first],
        )
        con.execute(wire.LEX_FIX_SQL.format(raw="lex_lines"))
        con.execute(wire.DEPTH_FIX_SQL.format(raw="lex_lines"))
        for table in ("lex_lines", "pending_lines", "dupkey_seqs"):
            con.execute(f"DROP TABLE {table}")

    def _load_parquet(self, file: Path, first: int, bar: _Bar) -> None:
        con = self.con
        bar.set_postfix_str("reading")
        source = f"read_parquet('{_quote(str(file))}', file_row_number = true)"
        types = {row[0]: row[1] for row in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        columns = []
        for field in wire.FIELDS:
            columns.append(_parquet_field(field, types.get(field)))
        occurred = types.get("occurred_at")
        t_ms = "CASE WHEN occurred_at IS NOT NULL THEN ccm_fdiv(epoch_us(occurred_at), 1000) END"
        pre = "NULL"
        if occurred in NAIVE_TIMESTAMPS:
            pre = "CASE WHEN occurred_at IS NOT NULL THEN 'invalid_field:occurred_at' END"
        arrival = "coalesce(arrival, file_row_number)" if "arrival" in types else "file_row_number"
        seq = f"{first} + file_row_number"
        if "arrival" in types:
            # Arrival order is row order when every arrival is present and a constant away from its row number;
            # otherwise sort once.
            low, high, missing = con.execute(
                f"SELECT min(arrival - file_row_number), max(arrival - file_row_number), "
                f"count(*) FILTER (WHERE arrival IS NULL) FROM {source}"
            ).fetchall()[0]
            if missing or low != high:
                seq = f"{first} + row_number() OVER (ORDER BY {arrival}, file_row_number) - 1"
        fields = f"""
SELECT {seq} AS seq,
       {first} + {arrival} AS arrival, {pre} AS pre_reason,
       {t_ms if occurred == "TIMESTAMP WITH TIME ZONE" else "NULL::BIGINT"} AS t_ms,
       {", ".join(columns)}
FROM {source}
"""
        bar.set_postfix_str("validating")
        con.execute(f"INSERT INTO parsed BY NAME SELECT {EVENT_COLUMNS} FROM ({wire.validate_sql(fields)})")

    def _derive(self, bar: _Bar | None = None) -> None:
        con = self.con
        s = self.settings
        late = (s.allowed_lateness_ms, s.account_idle_lateness_ms) if self.late_events == "drop" else None
        for statement in derive.derive_statements(
            s.device_timeout_ms, s.portal_idle_timeout_ms, s.api_activity_window_ms, late
        ):
            con.execute(statement)
        days: dict[str, list[int]] = {}
        for zone, day in con.execute(
            "SELECT DISTINCT timezone, unnest(generate_series(ccm_fdiv(start_ms, 86400000) - 2, "
            "ccm_fdiv(end_ms - 1, 86400000) + 2)) FROM segments"
        ).fetchall():
            days.setdefault(zone, []).append(day)
        rows = [row for zone, utc_days in days.items() for row in calendar_rows(zone, utc_days)]
        con.execute("CREATE OR REPLACE TABLE calendar (tz VARCHAR, idx BIGINT, start_ms BIGINT, end_ms BIGINT)")
        if rows:
            con.execute(
                "INSERT INTO calendar SELECT * FROM (SELECT unnest(?::VARCHAR[]), unnest(?::BIGINT[]), "
                "unnest(?::BIGINT[]), unnest(?::BIGINT[]))",
                [list(column) for column in zip(*rows, strict=True)],
            )
        con.execute(derive.WINDOWS_SQL)

    # --- queries -------------------------------------------------------------------------------------------------

    def relation(self, name: str) -> duckdb.DuckDBPyRelation:
        """A DuckDB relation over one of `TABLES` (for snapshot views and ad-hoc SQL)."""
        if name not in TABLES:
            raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}")
        return self.con.table(name)

    def accounts(self) -> list[str]:
        """Every account with at least one valid event, sorted."""
        return [row[0] for row in self.con.execute("SELECT DISTINCT account_id FROM events ORDER BY 1").fetchall()]

    def plans(self, account_id: str) -> list[Plan]:
        """The account's plan changes in application order (occurred_at, then arrival)."""
        rows = self.con.execute(
            "SELECT at_ms, licenses, overage_allowance, billing_anchor_day, timezone, grace_minutes, grace_mode "
            "FROM plans WHERE account_id = ? ORDER BY at_ms, seq",
            [account_id],
        ).fetchall()
        return [Plan(*row) for row in rows]

    def usage_changes(self, account_id: str | None = None) -> list[UsageChange]:
        """Usage changes ordered by account and instant."""
        rows = self._select("SELECT account_id, at_ms, usage, licenses FROM usage_changes", account_id, "at_ms")
        return [UsageChange(*row) for row in rows]

    def peak_windows(self, account_id: str | None = None) -> list[PeakWindow]:
        """Closed windows with license_ms > 0, ordered by account, kind (as text), start and end."""
        rows = self._select(
            "SELECT account_id, kind, start_ms, end_ms, max_usage, max_at_ms, over_ms, license_ms FROM peak_windows",
            account_id,
            "kind, start_ms, end_ms",
        )
        return [PeakWindow(*row) for row in rows]

    def user_intervals(self, account_id: str | None = None) -> list[UserInterval]:
        """Counted intervals ordered by account, user and start."""
        rows = self._select(
            "SELECT account_id, user_id, start_ms, end_ms FROM user_intervals", account_id, "user_id, start_ms"
        )
        return [UserInterval(*row) for row in rows]

    def presence_intervals(self, account_id: str | None = None) -> list[PresenceInterval]:
        """Presence intervals ordered by account, user, start, kind and device."""
        rows = self._select(
            "SELECT account_id, user_id, kind, device_id, start_ms, end_ms FROM presence_intervals",
            account_id,
            "user_id, start_ms, kind, device_id",
        )
        return [PresenceInterval(*row) for row in rows]

    def data_through(self, account_id: str) -> int | None:
        """The account's data_through (SPEC 4) by the file rule: `settings.horizon(W_a, W_p)` with `W_a` the account's
        and `W_p` the input's largest valid occurred_at; None when the account has no valid record."""
        s = self.settings
        return data_through(self.con, account_id, s.allowed_lateness_ms, s.account_idle_lateness_ms)

    def data_throughs(self) -> dict[str, int]:
        """`data_through` of every account with a valid record, in one statement."""
        s = self.settings
        return data_throughs(self.con, s.allowed_lateness_ms, s.account_idle_lateness_ms)

    def report(self, account_id: str, from_date: date, to_date: date) -> Report:
        """The licenses usage report for the account-local dates from..to (inclusive), up to its data_through."""
        return build_report(self.con, account_id, from_date, to_date, self.data_through(account_id))

    def reports(self, requests: Sequence[tuple[str, date, date]]) -> list[Report]:
        """`report(account, from, to)` of every request, in order, computed set-based (billing.py: each aggregate
        is one statement over all requests, grouped by request): the billing run of many accounts."""
        return build_reports(self.con, requests, self.data_throughs())

    def all_plans(self) -> dict[str, list[Plan]]:
        """`plans(account)` of every account that has plans, in one statement."""
        out: dict[str, list[Plan]] = {}
        for account, *row in self.con.execute(
            "SELECT account_id, at_ms, licenses, overage_allowance, billing_anchor_day, timezone, grace_minutes, "
            "grace_mode FROM plans ORDER BY account_id, at_ms, seq"
        ).fetchall():
            out.setdefault(account, []).append(Plan(*row))
        return out

    def too_late(self) -> list[int]:
        """Arrivals of the valid records dropped as too late (only with `late_events="drop"`), in arrival order."""
        return [int(row[0]) for row in self.con.execute("SELECT arrival FROM late_rows ORDER BY seq").fetchall()]

    def rejected(self) -> list[tuple[int, str]]:
        """(arrival, reason) of every rejected input record, in arrival order."""
        return [
            (int(a), str(r))
            for a, r in self.con.execute(
                "SELECT arrival, reason FROM parsed WHERE reason IS NOT NULL ORDER BY seq"
            ).fetchall()
        ]

    def _select(self, sql: str, account_id: str | None, order: str) -> list[tuple]:
        if account_id is None:
            return self.con.execute(f"{sql} ORDER BY account_id, {order}").fetchall()
        return self.con.execute(f"{sql} WHERE account_id = ? ORDER BY account_id, {order}", [account_id]).fetchall()

    def close(self) -> None:
        """Close the DuckDB connection."""
        self.con.close()

    def __enter__(self) -> BatchEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quote(text: str) -> str:
    return text.replace("'", "''")


def _parquet_field(field: str, duck_type: str | None) -> str:
    """k_/s_/i_ columns of one wire field from a typed Parquet column (absent column or null = absent field)."""
    if duck_type is None:
        return f"NULL::VARCHAR AS k_{field}, NULL::VARCHAR AS s_{field}, NULL::BIGINT AS i_{field}"
    col = f'"{field}"'
    if field == "occurred_at" and duck_type == "TIMESTAMP WITH TIME ZONE":
        kind = f"CASE WHEN {col} IS NOT NULL THEN 't' END"
        return f"{kind} AS k_{field}, NULL::VARCHAR AS s_{field}, NULL::BIGINT AS i_{field}"
    if duck_type == "VARCHAR":
        kind = f"CASE WHEN {col} IS NOT NULL THEN 's' END"
        return f"{kind} AS k_{field}, {col} AS s_{field}, NULL::BIGINT AS i_{field}"
    if duck_type in INTEGER_TYPES:
        kind = (
            f"CASE WHEN {col} IS NULL THEN NULL WHEN TRY_CAST({col} AS BIGINT) IS NOT NULL THEN 'i' "
            f"WHEN {col} < 0 THEN 'N' ELSE 'I' END"
        )
        return f"{kind} AS k_{field}, NULL::VARCHAR AS s_{field}, TRY_CAST({col} AS BIGINT) AS i_{field}"
    kind = f"CASE WHEN {col} IS NOT NULL THEN 'o' END"
    return f"{kind} AS k_{field}, NULL::VARCHAR AS s_{field}, NULL::BIGINT AS i_{field}"


class _Bar:
    """A tqdm bar, or nothing when progress is off."""

    def __init__(self, bar: object | None) -> None:
        self._bar = bar

    def reset(self, total: int) -> None:
        if self._bar is not None:
            self._bar.reset(total=total)  # type: ignore[attr-defined]

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)  # type: ignore[attr-defined]

    def set_postfix_str(self, text: str) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(text)  # type: ignore[attr-defined]

    def close(self) -> None:
        if self._bar is not None:
            with contextlib.suppress(Exception):
                self._bar.close()  # type: ignore[attr-defined]


def _progress(enabled: bool, name: str) -> _Bar:
    if not enabled:
        return _Bar(None)
    from tqdm import tqdm

    return _Bar(tqdm(total=0, desc=f"ccmeter {name}", unit="B", unit_scale=True, leave=False))
