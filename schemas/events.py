"""Wire format of the session events that upstream services publish (SPEC section 3).

Every event is one JSON object. `decode` turns raw bytes into a typed event, or into a `Rejection` with a precise
reason; it never raises on bad input.
"""

from __future__ import annotations

import functools
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


def parse_timestamp(value: Any) -> datetime:
    """Parse an RFC 3339 timestamp with an offset into an aware UTC datetime truncated to milliseconds."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 string")
    text = value.strip()
    if len(text) < 20 or text[10] not in "Tt ":
        raise ValueError("must be an RFC 3339 timestamp like 2026-11-02T09:00:00.250Z")
    if text[-1] == "z":
        text = text[:-1] + "Z"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError("must be an RFC 3339 timestamp like 2026-11-02T09:00:00.250Z") from exc
    if parsed.tzinfo is None:
        raise ValueError("must carry a UTC offset")
    if parsed.tzinfo is not UTC:
        parsed = parsed.astimezone(UTC)
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
    schema_version: StrictInt = Field(default=1, ge=1)

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
    licenses: StrictInt = Field(ge=0)
    overage_allowance: StrictInt = Field(ge=0)
    billing_anchor_day: StrictInt = Field(ge=1, le=28)
    timezone: StrictStr = Field(description="IANA time zone name, e.g. Europe/Berlin")
    grace_minutes: StrictInt = Field(default=30, ge=0)
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


def _reason(error: dict[str, Any]) -> str:
    kind = error["type"]
    loc = ".".join(str(part) for part in error["loc"][1:]) if len(error["loc"]) > 1 else ""
    if kind == "json_invalid":
        return "invalid_json"
    if kind in ("union_tag_invalid",):
        return "unknown_type"
    if kind == "union_tag_not_found":
        return "missing_field:type"
    if kind in ("model_type", "model_attributes_type", "dict_type") and not loc:
        return "not_an_object"
    if kind == "missing":
        return f"missing_field:{loc}"
    return f"invalid_field:{loc}" if loc else f"invalid:{kind}"


def decode(raw: bytes | str) -> Event | Rejection:
    """Decode one wire record; bad input gives a `Rejection`, never an exception."""
    if isinstance(raw, bytes):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection(reason="invalid_utf8", detail=str(exc))
    try:
        return EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0]
        # A wrong `type` value reports as a tag error of the union; anything else names the field.
        if first["type"] == "union_tag_invalid" or len(first["loc"]) == 0 and first["type"] != "json_invalid":
            return Rejection(reason=_reason(first), detail=first["msg"])
        return Rejection(reason=_reason(first), detail=f"{'.'.join(map(str, first['loc']))}: {first['msg']}")
    except Exception as exc:  # noqa: BLE001 - decode must never raise on input
        return Rejection(reason="invalid_json", detail=repr(exc))


def decode_mapping(row: dict[str, Any]) -> Event | Rejection:
    """Validate an already-parsed record (a Parquet row, say); absent fields may be None. Never raises."""
    clean = {key: value for key, value in row.items() if value is not None}
    moment = clean.get("occurred_at")
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            return Rejection(reason="invalid_field:occurred_at", detail="must carry a UTC offset")
        clean["occurred_at"] = moment.astimezone(UTC).isoformat()
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
