"""Shared tables of wire values (SPEC section 3): strict RFC 3339 timestamps and number bounds.

`tests/schemas/test_events.py` checks them against `decode`, `tests/processor/batch/test_wire.py` against the batch
engine (same verdict, same reason, same milliseconds) and `tests/schemas/test_json_schema.py` against the JSON Schema.
"""

from __future__ import annotations

import json

T = 1_793_610_000_000  # 2026-11-02T09:00:00Z
HUGE = "1" * 5000  # beyond the 4300 digits that pydantic's JSON parser reads

# (occurred_at text, UTC milliseconds when accepted or None when it is `invalid_timestamp`)
TIMESTAMPS: list[tuple[str, int | None]] = [
    ("2026-11-02T09:00:00Z", T),
    ("2026-11-02T09:00:00.250Z", T + 250),
    ("2026-11-02t09:00:00.250z", T + 250),
    ("2026-11-02T10:00:00.250+01:00", T + 250),
    ("2026-11-02T03:30:00.250-05:30", T + 250),
    ("2026-11-02T09:00:00-00:00", T),
    ("2026-11-03T08:59:00+23:59", T),
    ("2026-11-02T09:00:00.5Z", T + 500),
    ("2026-11-02T09:00:00.2509Z", T + 250),  # truncated, not rounded
    ("2026-11-02T09:00:00.123456789Z", T + 123),  # 9 digits, truncated
    ("2026-11-02T09:00:00.999999999Z", T + 999),
    ("2024-02-29T12:00:00Z", 1_709_208_000_000),
    ("1970-01-01T00:00:00Z", 0),
    ("1969-12-31T23:30:00-01:00", 1_800_000),  # the offset brings it into 1970
    ("9998-12-31T23:59:59.999Z", 253_370_764_799_999),
    ("9999-01-01T00:30:00+01:00", 253_370_763_000_000),  # the offset brings it into 9998
    # not RFC 3339 in SPEC's strict profile
    ("2026-W45-1T10:00:00Z", None),
    ("2026W451T10:00:00Z", None),
    ("2026-306T10:00:00Z", None),
    ("2026-11-02T10:00:00,5Z", None),
    ("2026-11-02T10:00:00+01:00:30", None),
    ("2026-11-02T10:00:00+0100", None),
    ("2026-11-02T10:00:00+01", None),
    ("2026-11-02T10:00:00", None),
    ("2026-11-02 10:00:00Z", None),
    ("2026-11-02", None),
    ("2026-11-02T09:00Z", None),
    ("20261102T090000Z", None),
    ("2026-11-02T09:00:00.Z", None),
    ("2026-11-02T09:00:00.1234567890Z", None),  # 10 digits
    ("2026-11-02T09:00:00ZZ", None),
    ("2026-11-02T09:00:00z+01:00", None),
    (" 2026-11-02T09:00:00Z", None),
    ("2026-11-02T09:00:00Z ", None),
    ("2026-11-02T09:00:00Z\n", None),
    ("\uff12\uff10\uff12\uff16-11-02T09:00:00Z", None),  # full-width digits
    ("+2026-11-02T09:00:00Z", None),
    ("12026-11-02T09:00:00Z", None),
    ("", None),
    ("yesterday", None),
    # components out of range
    ("2026-11-02T24:00:00Z", None),
    ("2026-11-02T23:59:60Z", None),  # leap seconds are not accepted
    ("2026-02-29T12:00:00Z", None),
    ("2026-04-31T12:00:00Z", None),
    ("2026-13-01T00:00:00Z", None),
    ("2026-00-10T00:00:00Z", None),
    ("2026-11-00T00:00:00Z", None),
    ("2026-11-02T09:60:00Z", None),
    ("2026-11-02T09:00:00+24:00", None),
    ("2026-11-02T09:00:00+01:60", None),
    # outside the UTC years 1970..9998
    ("1969-12-31T23:59:59.999Z", None),
    ("1970-01-01T00:30:00+01:00", None),
    ("9999-01-01T00:00:00Z", None),
    ("9998-12-31T23:30:00-01:00", None),
    ("9999-12-31T23:59:59-23:59", None),  # year 10000 in UTC
    ("0000-01-01T00:00:00Z", None),
    ("0001-01-01T00:30:00+01:00", None),  # year 0 in UTC
]

# (field, JSON text of its value, accepted) for a plan (account.plan_changed) event.
PLAN_NUMBERS: list[tuple[str, str, bool]] = [
    ("licenses", "0", True),
    ("licenses", "999999999", True),
    ("licenses", "1000000000", False),
    ("licenses", str(2**63 - 1), False),
    ("licenses", str(2**64), False),
    ("licenses", str(10**20), False),
    ("licenses", HUGE, False),
    ("licenses", "-1", False),
    ("licenses", "-" + HUGE, False),
    ("licenses", "1e3", False),
    ("licenses", HUGE + ".5", False),
    ("overage_allowance", "999999999", True),
    ("overage_allowance", "1000000000", False),
    ("overage_allowance", str(10**20), False),
    ("grace_minutes", "0", True),
    ("grace_minutes", "999999", True),
    ("grace_minutes", "1000000", False),
    ("grace_minutes", str(10**15), False),
    ("grace_minutes", HUGE, False),
    ("schema_version", "999999999", True),
    ("schema_version", "1000000000", False),
    ("schema_version", str(10**30), False),
    ("schema_version", HUGE, False),
    ("billing_anchor_day", str(10**30), False),
    ("billing_anchor_day", HUGE, False),
]

# JSON text of an unknown field's value: every one is ignored, so the event is valid.
UNKNOWN_VALUES: list[str] = [
    HUGE,
    "-" + HUGE,
    HUGE + ".5e3",
    "0." + HUGE,
    "1e" + HUGE,
    "[" + HUGE + ", " + HUGE + "]",
    '{"k": ' + HUGE + "}",
    '"' + HUGE + '"',
    str(10**30),
]

PLAN = {
    "event_id": "p1",
    "type": "account.plan_changed",
    "account_id": "a1",
    "occurred_at": "2026-11-02T09:00:00Z",
    "licenses": 10,
    "overage_allowance": 2,
    "billing_anchor_day": 1,
    "timezone": "Europe/Berlin",
}
API = {
    "event_id": "e1",
    "type": "api.request",
    "account_id": "a1",
    "occurred_at": "2026-11-02T09:00:00Z",
    "user_id": "u",
}


def with_raw(base: dict, field: str, value_json: str) -> bytes:
    """`base` as JSON with `field` set to the raw JSON text `value_json` (which may be too large for json.dumps)."""
    others = {key: value for key, value in base.items() if key != field}
    return (json.dumps(others)[:-1] + f', "{field}": {value_json}}}').encode()


def timestamp_lines() -> list[tuple[bytes, int | None]]:
    """One api.request line per TIMESTAMPS row, with its expected milliseconds (None: invalid_timestamp)."""
    return [(json.dumps({**API, "occurred_at": text}).encode(), ms) for text, ms in TIMESTAMPS]


def number_lines() -> list[tuple[bytes, str | None]]:
    """Plan lines with bounded numbers and api lines with huge unknown fields, with the expected reason."""
    rows: list[tuple[bytes, str | None]] = [
        (with_raw(PLAN, field, text), None if ok else f"invalid_field:{field}") for field, text, ok in PLAN_NUMBERS
    ]
    rows += [(with_raw(API, "extra", text), None) for text in UNKNOWN_VALUES]
    rows += [
        (with_raw(API, "user_id", HUGE), "invalid_field:user_id"),
        (with_raw(API, "occurred_at", HUGE), "invalid_field:occurred_at"),
        (with_raw(API, "occurred_at", "-" + HUGE), "invalid_field:occurred_at"),
        (with_raw(API, "extra", HUGE + ","), "invalid_json"),  # a trailing comma
        (with_raw(API, "extra", HUGE)[:-1], "invalid_json"),  # truncated
    ]
    return rows
