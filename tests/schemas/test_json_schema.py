"""The JSON Schema files that producers validate against: up to date, and they agree with `decode`."""

from __future__ import annotations

import json

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from schemas.events import Rejection, decode
from schemas.generate import JSON_DIR, build_schemas, render
from tests.schemas.cases import PLAN, PLAN_NUMBERS, TIMESTAMPS, with_raw


def test_committed_schema_files_are_current() -> None:
    stale = [
        name
        for name, document in build_schemas().items()
        if not (JSON_DIR / name).exists() or (JSON_DIR / name).read_text() != render(document)
    ]
    assert stale == [], f"run `make schemas`: stale files {stale}"


@pytest.fixture(scope="module")
def event_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((JSON_DIR / "event.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


SAMPLES = [
    {"type": "desktop.signed_in", "user_id": "u", "device_id": "d"},
    {"type": "work_session.ended", "user_id": "u", "device_id": "d"},
    {"type": "portal.page_viewed", "user_id": "u", "page": "cc.inbox"},
    {"type": "api.request", "user_id": "u", "endpoint": "/v2/queues"},
    {"type": "account.plan_changed", "licenses": 3, "overage_allowance": 1, "billing_anchor_day": 5, "timezone": "UTC"},
    # bad ones
    {"type": "desktop.signed_in", "user_id": "u"},
    {"type": "portal.page_viewed", "user_id": "u"},
    {
        "type": "account.plan_changed",
        "licenses": "3",
        "overage_allowance": 1,
        "billing_anchor_day": 5,
        "timezone": "UTC",
    },
    {
        "type": "account.plan_changed",
        "licenses": 3,
        "overage_allowance": 1,
        "billing_anchor_day": 30,
        "timezone": "UTC",
    },
    {"type": "no.such.type", "user_id": "u"},
]


@pytest.mark.parametrize("fields", SAMPLES)
def test_json_schema_and_decode_agree(fields: dict, event_validator: jsonschema.Draft202012Validator) -> None:
    document = {"event_id": "e", "account_id": "a", "occurred_at": "2026-11-02T09:00:00Z", **fields}
    schema_ok = event_validator.is_valid(document)
    decoded_ok = not isinstance(decode(json.dumps(document)), Rejection)
    assert schema_ok == decoded_ok


# Rows of the timestamp table that the pattern cannot judge: days that do not exist in their month, the UTC year
# bounds; and a trailing newline, which Python's `re.search` lets `$` match before (ECMA-262 does not).
PATTERN_CANNOT_SAY = {
    "2026-02-29T12:00:00Z",
    "2026-04-31T12:00:00Z",
    "1969-12-31T23:59:59.999Z",
    "1970-01-01T00:30:00+01:00",
    "9999-01-01T00:00:00Z",
    "9998-12-31T23:30:00-01:00",
    "9999-12-31T23:59:59-23:59",
    "0000-01-01T00:00:00Z",
    "0001-01-01T00:30:00+01:00",
    "2026-11-02T09:00:00Z\n",
}


@pytest.mark.parametrize(("text", "ms"), TIMESTAMPS)
def test_json_schema_timestamp_pattern(text: str, ms: int | None, event_validator: Draft202012Validator) -> None:
    document = {"event_id": "e", "account_id": "a", "occurred_at": text, "type": "api.request", "user_id": "u"}
    schema_ok = event_validator.is_valid(document)
    if text in PATTERN_CANNOT_SAY:
        assert schema_ok and ms is None  # the schema lets it through; decode says invalid_timestamp
    else:
        assert schema_ok == (ms is not None)


# JSON Schema counts 1e3 or 5.0 as integers (decode does not), and Python's json reads at most 4300 digits.
INTEGER_ROWS = [row for row in PLAN_NUMBERS if row[1].lstrip("-").isdigit() and len(row[1]) < 100]


@pytest.mark.parametrize(("field", "text", "accepted"), INTEGER_ROWS)
def test_json_schema_number_bounds(
    field: str, text: str, accepted: bool, event_validator: Draft202012Validator
) -> None:
    document = json.loads(with_raw(PLAN, field, text))
    assert event_validator.is_valid(document) == accepted
    assert (not isinstance(decode(json.dumps(document)), Rejection)) == accepted
