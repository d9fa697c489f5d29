"""Vectorised encoding of row blocks: JSON lines (bytes) and Arrow tables for Parquet.

A JSON line is built from four pieces, joined by Arrow:
`{"event_id":"acct-0-` + `<digits>","occurred_at":"<timestamp>","type":"` + `<type>","account_id":"acct-0` +
`<tail>`, where the tail closes the last string, adds the type's own fields and ends the line.
The middle piece has a fixed width and is written digit by digit with numpy.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from processor.simulation.accounts import Catalog
from processor.simulation.config import DAY_MS, ENDPOINTS, PAGES
from processor.simulation.engine import ACCT, DEV, EID, EP, MAL, PAGE, PLAN, TAIL, TYP, USER, Block, T
from schemas.events import EVENT_TYPES

_EPOCH = date(1970, 1, 1)

PARQUET_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("type", pa.string()),
        ("account_id", pa.string()),
        ("occurred_at", pa.timestamp("ms", tz="UTC")),
        ("schema_version", pa.int32()),
        ("user_id", pa.string()),
        ("device_id", pa.string()),
        ("page", pa.string()),
        ("endpoint", pa.string()),
        ("licenses", pa.int32()),
        ("overage_allowance", pa.int32()),
        ("billing_anchor_day", pa.int32()),
        ("timezone", pa.string()),
        ("grace_minutes", pa.int32()),
        ("grace_mode", pa.string()),
        ("arrival", pa.int64()),
    ]
)


def _day_text(day: int) -> bytes:
    return (_EPOCH + timedelta(days=day)).isoformat().encode()


def _strings(data: np.ndarray, n: int) -> pa.StringArray:
    """An Arrow string array over `n` rows of the fixed-width byte matrix `data` (zero copy)."""
    width = data.shape[1] if n else 0
    offsets = np.arange(0, (n + 1) * width, width if width else 1, dtype=np.int32)[: n + 1]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data)))


class Encoder:
    """Turns row blocks into JSON lines or Arrow record batches, using the run's name tables."""

    def __init__(self, catalog: Catalog, eid_width: int) -> None:
        self.eid_width = eid_width
        n_types = len(EVENT_TYPES)
        self.n_types = n_types
        self._pre = pa.array([f'{{"event_id":"{acct}-' for acct in catalog.account_ids])
        self._type_account = pa.array(
            [f'{name}","account_id":"{acct}' for acct in catalog.account_ids for name in EVENT_TYPES]
        )
        self._tails = pa.array(catalog.tails)
        self._middle = np.frombuffer(
            ("0" * eid_width + '","occurred_at":"2026-11-01T00:00:00.000Z","type":"').encode(), np.uint8
        )
        self._ts_at = eid_width + len('","occurred_at":"')
        # Parquet name tables.
        self._account_ids = pa.array(catalog.account_ids)
        self._type_names = pa.array(list(EVENT_TYPES))
        self._users = pa.array(catalog.users)
        self._devices = pa.array(catalog.devices)
        self._pages = pa.array(list(PAGES))
        self._endpoints = pa.array(list(ENDPOINTS))
        plans = catalog.plans
        self._plan_ints = {
            name: pa.array([getattr(p, name) for p in plans], pa.int32())
            for name in ("licenses", "overage_allowance", "billing_anchor_day", "grace_minutes")
        }
        self._plan_strs = {name: pa.array([getattr(p, name) for p in plans]) for name in ("timezone", "grace_mode")}
        self._eid_prefix = pa.array([f"{acct}-" for acct in catalog.account_ids])

    # -- JSON lines ---------------------------------------------------------------------------------------------

    def _middle_block(self, eid: np.ndarray, t: np.ndarray) -> pa.StringArray:
        n = len(eid)
        width = len(self._middle)
        out = np.empty((width, n), np.uint8)  # one contiguous row per character position, transposed at the end
        out[:] = self._middle[:, None]
        value = eid.copy()
        for pos in range(self.eid_width - 1, -1, -1):
            out[pos] = value % 10 + 48
            value //= 10
        self._write_timestamp(out, self._ts_at, t)
        return _strings(out.T, n)

    @staticmethod
    def _write_timestamp(out: np.ndarray, at: int, t: np.ndarray) -> None:
        """Write `YYYY-MM-DDTHH:MM:SS.mmmZ` of `t` (ms) into rows at..at+23 of the transposed matrix `out`."""
        if len(t) == 0:
            return
        day = t // DAY_MS
        first = int(day.min())
        days = np.array([list(_day_text(d)) for d in range(first, int(day.max()) + 1)], np.uint8)
        out[at : at + 10] = days[day - first].T
        rest = (t - day * DAY_MS).astype(np.int32)
        second = rest // 1000
        ms = rest - second * 1000
        hour = second // 3600
        minute = second // 60 - hour * 60
        sec = second - (second // 60) * 60
        for pos, value in (
            (11, hour // 10), (12, hour % 10), (14, minute // 10), (15, minute % 10), (17, sec // 10),
            (18, sec % 10), (20, ms // 100), (21, (ms // 10) % 10), (22, ms % 10),
        ):  # fmt: skip
            out[at + pos] = value + 48

    def lines(self, block: Block) -> pa.StringArray:
        """The block's records as JSON text, each ending with a newline, in row order."""
        rows = block.rows
        malformed = rows[:, MAL] >= 0
        types = rows[:, TYP]
        tails = rows[:, TAIL]
        if block.malformed:
            types = np.where(malformed, 0, types)
            tails = np.where(malformed, 0, tails)
        acct = rows[:, ACCT]
        text = pc.binary_join_element_wise(
            self._pre.take(acct),
            self._middle_block(rows[:, EID], rows[:, T]),
            self._type_account.take(acct * self.n_types + types),
            self._tails.take(tails),
            "",
        )
        if block.malformed:
            text = pc.replace_with_mask(text, pa.array(malformed), pa.array([f"{s}\n" for s in block.malformed]))
        return text

    def json_bytes(self, block: Block) -> memoryview:
        """The block as the bytes of a `.jsonl` file section."""
        return string_bytes(self.lines(block))

    # -- Parquet ------------------------------------------------------------------------------------------------

    def _event_ids(self, rows: np.ndarray) -> pa.Array:
        n = len(rows)
        digits = np.empty((self.eid_width, n), np.uint8)
        value = rows[:, EID].copy()
        for pos in range(self.eid_width - 1, -1, -1):
            digits[pos] = value % 10 + 48
            value //= 10
        return pc.binary_join_element_wise(self._eid_prefix.take(rows[:, ACCT]), _strings(digits.T, n), "")

    def table(self, block: Block, first_arrival: int) -> pa.Table:
        """The block's valid records as a table with the wire field names and an `arrival` column."""
        rows = block.rows
        if block.malformed:
            rows = rows[rows[:, MAL] < 0]
        n = len(rows)

        def pick(values: pa.Array, column: int) -> pa.Array:
            index = rows[:, column]
            return values.take(pa.array(index, mask=index < 0))

        plan = rows[:, PLAN]
        plan_index = pa.array(plan, mask=plan < 0)
        columns = {
            "event_id": self._event_ids(rows),
            "type": self._type_names.take(rows[:, TYP]),
            "account_id": self._account_ids.take(rows[:, ACCT]),
            "occurred_at": pa.array(rows[:, T], pa.timestamp("ms", tz="UTC")),
            "schema_version": pa.nulls(n, pa.int32()),
            "user_id": pick(self._users, USER),
            "device_id": pick(self._devices, DEV),
            "page": pick(self._pages, PAGE),
            "endpoint": pick(self._endpoints, EP),
            "licenses": self._plan_ints["licenses"].take(plan_index),
            "overage_allowance": self._plan_ints["overage_allowance"].take(plan_index),
            "billing_anchor_day": self._plan_ints["billing_anchor_day"].take(plan_index),
            "timezone": self._plan_strs["timezone"].take(plan_index),
            "grace_minutes": self._plan_ints["grace_minutes"].take(plan_index),
            "grace_mode": self._plan_strs["grace_mode"].take(plan_index),
            "arrival": pa.array(np.arange(first_arrival, first_arrival + n, dtype=np.int64)),
        }
        return pa.Table.from_pydict(columns, schema=PARQUET_SCHEMA)


def string_bytes(text: pa.StringArray) -> memoryview:
    """The concatenated bytes of all strings of `text` (zero copy)."""
    n = len(text)
    if n == 0:
        return memoryview(b"")
    offsets = np.frombuffer(text.buffers()[1], np.int32, count=n + 1, offset=text.offset * 4)
    return memoryview(text.buffers()[2])[int(offsets[0]) : int(offsets[-1])]
