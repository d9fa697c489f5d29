"""The worker's fast decoding path gives exactly `decode`'s verdict: the same event fields and milliseconds, or the
same rejection (reason and detail), on valid, unusual and broken records alike."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.core.records import to_record
from schemas.events import EVENT_TYPES, Rejection, decode, to_ms
from schemas.fast import FastEvent, decode_wire, timestamp_ms
from tests.schemas.cases import TIMESTAMPS

VALID = {
    "event_id": "e1",
    "account_id": "acme",
    "occurred_at": "2026-11-02T09:00:00.250Z",
    "user_id": "u1",
    "device_id": "d1",
    "page": "cc.inbox",
    "endpoint": "/v2/calls",
}


def verdict(result: Any) -> tuple[Any, ...]:
    """What the fold reads of a decoded record (or the rejection), comparable across the two paths."""
    if isinstance(result, Rejection):
        return ("rejected", result.reason, result.detail)
    event, at_ms = result
    return (event.account_id, event.schema_version, to_record(event, at_ms, 0, 0))


def slow(raw: bytes) -> tuple[Any, ...]:
    event = decode(raw)
    return verdict(event if isinstance(event, Rejection) else (event, to_ms(event.occurred_at)))


def record(*pairs: tuple[str, str]) -> bytes:
    """A JSON object from (key, JSON text of the value) pairs, in order, duplicates kept."""
    return ("{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in pairs) + "}").encode()


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_valid_session_event_takes_the_fast_path_and_equals_decode(kind: str) -> None:
    raw = json.dumps({**VALID, "type": kind, "licenses": 5, "overage_allowance": 1, "billing_anchor_day": 1,
                      "timezone": "UTC"}).encode()  # fmt: skip
    result = decode_wire(raw)
    assert not isinstance(result, Rejection)
    assert isinstance(result[0], FastEvent) == (kind != "account.plan_changed")  # plans always go to pydantic
    assert verdict(result) == slow(raw)


@pytest.mark.parametrize(("text", "expected"), TIMESTAMPS)
def test_timestamp_fast_form_is_only_taken_when_it_equals_parse_timestamp(text: str, expected: int | None) -> None:
    fast = timestamp_ms(text)
    assert fast is None or fast == expected
    raw = json.dumps({**VALID, "type": "api.request", "occurred_at": text}).encode()
    assert verdict(decode_wire(raw)) == slow(raw)


def test_common_forms_are_fast() -> None:
    assert timestamp_ms("2026-11-02T09:00:00Z") == 1_793_610_000_000
    assert timestamp_ms("2026-11-02T09:00:00.250Z") == 1_793_610_000_250
    assert timestamp_ms("2026-02-29T09:00:00Z") is None  # no such day: pydantic rejects it


EDGE_VALUES = [
    *(json.dumps(text, ensure_ascii=ascii) for text in ("", "a" * 128, "a" * 129, "\u00e9" * 128, "\U0001f600" * 129)
      for ascii in (True, False)),
    '"\\ud83d\\ude00"', '"\\ud800"', "null", "0", "1", "999999999", "1000000000", "1.0", "true", "[]", "{}",
]  # fmt: skip


@pytest.mark.parametrize("kind", EVENT_TYPES)
@pytest.mark.parametrize("field", [*VALID, "schema_version"])
@pytest.mark.parametrize("value", EDGE_VALUES)
def test_each_field_at_its_edges_gets_decodes_verdict(kind: str, field: str, value: str) -> None:
    pairs = [("type", json.dumps(kind)), *((key, json.dumps(text)) for key, text in VALID.items() if key != field)]
    raw = record(*pairs, (field, value))
    assert verdict(decode_wire(raw)) == slow(raw)


def test_invalid_utf8_in_an_ignored_field_is_rejected_like_decode() -> None:
    raw = record(("type", '"api.request"'), ("event_id", '"e"'), ("account_id", '"a"'),
                 ("occurred_at", '"2026-11-02T09:00:00Z"'), ("user_id", '"u"')) [:-1] + b',"x":"\xff"}'  # fmt: skip
    assert verdict(decode_wire(raw)) == slow(raw) == ("rejected", "invalid_utf8", slow(raw)[2])


def test_a_later_duplicate_key_wins_in_both() -> None:
    raw = record(("type", '"desktop.heartbeat"'), ("event_id", '"e"'), ("account_id", '"a"'), ("user_id", '"u1"'),
                 ("occurred_at", '"2026-11-02T09:00:00Z"'), ("device_id", '"d"'), ("user_id", '"u2"'))  # fmt: skip
    assert verdict(decode_wire(raw)) == slow(raw)
    assert verdict(decode_wire(raw))[2][4] == "u2"


_texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=3) | st.sampled_from(["", "a" * 128, "\u00e9" * 129])
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | _texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_texts, inner, max_size=3),
    max_leaves=6,
)
_value_texts = (
    _json_values.map(json.dumps)
    | st.sampled_from(["NaN", "1e999", "-0", "1.0", "01", "true", '"\\ud800"', '"\\u0041"', "9" * 4400, "[" * 70])
    | st.sampled_from([json.dumps(text) for text, _ in TIMESTAMPS])
    | st.sampled_from([json.dumps(value) for value in VALID.values()])
    | st.sampled_from([json.dumps(kind) for kind in EVENT_TYPES])
)
_keys = st.sampled_from([*VALID, "type", "schema_version", "licenses", "timezone", "x", "ty\\u0070e"])


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """A session event as text, then changed: fields replaced, dropped, added or repeated, bytes cut or added."""
    pairs = [("type", json.dumps(draw(st.sampled_from(EVENT_TYPES))))]
    pairs += [(key, json.dumps(value)) for key, value in VALID.items()]
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["replace", "drop", "add"]))
        index = draw(st.integers(0, len(pairs) - 1)) if pairs else 0
        if action == "replace" and pairs:
            pairs[index] = (pairs[index][0], draw(_value_texts))
        elif action == "drop" and pairs:
            del pairs[index]
        else:
            pairs.insert(index, (draw(_keys), draw(_value_texts)))
    raw = ("{" + ",".join(f'"{key}":{value}' for key, value in pairs) + "}").encode()
    if draw(st.booleans()):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(max_size=2)) + raw[at + draw(st.integers(0, 2)) :]
    return raw


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_fast_path_gives_decodes_verdict(raw: bytes) -> None:
    assert verdict(decode_wire(raw)) == slow(raw)
