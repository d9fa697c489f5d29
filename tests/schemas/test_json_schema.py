"""The JSON Schema files that producers validate against: up to date, and they agree with `decode`."""

from __future__ import annotations

import json

import jsonschema
import pytest

from schemas.events import Rejection, decode
from schemas.generate import JSON_DIR, build_schemas, render


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
