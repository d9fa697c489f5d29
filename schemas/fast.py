"""A fast path for decoding the common, well-formed wire records (the worker's hot loop).

`decode_wire(raw)` returns exactly what `schemas.events.decode` returns for the fields the fold reads, or a
`Rejection` with the same reason and detail: a record is taken by the fast path only when it is plainly valid (a
JSON object msgspec reads into one of the session event shapes below, with a timestamp of the common UTC forms);
anything else (a plan change, an odd timestamp, a bad field, invalid JSON, a record near a limit) goes to pydantic's
`decode`, which decides. The fast path is therefore never more lenient than `decode`: it can only be slower on
unusual records. `tests/schemas/test_fast.py` holds it to that on generated and mutated records.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, ClassVar

import msgspec

from schemas.events import (
    COUNT_LIMIT,
    MAX_JSON_DEPTH,
    MAX_RECORD_BYTES,
    MAX_YEAR,
    MIN_YEAR,
    Event,
    Rejection,
    decode,
    to_ms,
)

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Version = Annotated[int, msgspec.Meta(ge=1, le=COUNT_LIMIT - 1)]


class _Base(msgspec.Struct, tag_field="type", frozen=True, kw_only=True):
    """Fields common to every event (unknown fields are ignored, as pydantic's models do)."""

    event_id: _Id
    account_id: _Id
    occurred_at: str
    schema_version: _Version = 1


class _Device(_Base, frozen=True):
    user_id: _Id
    device_id: _Id


class DesktopSignedIn(_Device, frozen=True, tag="desktop.signed_in"):
    type: ClassVar[str] = "desktop.signed_in"


class DesktopSignedOut(_Device, frozen=True, tag="desktop.signed_out"):
    type: ClassVar[str] = "desktop.signed_out"


class DesktopHeartbeat(_Device, frozen=True, tag="desktop.heartbeat"):
    type: ClassVar[str] = "desktop.heartbeat"


class WorkSessionStarted(_Device, frozen=True, tag="work_session.started"):
    type: ClassVar[str] = "work_session.started"


class WorkSessionEnded(_Device, frozen=True, tag="work_session.ended"):
    type: ClassVar[str] = "work_session.ended"


class PortalPageViewed(_Base, frozen=True, tag="portal.page_viewed"):
    type: ClassVar[str] = "portal.page_viewed"
    user_id: _Id
    page: str


class PortalSignedOut(_Base, frozen=True, tag="portal.signed_out"):
    type: ClassVar[str] = "portal.signed_out"
    user_id: _Id


class ApiRequest(_Base, frozen=True, tag="api.request"):
    type: ClassVar[str] = "api.request"
    user_id: _Id
    endpoint: str | None = None


FastEvent = (
    DesktopSignedIn
    | DesktopSignedOut
    | DesktopHeartbeat
    | WorkSessionStarted
    | WorkSessionEnded
    | PortalPageViewed
    | PortalSignedOut
    | ApiRequest
)
WireEvent = Event | FastEvent  # what `decode_wire` gives: the fold reads the same fields of either
_DECODER = msgspec.json.Decoder(FastEvent)


_MINUTES: dict[str, int] = {}  # cache: `YYYY-MM-DDTHH:MM:` -> milliseconds (a stream reads the same minutes often)
_MINUTES_CACHED = 100_000


def _minute_ms(prefix: str) -> int | None:
    """Milliseconds of a `YYYY-MM-DDTHH:MM:` prefix in UTC, or None if it is not one (in the UTC year bounds)."""
    digits = prefix[0:4] + prefix[5:7] + prefix[8:10] + prefix[11:13] + prefix[14:16]
    if len(digits) != 12 or not (digits.isascii() and digits.isdigit()):
        return None
    if prefix[4] != "-" or prefix[7] != "-" or prefix[10] != "T" or prefix[13] != ":" or prefix[16] != ":":
        return None
    year = int(digits[0:4])
    month, day, hour, minute = (int(digits[a : a + 2]) for a in (4, 6, 8, 10))
    if not MIN_YEAR <= year <= MAX_YEAR or hour > 23 or minute > 59:
        return None
    try:
        days = date(year, month, day).toordinal() - 719163  # date(1970, 1, 1).toordinal()
    except ValueError:
        return None
    if len(_MINUTES) >= _MINUTES_CACHED:
        _MINUTES.clear()
    _MINUTES[prefix] = ms = ((days * 24 + hour) * 60 + minute) * 60_000
    return ms


def timestamp_ms(value: str) -> int | None:
    """Milliseconds of `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DDTHH:MM:SS.fffZ` (the common forms; what
    `parse_timestamp` gives for them), or None for any other text."""
    size = len(value)
    if size == 24 and value[19] == "." and value[23] == "Z":
        digits = value[17:19] + value[20:23]  # SSfff: the milliseconds within the minute
    elif size == 20 and value[19] == "Z":
        digits = value[17:19] + "000"
    else:
        return None
    if not (digits.isascii() and digits.isdigit()) or digits >= "6":  # seconds 00..59
        return None
    prefix = value[:17]
    minute = _MINUTES.get(prefix)
    if minute is None:
        minute = _minute_ms(prefix)
        if minute is None:
            return None
    return minute + int(digits)


def _utf8(raw: bytes) -> bool:
    """True if `raw` is UTF-8 (msgspec does not check the text of the fields it skips)."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_wire(raw: bytes, max_bytes: int = MAX_RECORD_BYTES) -> tuple[WireEvent, int] | Rejection:
    """Decode one wire record into an event and its `occurred_at` in milliseconds, or a `Rejection`.

    Same verdict as `schemas.events.decode` (whose event's fields the fold reads are equal); never raises.
    """
    if len(raw) <= max_bytes and raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH and (raw.isascii() or _utf8(raw)):
        try:
            fast = _DECODER.decode(raw)
        except Exception:  # noqa: BLE001, S110 - pydantic's decode below gives the verdict and its reason
            pass
        else:
            at_ms = timestamp_ms(fast.occurred_at)
            if at_ms is not None:
                return fast, at_ms
    event = decode(raw, max_bytes)
    if isinstance(event, Rejection):
        return event
    return event, to_ms(event.occurred_at)
