"""Wire format of the session events that upstream services publish (SPEC section 3).

Every event is one JSON object. `decode` turns raw bytes into a typed event, or into a `Rejection` with a precise
reason; it never raises on bad input.
"""

from __future__ import annotations

import functools
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)

CONTACT_CENTER_PAGES: frozenset[str] = frozenset(
    {
        "cc.profile",
        "cc.inbox",
        "cc.analytics",
        "cc.dashboard",
        "cc.admin",
        "cc.alerts",
        "reports.contact_center",
        "usage_reports.contact_center",
        "activity_reports.sign_in_out",
        "activity_reports.cc_operation_logs",
    }
)

EVENT_TYPES: tuple[str, ...] = (
    "desktop.signed_in",
    "desktop.signed_out",
    "desktop.heartbeat",
    "work_session.started",
    "work_session.ended",
    "portal.page_viewed",
    "portal.signed_out",
    "api.request",
    "account.plan_changed",
)


# SPEC bounds (exclusive upper limits) of the numbers of an event, the same in both engines and the JSON Schema.
COUNT_LIMIT = 10**9  # licenses, overage_allowance, schema_version
GRACE_MINUTES_LIMIT = 10**6
# occurred_at, once in UTC, lies in the years MIN_YEAR..MAX_YEAR (inclusive).
MIN_YEAR, MAX_YEAR = 1970, 9998

# Input limits, checked before any parsing (docs/running.md, "Dead letters"): a record value longer than
# MAX_RECORD_BYTES (the worker's default; `--max-record-bytes`), or whose JSON brackets nest deeper than
# MAX_JSON_DEPTH, is rejected as `too_large`. The batch engine applies the same rules to the lines of a file.
MAX_RECORD_BYTES = 1_000_000
MAX_JSON_DEPTH = 64

# RFC 3339 date-time (SPEC section 3): the strict shape, as a JSON Schema (ECMA-262) and Python pattern. Whether the
# day exists in its month and the UTC year bounds are checked after the match.
TIMESTAMP_PATTERN = (
    r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])[Tt](?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(?:[.][0-9]{1,9})?(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
TIMESTAMP_HELP = "must be an RFC 3339 timestamp like 2026-11-02T09:00:00.250Z, in UTC years 1970..9998"


def _invalid_timestamp() -> PydanticCustomError:
    return PydanticCustomError("invalid_timestamp", TIMESTAMP_HELP)


def parse_timestamp(value: Any) -> datetime:
    """Parse a strict RFC 3339 timestamp into an aware UTC datetime truncated to milliseconds.

    A non-string raises ValueError (`invalid_field:occurred_at`); a string that is not such a timestamp, or is out
    of the UTC years 1970..9998, raises a `PydanticCustomError` of type `invalid_timestamp` (a ValueError too).
    """
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 string")
    if _TIMESTAMP.fullmatch(value) is None:
        raise _invalid_timestamp()
    try:
        # the pattern leaves fromisoformat the day of the month (and years 0000); it reads T/t, Z but not z
        parsed = datetime.fromisoformat(value[:-1] + "Z" if value[-1] == "z" else value)
        if parsed.tzinfo is not UTC:
            parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _invalid_timestamp() from None
    if not MIN_YEAR <= parsed.year <= MAX_YEAR:
        raise _invalid_timestamp()
    extra = parsed.microsecond % 1000
    return parsed.replace(microsecond=parsed.microsecond - extra) if extra else parsed


def to_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch of an aware datetime."""
    return (moment - EPOCH) // ONE_MS


def from_ms(ms: int) -> datetime:
    """Aware UTC datetime of milliseconds since the Unix epoch."""
    return EPOCH + timedelta(milliseconds=ms)


@functools.lru_cache(maxsize=16_384)
def _minute_text(minute: int) -> str:
    return (EPOCH + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:")


def format_ms(ms: int) -> str:
    """RFC 3339 UTC text with milliseconds, e.g. 2026-11-02T09:00:00.250Z (the text up to the minute is cached:
    output records format many instants of the same minutes)."""
    minute, rest = divmod(ms, 60_000)
    return f"{_minute_text(minute)}{rest // 1000:02d}.{rest % 1000:03d}Z"


Timestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]
Id = Annotated[StrictStr, Field(min_length=1, max_length=128)]


class EventBase(BaseModel):
    """Fields common to every event."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: Id
    account_id: Id
    occurred_at: Timestamp = Field(description="RFC 3339 timestamp with offset; kept in UTC at millisecond precision")
    schema_version: StrictInt = Field(default=1, ge=1, le=COUNT_LIMIT - 1)

    @property
    def at_ms(self) -> int:
        """`occurred_at` in milliseconds since the Unix epoch (UTC)."""
        return (self.occurred_at - EPOCH) // ONE_MS


class DeviceEvent(EventBase):
    user_id: Id
    device_id: Id


class DesktopSignedIn(DeviceEvent):
    type: Literal["desktop.signed_in"]


class DesktopSignedOut(DeviceEvent):
    type: Literal["desktop.signed_out"]


class DesktopHeartbeat(DeviceEvent):
    type: Literal["desktop.heartbeat"]


class WorkSessionStarted(DeviceEvent):
    type: Literal["work_session.started"]


class WorkSessionEnded(DeviceEvent):
    type: Literal["work_session.ended"]


class PortalPageViewed(EventBase):
    type: Literal["portal.page_viewed"]
    user_id: Id
    page: StrictStr

    @property
    def is_contact_center(self) -> bool:
        """True for the Contact Center pages that count as a portal presence."""
        return self.page in CONTACT_CENTER_PAGES


class PortalSignedOut(EventBase):
    type: Literal["portal.signed_out"]
    user_id: Id


class ApiRequest(EventBase):
    type: Literal["api.request"]
    user_id: Id
    endpoint: StrictStr | None = None


class PlanChanged(EventBase):
    type: Literal["account.plan_changed"]
    licenses: StrictInt = Field(ge=0, le=COUNT_LIMIT - 1)
    overage_allowance: StrictInt = Field(ge=0, le=COUNT_LIMIT - 1)
    billing_anchor_day: StrictInt = Field(ge=1, le=28)
    timezone: StrictStr = Field(description="IANA time zone name, e.g. Europe/Berlin")
    grace_minutes: StrictInt = Field(default=30, ge=0, le=GRACE_MINUTES_LIMIT - 1)
    grace_mode: Literal["contiguous", "cumulative"] = "contiguous"

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("unknown IANA time zone") from exc
        return value


Event = Annotated[
    DesktopSignedIn
    | DesktopSignedOut
    | DesktopHeartbeat
    | WorkSessionStarted
    | WorkSessionEnded
    | PortalPageViewed
    | PortalSignedOut
    | ApiRequest
    | PlanChanged,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class Rejection(BaseModel):
    """Why raw bytes are not a valid event; goes to the dead-letter topic with the original bytes."""

    model_config = ConfigDict(frozen=True)

    reason: str = Field(description="machine-readable reason, e.g. invalid_json, unknown_type, missing_field:user_id")
    detail: str = ""


def _reason(error: ErrorDetails) -> str:
    kind = error["type"]
    loc = ".".join(str(part) for part in error["loc"][1:]) if len(error["loc"]) > 1 else ""
    if kind == "json_invalid":
        return "invalid_json"
    if kind == "invalid_timestamp":
        return "invalid_timestamp"
    if kind in ("union_tag_invalid",):
        return "unknown_type"
    if kind == "union_tag_not_found":
        return "missing_field:type"
    if kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
        return "not_an_object"
    if kind == "missing":
        return f"missing_field:{loc}"
    return f"invalid_field:{loc}" if loc else f"invalid:{kind}"


# pydantic's JSON parser refuses a number whose integer part has more than 4300 digits ("number out of range"),
# even in a field that is then ignored. Such a record is parsed again with those integer parts written as 10**20:
# beyond every bound, so a known field holding one stays invalid, and an unknown one is ignored as SPEC says.
_JSON_NUMBER = re.compile(r'"(?:[^"\\]|\\.)*"|(?<![-+.0-9Ee])(-?)([0-9]{4301,})((?:[.][0-9]+)?(?:[eE][-+]?[0-9]+)?)')
_HUGE_INTEGER_PART = str(10**20)


def _shorten_huge_numbers(text: str) -> str:
    """`text` with the integer part of each JSON number longer than 4300 digits replaced by 10**20."""
    return _JSON_NUMBER.sub(lambda m: m[0] if m[2] is None else m[1] + _HUGE_INTEGER_PART + m[3], text)


def _validate_json(raw: bytes | str) -> Event | Rejection:
    try:
        return EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        if first["type"] == "json_invalid" and "number out of range" in first["msg"]:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
            shortened = _shorten_huge_numbers(text)
            if shortened != text:
                return _validate_json(shortened)
        # A wrong `type` value reports as a tag error of the union; anything else names the field.
        if first["type"] == "union_tag_invalid" or len(first["loc"]) == 0 and first["type"] != "json_invalid":
            return Rejection(reason=_reason(first), detail=first["msg"])
        return Rejection(reason=_reason(first), detail=f"{'.'.join(map(str, first['loc']))}: {first['msg']}")


# What the depth check skips (the batch engine uses the same patterns, in RE2): first every escape pair (a backslash
# and the character after it), then every string literal: from a `"` to the next `"`, or to the end of the text when
# it is not closed. Both patterns always match where they start, so the scan is linear.
ESCAPE_PATTERN = r"(?s)\\."
STRING_PATTERN = r'"[^"]*(?:"|$)'
_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_STRING_LITERAL = re.compile(rb'"[^"]*(?:"|\Z)')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when brackets outside JSON strings nest deeper than `limit`: a running sum, +1 for every `[`/`{` and -1
    for every `]`/`}`, exceeds it (whether or not the text is JSON; a leading `]` takes the sum below zero, but a
    parser stops there). Cheap: only a text with more than `limit` opening brackets is scanned."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    import numpy as np  # only for the rare texts with that many brackets

    text = _ESCAPE.sub(b"", raw) if b"\\" in raw else raw
    steps = _STRING_LITERAL.sub(b"", text).translate(_DEPTH_STEP, _NOT_BRACKETS)
    return bool(steps) and int(np.frombuffer(steps, dtype=np.int8).cumsum().max()) > limit


def decode(raw: bytes | str, max_bytes: int = MAX_RECORD_BYTES) -> Event | Rejection:
    """Decode one wire record; bad input gives a `Rejection`, never an exception.

    The limits come first, before any parsing: longer than `max_bytes` (UTF-8 bytes) is `too_large`, then bytes
    that are not UTF-8 are `invalid_utf8`, then nesting deeper than MAX_JSON_DEPTH is `too_large`.
    """
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        return Rejection(reason="too_large", detail=f"{len(data)} bytes, more than the limit of {max_bytes}")
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection(reason="invalid_utf8", detail=str(exc))
    if too_deep(data):
        return Rejection(reason="too_large", detail=f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return _validate_json(raw)
    except Exception as exc:  # noqa: BLE001 - decode must never raise on input
        return Rejection(reason="invalid_json", detail=repr(exc))


def decode_mapping(row: dict[str, Any]) -> Event | Rejection:
    """Validate an already-parsed record (a Parquet row, say); absent fields may be None. Never raises."""
    clean = {key: value for key, value in row.items() if value is not None}
    moment = clean.get("occurred_at")
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            return Rejection(reason="invalid_field:occurred_at", detail="must carry a UTC offset")
        try:
            clean["occurred_at"] = moment.astimezone(UTC).isoformat()
        except OverflowError:
            return Rejection(reason="invalid_timestamp", detail=TIMESTAMP_HELP)
    try:
        return EVENT_ADAPTER.validate_python(clean)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        return Rejection(reason=_reason(first), detail=first["msg"])
    except Exception as exc:  # noqa: BLE001 - like decode: never raise on input (odd time zones, overflows)
        return Rejection(reason="invalid_json", detail=repr(exc))


def fingerprint(event: EventBase) -> str:
    """Canonical payload text used to tell a true duplicate from a conflicting one."""
    return event.model_dump_json(exclude={"schema_version"})
