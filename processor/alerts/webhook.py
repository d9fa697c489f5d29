"""One webhook request per alert record: body, idempotency key, HMAC signature, retry policy, the POST itself.

The body is the alerts topic's record (schemas/outputs.py `AlertRecord`, extra fields kept) with `type`
`alert.raised` or `alert.resolved` first. `Idempotency-Key: <alert_id>:<state>` is the same for every attempt and
every run, so a receiver that dedupes by it sees each alert and its resolution once. `X-Ccmeter-Signature:
sha256=<hex>` is the HMAC-SHA256 of the exact body bytes under the shared secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from schemas.outputs import AlertRecord

KEY_HEADER = "Idempotency-Key"
SIGNATURE_HEADER = "X-Ccmeter-Signature"
SECRET_ENV = "CCMETER_WEBHOOK_SECRET"
USER_AGENT = "ccmeter-alerts/1"
RETRY_AFTER_CAP = 600.0  # a Retry-After longer than this is waited for this long only
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

Outcome = Literal["ok", "retry", "dead"]


class BadAlert(ValueError):
    """A record of the alerts topic that is not an alert (skipped, with one line)."""


@dataclass(frozen=True)
class Delivery:
    """What is POSTed for one alert record."""

    alert_id: str
    state: str
    body: bytes

    @property
    def key(self) -> str:
        """The idempotency key, `<alert_id>:<state>`."""
        return f"{self.alert_id}:{self.state}"


def sign(body: bytes, secret: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of `body` under `secret`."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of `body` under `secret` (constant-time comparison)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header.strip())


def build_delivery(value: bytes | None) -> Delivery:
    """The delivery of one alerts-topic record value; raises BadAlert for anything that is not an alert record."""
    if value is None:
        raise BadAlert("empty record (tombstone)")
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadAlert(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(record, dict):
        raise BadAlert(f"not a JSON object but {type(record).__name__}")
    try:
        alert = AlertRecord.model_validate(record)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "record"
        raise BadAlert(f"invalid alert: {where}: {first.get('msg', 'invalid')}") from None
    body: dict[str, Any] = {"type": f"alert.{alert.state}"}
    body.update((name, field) for name, field in record.items() if name != "type")
    return Delivery(alert.alert_id, alert.state, _encode(body).encode())


def check_url(url: str) -> str:
    """`url` if it is an absolute http(s) URL with a host; ValueError otherwise."""
    try:
        parts = urlsplit(url)
        has_host = bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"--webhook {redact_url(url)!r} is not a URL") from None
    if re.search(r"[\s\x00-\x1f\x7f]", url):
        raise ValueError(f"--webhook {redact_url(url)!r} holds white space or control characters")
    if parts.scheme not in ("http", "https") or not has_host:
        raise ValueError(f"--webhook must be an http:// or https:// URL with a host, not {redact_url(url)!r}")
    return url


def redact_url(url: str) -> str:
    """`url` without user info, query and fragment (they may carry tokens): safe to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme:
        return "<invalid URL>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def default_group(url: str) -> str:
    """The default consumer group of a webhook: `ccmeter-alerts-` and 12 hex digits of the URL's SHA-256."""
    return "ccmeter-alerts-" + hashlib.sha256(url.encode()).hexdigest()[:12]


def load_secret(secret_file: str | None, environ: Mapping[str, str]) -> bytes:
    """The shared secret from `secret_file` (surrounding whitespace dropped) or $CCMETER_WEBHOOK_SECRET.

    Raises ValueError (never showing the secret) when neither gives a non-empty secret."""
    if secret_file is not None:
        try:
            secret = Path(secret_file).read_bytes().strip()
        except OSError as exc:
            raise ValueError(f"--secret-file {secret_file}: {exc.strerror or exc}") from None
        if not secret:
            raise ValueError(f"--secret-file {secret_file} is empty")
        return secret
    secret = environ.get(SECRET_ENV, "").strip().encode()
    if not secret:
        raise ValueError(f"no signing secret: give --secret-file FILE or set ${SECRET_ENV}")
    return secret


def classify(status: int) -> Outcome:
    """What an HTTP status means for the alert: 2xx delivered; 408, 429, 5xx (and 1xx/3xx) retried; other 4xx dead."""
    if 200 <= status < 300:
        return "ok"
    if 400 <= status < 500 and status not in (408, 429):
        return "dead"
    return "retry"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"\d{1,10}", text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with jitter: `first` doubled per failed attempt up to `cap`, then 50-100% of it.

    A `Retry-After` of the receiver is honoured: the wait is at least that (up to RETRY_AFTER_CAP)."""

    first: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1, 2, ...)."""
        base = min(self.cap, self.first * 2 ** min(max(attempt, 1) - 1, 32))
        wait = base * (0.5 + 0.5 * (rng or random).random())
        if retry_after is not None:
            wait = max(wait, min(retry_after, RETRY_AFTER_CAP))
        return wait


@dataclass(frozen=True)
class Attempt:
    """The result of one POST: the outcome, the HTTP status (None without a response) and a short reason."""

    outcome: Outcome
    status: int | None
    reason: str
    retry_after: float | None = None


def headers(delivery: Delivery, secret: bytes) -> dict[str, str]:
    """The request headers of `delivery`."""
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        KEY_HEADER: delivery.key,
        SIGNATURE_HEADER: sign(delivery.body, secret),
    }


async def post(session: Any, url: str, delivery: Delivery, secret: bytes, timeout: float) -> Attempt:
    """POST `delivery` once with an aiohttp `session`; network errors and timeouts come back as a "retry" Attempt."""
    import aiohttp

    try:
        async with session.post(
            url,
            data=delivery.body,
            headers=headers(delivery, secret),
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            text = (await response.content.read(200)).decode("utf-8", "replace")
            reason = f"HTTP {response.status}" + (f": {_one_line(text)}" if text.strip() else "")
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return Attempt(classify(response.status), response.status, reason, retry_after)
    except TimeoutError:
        return Attempt("retry", None, f"no answer within {timeout:g}s")
    except (aiohttp.ClientError, OSError) as exc:
        return Attempt("retry", None, _describe(exc))


def _one_line(text: str) -> str:
    cleaned = re.sub(r"\s+", " ", text).strip()
    return "".join(ch if ch.isprintable() else "?" for ch in cleaned)[:120]


def _describe(exc: BaseException) -> str:
    """One short line for a connection failure."""
    name = type(exc).__name__
    text = _one_line(str(exc))
    return f"{name}: {text}" if text and text != name else name
