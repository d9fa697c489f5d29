"""The SQL validation accepts exactly what `schemas.events.decode` (and `decode_mapping` for Parquet) accepts.

For every record: same verdict, same reason, and for accepted records the same normalised fields (at_ms included).
The shared tables of tests/schemas/cases.py (strict RFC 3339 timestamps, number bounds, huge numbers in unknown
fields) go through both engines with their expected verdicts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.batch import wire
from processor.batch.engine import BatchEngine
from schemas.events import PlanChanged, Rejection, decode, decode_mapping, parse_timestamp, to_ms
from tests.schemas.cases import PLAN, TIMESTAMPS, number_lines, timestamp_lines

from .helpers import write_jsonl

NORMAL = (
    "event_id",
    "type",
    "account_id",
    "user_id",
    "device_id",
    "page",
    "endpoint",
    "licenses",
    "overage_allowance",
    "billing_anchor_day",
    "timezone",
    "grace_minutes",
    "grace_mode",
)

BASE = {
    "event_id": "e1",
    "type": "desktop.heartbeat",
    "account_id": "a1",
    "occurred_at": "2026-11-02T09:00:00.250Z",
    "user_id": "u1",
    "device_id": "d1",
}
DROP = object()


def line(base: dict, **changes: object) -> str:
    """`base` with fields replaced (DROP removes one), as compact JSON."""
    data = {**base, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not DROP}, ensure_ascii=False, allow_nan=True)


def expected(record: object) -> tuple:
    """(reason, at_ms, normalised fields) of a decode()/decode_mapping() result."""
    if isinstance(record, Rejection):
        return (record.reason, None, None)
    dumped = record.model_dump()
    fields = tuple(dumped.get(name) for name in NORMAL)
    return (None, record.at_ms, fields)


def engine_results(engine: BatchEngine) -> list[tuple]:
    rows = engine.con.execute(f"SELECT reason, at_ms, {', '.join(NORMAL)} FROM parsed ORDER BY seq").fetchall()
    return [(r[0], None, None) if r[0] else (None, r[1], tuple(r[2:])) for r in rows]


def check_lines(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "lines.jsonl"
    path.write_bytes(b"".join(raw + b"\n" for raw in lines))
    engine = BatchEngine()
    stats = engine.load(path)
    got = engine_results(engine)
    want = [expected(decode(raw)) for raw in lines]
    assert stats.rows == len(lines)
    mismatches = [(i, lines[i], w, g) for i, (w, g) in enumerate(zip(want, got, strict=True)) if w != g]
    assert mismatches == []


def corpus() -> list[bytes]:
    long_id = "x" * 128
    text: list[str] = [
        # valid events of every type; extra and irrelevant fields are ignored
        line(BASE),
        line(BASE, type="desktop.signed_in"),
        line(BASE, type="work_session.started", schema_version=3, client="v2", nested={"a": [1, {"b": None}]}),
        line(BASE, type="portal.page_viewed", device_id=DROP, page="cc.inbox"),
        line(BASE, type="portal.page_viewed", device_id=DROP, page=""),
        line(BASE, type="portal.signed_out", device_id=7),
        line(BASE, type="api.request", device_id=DROP, endpoint=None),
        line(BASE, type="api.request", device_id=DROP, endpoint="/v1/q"),
        line(BASE, type="api.request", device_id=DROP),
        line(BASE, licenses="irrelevant", page=5, endpoint=[]),
        line(PLAN),
        line(PLAN, grace_minutes=0, grace_mode="cumulative"),
        line(PLAN, timezone="UTC", billing_anchor_day=28, licenses=0, overage_allowance=0),
        line(PLAN, timezone="Etc/GMT+5"),
        line(PLAN, timezone="posixrules"),
        # missing, null and ill-typed fields
        line(BASE, user_id=DROP),
        line(BASE, user_id=None),
        line(BASE, user_id=5),
        line(BASE, device_id=DROP, user_id=DROP),
        line(BASE, event_id=""),
        line(BASE, event_id=long_id),
        line(BASE, event_id=long_id + "y"),
        line(BASE, account_id="é" * 128),
        line(BASE, account_id="😀" * 129),
        line(BASE, account_id=True),
        line(BASE, event_id=DROP, account_id=DROP),
        line(BASE, occurred_at=DROP),
        line(BASE, occurred_at=None),
        line(BASE, occurred_at=1793610000),
        line(BASE, schema_version=0),
        line(BASE, schema_version=-1),
        line(BASE, schema_version="1"),
        line(BASE, schema_version=1.0),
        line(BASE, schema_version=True),
        line(BASE, schema_version=None),
        line(BASE, schema_version=10**30),
        line(BASE, schema_version=10**9 - 1),
        line(BASE, schema_version=10**9),
        line(BASE, type="portal.page_viewed", page=None),
        line(BASE, type="portal.page_viewed"),
        line(BASE, type="api.request", endpoint=5),
        line(PLAN, licenses=5.0),
        line(PLAN, licenses=5e0),
        line(PLAN, licenses=-0),
        line(PLAN, licenses=-1),
        line(PLAN, licenses="5"),
        line(PLAN, licenses=True),
        line(PLAN, licenses=None),
        line(PLAN, licenses=DROP),
        line(PLAN, overage_allowance=-1),
        line(PLAN, billing_anchor_day=0),
        line(PLAN, billing_anchor_day=29),
        line(PLAN, billing_anchor_day=10**30),
        line(PLAN, timezone="Mars/Olympus"),
        line(PLAN, timezone="europe/berlin"),
        line(PLAN, timezone="Europe/../Europe/Berlin"),
        line(PLAN, timezone="zone.tab"),
        line(PLAN, timezone="Europe"),  # an OSError escapes the validator: decode says invalid_json
        line(PLAN, timezone="Europe", licenses=-1),
        line(PLAN, timezone=""),
        line(PLAN, timezone=None),
        line(PLAN, timezone=3),
        line(PLAN, grace_minutes=-1),
        line(PLAN, grace_minutes=10**6 - 1),
        line(PLAN, grace_minutes=10**6),
        line(PLAN, grace_minutes=10**15),
        line(PLAN, licenses=10**20),
        line(PLAN, licenses=2**64),
        line(PLAN, licenses=10**9 - 1, overage_allowance=10**9 - 1),
        line(PLAN, overage_allowance=10**9),
        line(PLAN, grace_minutes=None),
        line(PLAN, grace_minutes=1.5),
        line(PLAN, grace_mode="CONTIGUOUS"),
        line(PLAN, grace_mode=None),
        line(PLAN, grace_mode=1),
        line(PLAN, licenses=-1, billing_anchor_day=40),
        # types
        line(BASE, type="desktop.unknown"),
        line(BASE, type="API.request"),
        line(BASE, type=None),
        line(BASE, type=5),
        line(BASE, type=["desktop.heartbeat"]),
        line(BASE, type=DROP),
        # timestamps
        line(BASE, occurred_at="2026-11-02T09:00:00Z"),
        line(BASE, occurred_at="2026-11-02t09:00:00z"),
        line(BASE, occurred_at="2026-11-02 09:00:00+01:00"),
        line(BASE, occurred_at="2026-11-02T09:00:00-05:30"),
        line(BASE, occurred_at="2026-11-02T09:00:00.123999Z"),
        line(BASE, occurred_at="2026-11-02T09:00:00.1239999999Z"),
        line(BASE, occurred_at="2026-11-02T09:00:00,5+00:00"),
        line(BASE, occurred_at="2026-11-02T09:00:00"),
        line(BASE, occurred_at="2026-11-02"),
        line(BASE, occurred_at="2026-11-02T09:00Z"),
        line(BASE, occurred_at="2026-11-02T0900+0100"),
        line(BASE, occurred_at=" 2026-11-02T09:00:00Z\u3000"),
        line(BASE, occurred_at="1969-12-31T23:59:59.9995Z"),
        line(BASE, occurred_at="2024-02-29T12:00:00Z"),
        line(BASE, occurred_at="2026-02-29T12:00:00Z"),
        line(BASE, occurred_at="2026-11-02T24:00:00Z"),
        line(BASE, occurred_at="2026-11-02T23:59:60Z"),
        line(BASE, occurred_at="2026-11-02T09:00:00+24:00"),
        line(BASE, occurred_at="2026-11-02T09:00:00+23:59:59.999999"),
        line(BASE, occurred_at="2026-W45-1T09:00:00Z"),
        line(BASE, occurred_at="2026W45109 +01:00:00"),
        line(BASE, occurred_at="0001-01-01T00:00:00Z"),
        line(BASE, occurred_at="0001-01-01T00:30:00+01:00"),
        line(BASE, occurred_at="9999-12-31T23:59:59.999999Z"),
        line(BASE, occurred_at="2026-11-02T09:00:00.250ZZ"),
        line(BASE, occurred_at="2026-11-02T09:00:00.250Z\n"),
        line(BASE, occurred_at="2026-11-02T09:00:00\u0000Z"),
        line(BASE, occurred_at="2026-11-02T09:00:00.25\u0000Z"),
        line(BASE, occurred_at="1970-01-01T00:00:00.000Z"),
        line(BASE, occurred_at="9998-12-31T23:59:59.999999999Z"),
        line(BASE, occurred_at=["2026-11-02T09:00:00Z"]),
        line(BASE, occurred_at="2026-11-02T09:00:00Z", event_id=""),
        line(PLAN, occurred_at="2026-11-02", licenses=10**9),
        line(PLAN, occurred_at="2026-11-02T09:00:00Z", timezone="Europe", licenses=10**9),
        # syntax
        line(BASE)[:-1] + ",}",
        line(BASE)[:-1] + ', "x": [1, 2,]}',
        line(BASE)[:-1] + ', "x": NaN}',
        line(BASE)[:-1] + ', "x": -Infinity}',
        line(BASE)[:-1] + ', "x": nan}',
        line(BASE)[:-1] + ', "x": -NaN}',
        line(BASE)[:-1] + ', "x": inf}',
        line(BASE)[:-1] + ', "x": "nan, inf,]"}',
        line(BASE)[:-1] + ', "x": 1e999}',
        line(BASE) + " trailing",
        line(BASE) + line(BASE),
        "/* c */" + line(BASE),
        "\ufeff" + line(BASE),
        "  \t" + line(BASE) + "  \r",
        "{'event_id': 'e1'}",
        "",
        "   ",
        "[]",
        "[" + line(BASE) + "]",
        '"text"',
        "42",
        "null",
        "true",
        "{",
        # escapes, duplicate keys
        line(BASE, user_id="\u0000"),
        line(BASE, user_id="\\ud83d\\ude00").replace("\\\\", "\\"),
        line(BASE, user_id="\\ud800").replace("\\\\", "\\"),
        line(BASE).replace('"type"', '"ty\\u0070e"'),
        line(BASE).replace('"type"', '"ty\\u0070e"').replace('"user_id": "u1"', '"user_id": "u1", "user_id": null'),
        line(BASE)[:-1] + ', "type": "desktop.signed_out"}',
        line(BASE)[:-1] + ', "user_id": 5}',
        line(BASE, user_id=5)[:-1] + ', "user_id": "u2"}',
        line(BASE)[:-1] + ', "schema_version": null}',
        line(PLAN)[:-1] + ', "grace_minutes": 5, "grace_minutes": null}',
        line(BASE, extra="a"),
        line(BASE, extra=None),
        line(BASE, extra='a"b\\c'),
        # nesting: pydantic's parser stops at level 201 (keys do not count)
        line(BASE)[:-1] + ', "x": ' + "[" * 200 + "]" * 200 + "}",
        line(BASE)[:-1] + ', "x": ' + "[" * 201 + "]" * 201 + "}",
        line(BASE)[:-1] + ', "x": ' + "[" * 199 + '"s"' + "]" * 199 + "}",
        line(BASE)[:-1] + ', "x": ' + "[" * 200 + "1" + "]" * 200 + "}",
        line(BASE)[:-1] + ', "x": ' + '{"k": ' * 199 + "null" + "}" * 199 + "}",
        line(BASE)[:-1] + ', "x": ' + '{"k": ' * 200 + "true" + "}" * 200 + "}",
        line(BASE)[:-1] + ', "x": ' + '[{"k": ' * 99 + "-1.5e3" + "}]" * 99 + "}",
        line(BASE)[:-1] + ', "x": ' + '[{"k": ' * 100 + "1" + "}]" * 100 + "}",
        line(BASE, padding="[" * 500),
        "[" * 201 + "]" * 201,
        "[" * 202 + "]" * 202,
    ]
    raw = [t.encode() for t in text]
    raw += [
        b"\xff" + line(BASE).encode(),
        line(BASE, user_id="u").encode().replace(b'"u"', b'"\xc0\xaf"'),
        line(BASE, user_id="u").encode().replace(b'"u"', b'"\xed\xa0\x80"'),
        line(BASE, user_id="u").encode().replace(b'"u"', b'"\xef\xbf\xbe"'),
    ]
    return raw


def test_corpus_of_tricky_lines(tmp_path: Path) -> None:
    lines = corpus()
    verdicts = [expected(decode(raw))[0] for raw in lines]
    assert verdicts.count(None) > 30 and len(set(verdicts)) > 20  # the corpus exercises both sides
    check_lines(tmp_path, lines)


def test_timestamp_and_number_tables_in_both_engines(tmp_path: Path) -> None:
    """Each row of the shared tables: the expected verdict in decode(), and the same one in the batch engine."""
    rows = [(raw, None if ms is not None else "invalid_timestamp", ms) for raw, ms in timestamp_lines()]
    rows += [(raw, reason, None) for raw, reason in number_lines()]
    for raw, reason, ms in rows:
        got_reason, got_ms, _ = expected(decode(raw))
        assert (got_reason, got_ms if ms is not None else None) == (reason, ms), raw[:120]
    check_lines(tmp_path, [raw for raw, _, _ in rows])


_ALPHABET = list('0123456789:.,-+ZzTtW x"{}[]\\é\u00a0\tnulfasetrINfy') + ['"a"', "null", "1", "true", "\\u0041"]


@st.composite
def mutated_lines(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from([line(BASE), line(PLAN), line(BASE, type="api.request", device_id=DROP)]))
    chars = list(base)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(chars)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "insert":
            chars.insert(at, draw(st.sampled_from(_ALPHABET)))
        elif chars:
            at = min(at, len(chars) - 1)
            if action == "delete":
                del chars[at]
            else:
                chars[at] = draw(st.sampled_from(_ALPHABET))
    text = "".join(chars).replace("\n", " ")
    if "\x00" in text:
        text = text.replace("\x00", "")
    return text.encode()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(mutated_lines(), min_size=20, max_size=40))
def test_mutated_lines_agree_with_decode(tmp_path: Path, lines: list[bytes]) -> None:
    check_lines(tmp_path, lines)


_TS_SEEDS = [
    "2026-11-02T09:00:00.250Z",
    "2026-11-02t09:00:00.123456789z",
    "2026-11-02T10:00:00+01:00",
    "2024-02-29T23:59:59.9-23:59",
    "1970-01-01T00:59:59.999+01:00",
    "9998-12-31T23:59:59.999Z",
    "2026-W44-1T09:00:00+01:00",
    "2026-11-02 09:00:00,5+0530",
]
_TS_ALPHABET = "0123456789:.,-+ZzTtW x\u00e9\u00a0\t\n\uff11"


@st.composite
def timestamp_texts(draw: st.DrawFn) -> str:
    chars = list(draw(st.sampled_from(_TS_SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(chars)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        if action == "insert":
            chars.insert(at, draw(st.sampled_from(_TS_ALPHABET)))
        elif chars:
            at = min(at, len(chars) - 1)
            if action == "delete":
                del chars[at]
            else:
                chars[at] = draw(st.sampled_from(_TS_ALPHABET))
    return "".join(chars)


def python_timestamp(text: str) -> tuple[str, int | None]:
    try:
        return ("ok", to_ms(parse_timestamp(text)))
    except ValueError:
        return ("invalid", None)


def sql_timestamps(texts: list[str]) -> list[tuple[str, int | None]]:
    con = duckdb.connect()
    con.execute(wire.MACROS_SQL)
    con.register("ts_input", pa.table({"i": list(range(len(texts))), "ts_raw": texts}))
    rows = con.execute(f"SELECT ts_state, ts_ms FROM ({wire.timestamp_sql('SELECT * FROM ts_input')}) ORDER BY i")
    return [(state, ms if state == "ok" else None) for state, ms in rows.fetchall()]


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(timestamp_texts(), min_size=30, max_size=60))
def test_timestamp_parser_matches_python(texts: list[str]) -> None:
    assert sql_timestamps(texts) == [python_timestamp(t) for t in texts]


def test_timestamp_parser_on_the_shared_table() -> None:
    texts = [text for text, _ in TIMESTAMPS]
    want = [("invalid", None) if ms is None else ("ok", ms) for _, ms in TIMESTAMPS]
    assert [python_timestamp(t) for t in texts] == want
    assert sql_timestamps(texts) == want


def test_parquet_rows_agree_with_decode_mapping(tmp_path: Path) -> None:
    utc = datetime(2026, 11, 2, 9, 0, 0, 250_999, tzinfo=UTC)
    rows = [
        {
            "event_id": "e1",
            "type": "desktop.heartbeat",
            "account_id": "a",
            "occurred_at": "2026-11-02T09:00:00Z",
            "user_id": "u",
            "device_id": "d",
        },
        {
            "event_id": "e2",
            "type": "api.request",
            "account_id": "a",
            "occurred_at": "2026-11-02T10:00:00+01:00",
            "user_id": "u",
        },
        {
            "event_id": "e3",
            "type": "api.request",
            "account_id": "a",
            "occurred_at": "2026-11-02T09:00:00",
            "user_id": "u",
        },
        {
            "event_id": "",
            "type": "api.request",
            "account_id": "a",
            "occurred_at": "2026-11-02T09:00:00Z",
            "user_id": "u",
        },
        {"event_id": "e5", "type": "api.request", "account_id": "a", "user_id": "u"},
        {"event_id": "e6", "type": "nope", "account_id": "a", "occurred_at": "2026-11-02T09:00:00Z"},
        {"event_id": "e7", "type": None, "account_id": "a", "occurred_at": "2026-11-02T09:00:00Z"},
        {
            "event_id": "p1",
            "type": "account.plan_changed",
            "account_id": "a",
            "occurred_at": "2026-11-02T09:00:00Z",
            "licenses": 3,
            "overage_allowance": 0,
            "billing_anchor_day": 2,
            "timezone": "Asia/Tokyo",
        },
        {
            "event_id": "p2",
            "type": "account.plan_changed",
            "account_id": "a",
            "occurred_at": "2026-11-02T09:00:00Z",
            "licenses": -3,
            "overage_allowance": 0,
            "billing_anchor_day": 2,
            "timezone": "Asia/Tokyo",
        },
        {
            "event_id": "p3",
            "type": "account.plan_changed",
            "account_id": "a",
            "occurred_at": "2026-11-02T09:00:00Z",
            "licenses": 3,
            "overage_allowance": 0,
            "billing_anchor_day": 2,
            "timezone": "Nowhere/Land",
            "grace_minutes": 0,
            "grace_mode": "cumulative",
        },
        {
            "event_id": "p4",
            "type": "account.plan_changed",
            "account_id": "a",
            "occurred_at": "2026-11-02T09:00:00Z",
            "licenses": 3,
            "billing_anchor_day": 2,
            "timezone": "UTC",
            "grace_mode": "weekly",
        },
    ]
    columns = sorted({key for row in rows for key in row})
    table = pa.table({name: [row.get(name) for row in rows] for name in columns})
    typed = table.append_column("arrival", pa.array(list(range(len(rows) - 1, -1, -1)), pa.int64()))
    pq.write_table(typed, tmp_path / "strings.parquet")
    engine = BatchEngine()
    engine.load(tmp_path / "strings.parquet")
    by_arrival = sorted(zip(typed.column("arrival").to_pylist(), rows, strict=True))
    assert engine_results(engine) == [expected(decode_mapping(dict(row))) for _, row in by_arrival]
    rejected = [a for a, row in by_arrival if isinstance(decode_mapping(row), Rejection)]
    assert [a for a, _ in engine.rejected()] == rejected

    # typed timestamps: TIMESTAMPTZ is valid (truncated to ms), naive TIMESTAMP is not; float licenses are not ints
    typed_rows = pa.table(
        {
            "event_id": ["t1", "t2", "t3", "t4"],
            "type": ["api.request", "api.request", "account.plan_changed", "account.plan_changed"],
            "account_id": ["a", "a", "a", "a"],
            "occurred_at": pa.array([utc, utc - timedelta(days=1), utc, None], pa.timestamp("us", tz="UTC")),
            "user_id": ["u", "u", None, None],
            "licenses": pa.array([None, None, 5.0, 5.0], pa.float64()),
            "overage_allowance": pa.array([None, None, 0, 0], pa.int32()),
            "billing_anchor_day": pa.array([None, None, 1, 1], pa.int8()),
            "timezone": [None, None, "UTC", "UTC"],
        }
    )
    pq.write_table(typed_rows, tmp_path / "typed.parquet")
    naive = typed_rows.set_column(3, "occurred_at", typed_rows.column("occurred_at").cast(pa.timestamp("us")))
    pq.write_table(naive, tmp_path / "naive.parquet")
    for name in ("typed.parquet", "naive.parquet"):
        engine = BatchEngine()
        stats = engine.load(tmp_path / name)
        table = pq.read_table(tmp_path / name)
        want = [expected(decode_mapping(row)) for row in table.to_pylist()]
        assert engine_results(engine) == want, name
        assert stats.rows == 4
    assert expected(decode_mapping(typed_rows.to_pylist()[0]))[1] == 1_793_610_000_250


def test_parquet_bounds_agree_with_decode_mapping(tmp_path: Path) -> None:
    """Typed Parquet timestamps share the UTC year bounds; string ones the strict shape; integers the number bounds."""
    moments = [
        datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(9998, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(9999, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(2026, 11, 2, 9, tzinfo=UTC),
    ]
    count = len(moments)
    typed = pa.table(
        {
            "event_id": [f"t{i}" for i in range(count)],
            "type": ["account.plan_changed"] * count,
            "account_id": ["a"] * count,
            "occurred_at": pa.array(moments, pa.timestamp("us", tz="UTC")),
            "licenses": pa.array([5, 5, 5, 5, 5, 10**9], pa.uint64()),
            "overage_allowance": pa.array([0, 2**64 - 1, 0, 0, 0, 0], pa.uint64()),
            "billing_anchor_day": pa.array([1] * count, pa.int8()),
            "timezone": ["UTC"] * count,
            "grace_minutes": pa.array([10**15, 10**6 - 1, 10**6, 0, 0, 0], pa.int64()),
        }
    )
    texts = [text for text, _ in TIMESTAMPS]
    strings = pa.table(
        {
            "event_id": [f"s{i}" for i in range(len(texts))],
            "type": ["api.request"] * len(texts),
            "account_id": ["a"] * len(texts),
            "occurred_at": texts,
            "user_id": ["u"] * len(texts),
        }
    )
    for name, table in (("typed.parquet", typed), ("strings.parquet", strings)):
        pq.write_table(table, tmp_path / name)
        engine = BatchEngine()
        engine.load(tmp_path / name)
        want = [expected(decode_mapping(row)) for row in pq.read_table(tmp_path / name).to_pylist()]
        assert engine_results(engine) == want, name
    reasons = [expected(decode_mapping(row))[0] for row in typed.to_pylist()]
    assert reasons == [
        "invalid_timestamp",
        "invalid_field:overage_allowance",
        "invalid_field:grace_minutes",
        "invalid_timestamp",
        "invalid_timestamp",
        "invalid_field:licenses",
    ]


def test_zone_names_follow_zoneinfo() -> None:
    for name in ("Europe/Berlin", "UTC", "Etc/GMT-14", "Mars/Base", "Europe", "", "EUROPE/BERLIN"):
        try:
            PlanChanged.model_validate({**PLAN, "timezone": name})
            verdict = "ok"
        except ValueError:
            verdict = "invalid"
        except Exception:  # noqa: BLE001 - what escapes pydantic
            verdict = "crash"
        from processor.batch.engine import zone_status

        assert zone_status(name) == verdict, name


def test_fixed_offset_aware_parquet_timestamps(tmp_path: Path) -> None:
    moment = datetime(2026, 11, 2, 10, 0, tzinfo=timezone(timedelta(hours=1)))
    table = pa.table(
        {
            "event_id": ["x"],
            "type": ["api.request"],
            "account_id": ["a"],
            "occurred_at": pa.array([moment], pa.timestamp("ms", tz="+01:00")),
            "user_id": ["u"],
        }
    )
    pq.write_table(table, tmp_path / "offset.parquet")
    engine = BatchEngine()
    engine.load(tmp_path / "offset.parquet")
    row = pq.read_table(tmp_path / "offset.parquet").to_pylist()[0]
    assert engine_results(engine) == [expected(decode_mapping(row))]


def test_jsonl_lines_and_arrivals(tmp_path: Path) -> None:
    # no trailing newline; CRLF; blank lines count as lines (invalid_json)
    path = tmp_path / "x.jsonl"
    path.write_bytes(line(BASE).encode() + b"\r\n\n" + line(BASE, event_id="e2").encode())
    engine = BatchEngine()
    stats = engine.load(path)
    assert (stats.rows, stats.valid, stats.rejected) == (3, 2, 1)
    assert engine.rejected() == [(1, "invalid_json")]
    assert [r[0] for r in engine.con.execute("SELECT arrival FROM events ORDER BY arrival").fetchall()] == [0, 2]
    assert write_jsonl  # helpers stay importable


def test_line_splitting_matches_python_file_iteration(tmp_path: Path) -> None:
    from processor.batch.engine import _line_batches

    path = tmp_path / "lines.bin"
    for content in (b"", b"a", b"a\n", b"a\nb", b"a\n\nb\n", b"\n", b"ab\r\ncd\r\n", b"x" * 10 + b"\n" + b"y" * 25):
        path.write_bytes(content)
        for chunk in (1, 2, 3, 7, 1000):
            got = [line for array, _ in _line_batches(path, chunk) for line in array.to_pylist()]
            with path.open("rb") as handle:
                assert got == list(handle), (content, chunk)
