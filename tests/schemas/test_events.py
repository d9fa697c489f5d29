"""Decoding of the wire format: valid events, and a precise reason for every kind of bad input."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import (
    ApiRequest,
    DesktopSignedIn,
    PlanChanged,
    PortalPageViewed,
    Rejection,
    decode,
    decode_mapping,
    fingerprint,
    format_ms,
    from_ms,
    parse_timestamp,
    to_ms,
)
from tests.schemas.cases import HUGE, TIMESTAMPS, number_lines, timestamp_lines

BASE = {"event_id": "e1", "account_id": "acme", "occurred_at": "2026-11-02T09:00:00.250Z"}


def line(**fields: object) -> bytes:
    return json.dumps({**BASE, **fields}).encode()


def test_desktop_event_normalised_to_utc_milliseconds() -> None:
    event = decode(
        line(type="desktop.signed_in", user_id="u1", device_id="d1", occurred_at="2026-11-02T10:00:00.250999+01:00")
    )
    assert isinstance(event, DesktopSignedIn)
    # 09:00:00.250 UTC on 2026-11-02; the microseconds are truncated, not rounded.
    assert event.at_ms == int(datetime(2026, 11, 2, 9, 0, 0, tzinfo=UTC).timestamp()) * 1000 + 250
    assert format_ms(event.at_ms) == "2026-11-02T09:00:00.250Z"


def test_unknown_extra_fields_are_ignored_and_schema_version_defaults_to_1() -> None:
    event = decode(line(type="api.request", user_id="u1", colour="blue"))
    assert isinstance(event, ApiRequest)
    assert event.schema_version == 1 and event.endpoint is None


def test_plan_defaults() -> None:
    event = decode(
        line(
            type="account.plan_changed",
            licenses=10,
            overage_allowance=2,
            billing_anchor_day=28,
            timezone="Europe/Berlin",
        )
    )
    assert isinstance(event, PlanChanged)
    assert (event.grace_minutes, event.grace_mode) == (30, "contiguous")


def test_contact_center_pages() -> None:
    cc = decode(line(type="portal.page_viewed", user_id="u", page="usage_reports.contact_center"))
    other = decode(line(type="portal.page_viewed", user_id="u", page="meetings.list"))
    assert isinstance(cc, PortalPageViewed) and cc.is_contact_center
    assert isinstance(other, PortalPageViewed) and not other.is_contact_center


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"", "invalid_json"),
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (line(type="desktop.rebooted", user_id="u", device_id="d"), "unknown_type"),
        (json.dumps(BASE).encode(), "missing_field:type"),
        (line(type="desktop.signed_in", device_id="d"), "missing_field:user_id"),
        (line(type="desktop.heartbeat", user_id="u"), "missing_field:device_id"),
        (line(type="portal.page_viewed", user_id="u"), "missing_field:page"),
        (line(type="api.request", user_id=7), "invalid_field:user_id"),
        (line(type="api.request", user_id=""), "invalid_field:user_id"),
        (line(type="api.request", user_id="u", event_id="x" * 129), "invalid_field:event_id"),
        (line(type="api.request", user_id="u", occurred_at="2026-11-02T09:00:00"), "invalid_timestamp"),
        (line(type="api.request", user_id="u", occurred_at=1793606400), "invalid_field:occurred_at"),
        (line(type="api.request", user_id="u", occurred_at=None), "invalid_field:occurred_at"),
        (line(type="api.request", user_id="u", occurred_at="yesterday"), "invalid_timestamp"),
        (line(type="api.request", user_id="", occurred_at="yesterday"), "invalid_timestamp"),  # field order
        (line(type="api.request", user_id="u", event_id="", occurred_at="yesterday"), "invalid_field:event_id"),
        (
            line(type="account.plan_changed", licenses=5.0, overage_allowance=0, billing_anchor_day=1, timezone="UTC"),
            "invalid_field:licenses",
        ),
        (
            line(type="account.plan_changed", licenses=-1, overage_allowance=0, billing_anchor_day=1, timezone="UTC"),
            "invalid_field:licenses",
        ),
        (
            line(type="account.plan_changed", licenses=5, overage_allowance=0, billing_anchor_day=29, timezone="UTC"),
            "invalid_field:billing_anchor_day",
        ),
        (
            line(
                type="account.plan_changed", licenses=5, overage_allowance=0, billing_anchor_day=1, timezone="Mars/Base"
            ),
            "invalid_field:timezone",
        ),
        (
            line(
                type="account.plan_changed",
                licenses=5,
                overage_allowance=0,
                billing_anchor_day=1,
                timezone="UTC",
                grace_mode="weekly",
            ),
            "invalid_field:grace_mode",
        ),
        (
            line(type="account.plan_changed", overage_allowance=0, billing_anchor_day=1, timezone="UTC"),
            "missing_field:licenses",
        ),
    ],
)
def test_bad_input_gives_a_precise_reason(raw: bytes, reason: str) -> None:
    result = decode(raw)
    assert isinstance(result, Rejection)
    assert result.reason == reason


def test_fingerprint_tells_conflicts_from_copies() -> None:
    first = decode(line(type="desktop.heartbeat", user_id="u", device_id="d"))
    copy = decode(line(type="desktop.heartbeat", user_id="u", device_id="d", extra="ignored"))
    same_instant_other_offset = decode(
        line(type="desktop.heartbeat", user_id="u", device_id="d", occurred_at="2026-11-02T10:00:00.250+01:00")
    )
    conflict = decode(line(type="desktop.heartbeat", user_id="u", device_id="d2"))
    assert fingerprint(first) == fingerprint(copy) == fingerprint(same_instant_other_offset)
    assert fingerprint(first) != fingerprint(conflict)


def test_decode_mapping_accepts_parquet_rows() -> None:
    row = {
        **BASE,
        "occurred_at": datetime(2026, 11, 2, 9, 0, 0, 250000, tzinfo=UTC),
        "type": "portal.signed_out",
        "user_id": "u",
        "device_id": None,
    }
    event = decode_mapping(row)
    assert not isinstance(event, Rejection)
    assert format_ms(event.at_ms) == "2026-11-02T09:00:00.250Z"
    naive = decode_mapping({**row, "occurred_at": datetime(2026, 11, 2, 9, 0)})
    assert isinstance(naive, Rejection) and naive.reason == "invalid_field:occurred_at"
    missing = decode_mapping({**row, "user_id": None})
    assert isinstance(missing, Rejection) and missing.reason == "missing_field:user_id"


@pytest.mark.parametrize(
    "fields",
    [
        {
            "type": "account.plan_changed",
            "licenses": 1,
            "overage_allowance": 0,
            "billing_anchor_day": 1,
            "timezone": "Europe",
        },
        {"type": "api.request", "user_id": "u", "occurred_at": "0001-01-01T00:30:00+01:00"},
    ],
)
def test_decoders_never_raise_on_odd_values(fields: dict) -> None:
    record = {**BASE, **fields}
    assert isinstance(decode(json.dumps(record)), Rejection)
    assert isinstance(decode_mapping(record), Rejection)


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_format_ms_equals_the_datetime_text(ms: int) -> None:
    """The minute-cached `format_ms` writes what strftime of the full datetime writes, years 1 to 9999."""
    moment = from_ms(ms)
    assert format_ms(ms) == moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest.mark.parametrize(("text", "ms"), TIMESTAMPS)
def test_strict_rfc3339_timestamps(text: str, ms: int | None) -> None:
    """SPEC 3: the strict RFC 3339 profile, truncated to milliseconds, in the UTC years 1970..9998."""
    if ms is None:
        with pytest.raises(ValueError, match="RFC 3339"):
            parse_timestamp(text)
    else:
        assert to_ms(parse_timestamp(text)) == ms
        assert parse_timestamp(text).tzinfo is UTC


def test_timestamp_table_through_decode() -> None:
    for raw, ms in timestamp_lines():
        result = decode(raw)
        if ms is None:
            assert isinstance(result, Rejection) and result.reason == "invalid_timestamp", raw
        else:
            assert not isinstance(result, Rejection) and result.at_ms == ms, raw


def test_non_string_timestamps_are_ill_typed_fields() -> None:
    for value in (1793606400, 1.5, True, ["2026-11-02T09:00:00Z"], {"at": "2026-11-02T09:00:00Z"}):
        with pytest.raises(ValueError, match="string"):
            parse_timestamp(value)
        result = decode(line(type="api.request", user_id="u", occurred_at=value))
        assert isinstance(result, Rejection) and result.reason == "invalid_field:occurred_at"
    missing = decode(json.dumps({"event_id": "e", "account_id": "a", "type": "api.request", "user_id": "u"}))
    assert isinstance(missing, Rejection) and missing.reason == "missing_field:occurred_at"


def test_number_bounds_and_huge_unknown_numbers() -> None:
    """Bounded plan numbers; numbers of any size in unknown fields are ignored; the process limit is untouched."""
    limit = sys.get_int_max_str_digits()
    for raw, reason in number_lines():
        result = decode(raw)
        got = result.reason if isinstance(result, Rejection) else None
        assert got == reason, raw[:150]
    assert sys.get_int_max_str_digits() == limit


def test_huge_numbers_keep_the_other_fields() -> None:
    raw = line(type="api.request", user_id="u")[:-1] + f', "big": {HUGE}, "tail": [-{HUGE}, "{HUGE}"]}}'.encode()
    event = decode(raw)
    assert isinstance(event, ApiRequest) and event.user_id == "u" and event.at_ms == 1_793_610_000_250
    as_text = decode(raw.decode())
    assert as_text == event


def test_decode_mapping_bounds_typed_timestamps() -> None:
    row = {**BASE, "type": "api.request", "user_id": "u"}
    for moment, reason in (
        (datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), "invalid_timestamp"),
        (datetime(1970, 1, 1, tzinfo=UTC), None),
        (datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))), "invalid_timestamp"),
        (datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-2))), "invalid_timestamp"),
        (datetime(9998, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), None),
    ):
        result = decode_mapping({**row, "occurred_at": moment})
        assert (result.reason if isinstance(result, Rejection) else None) == reason, moment
    text = decode_mapping({**row, "occurred_at": "2026-11-02T09:00:00,5Z"})
    assert isinstance(text, Rejection) and text.reason == "invalid_timestamp"
