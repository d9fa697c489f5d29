"""The webhook request: body, signature, retry policy, and one POST against a real local HTTP server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from processor.alerts.webhook import (
    KEY_HEADER,
    RETRY_AFTER_CAP,
    SECRET_ENV,
    SIGNATURE_HEADER,
    Attempt,
    BadAlert,
    RetryPolicy,
    build_delivery,
    check_url,
    classify,
    default_group,
    load_secret,
    parse_retry_after,
    post,
    redact_url,
    sign,
    verify,
)

SECRET = b"s3cret"


def alert(state: str = "raised", **extra: Any) -> dict[str, Any]:
    record = {
        "alert_id": "0123456789abcdef",
        "account_id": "acme",
        "kind": "over_licenses",
        "state": state,
        "at": "2026-11-02T09:00:00.000Z",
        "usage": 12,
        "licenses": 10,
        "overage_allowance": 2,
        "message": "usage 12 > 10 licenses",
    }
    return {**record, **extra}


def test_signature_is_the_hex_hmac_sha256_of_the_exact_body() -> None:
    body = b'{"type":"alert.raised"}'
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert sign(body, SECRET) == f"sha256={expected}"
    assert verify(body, SECRET, f"sha256={expected}")
    assert not verify(body + b" ", SECRET, f"sha256={expected}")
    assert not verify(body, b"other", f"sha256={expected}")
    assert not verify(body, SECRET, None)


def test_body_is_the_record_with_its_type_first_and_unknown_fields_kept() -> None:
    for state in ("raised", "resolved"):
        delivery = build_delivery(json.dumps(alert(state, future_field=[1, 2], type="spoofed")).encode())
        body = json.loads(delivery.body)
        assert list(body)[0] == "type" and body["type"] == f"alert.{state}"
        assert {k: v for k, v in body.items() if k != "type"} == alert(state, future_field=[1, 2])
        assert delivery.key == f"0123456789abcdef:{state}"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"\xff\xfe", "not JSON"),
        (b"{", "not JSON"),
        (b"[1]", "not a JSON object"),
        (json.dumps(alert(state="open")).encode(), "invalid alert: state"),
        (json.dumps({k: v for k, v in alert().items() if k != "alert_id"}).encode(), "invalid alert: alert_id"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
    ],
)
def test_records_that_are_not_alerts_are_one_clear_error(value: bytes | None, reason: str) -> None:
    with pytest.raises(BadAlert, match=reason):
        build_delivery(value)


def test_status_classes() -> None:
    assert [classify(s) for s in (200, 201, 204)] == ["ok"] * 3
    assert [classify(s) for s in (408, 429, 500, 502, 503, 504, 301, 100)] == ["retry"] * 8
    assert [classify(s) for s in (400, 401, 403, 404, 409, 410, 413, 422)] == ["dead"] * 8


def test_retry_after_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=90), usegmt=True), now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-3") is None


def test_backoff_doubles_up_to_the_cap_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(first=0.5, cap=8.0)
    rng = random.Random(7)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 8.0), (1000, 8.0)]:
        waits = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert all(base / 2 <= w <= base for w in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > base / 4  # jitter spreads the waits
    assert policy.delay(1, retry_after=20.0, rng=rng) == 20.0  # longer than the backoff: waited in full
    assert policy.delay(5, retry_after=0.0, rng=rng) >= 4.0  # shorter: the backoff still applies
    assert policy.delay(1, retry_after=10**9, rng=rng) == RETRY_AFTER_CAP


def test_secret_from_file_or_environment_never_echoed(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("  file-secret\n")
    assert load_secret(str(secret_file), {SECRET_ENV: "env"}) == b"file-secret"
    assert load_secret(None, {SECRET_ENV: " env-secret "}) == b"env-secret"
    (tmp_path / "empty").write_text("\n")
    for path, env, message in [
        (None, {}, "no signing secret"),
        (None, {SECRET_ENV: "  "}, "no signing secret"),
        (str(tmp_path / "missing"), {SECRET_ENV: "env-secret"}, "No such file"),
        (str(tmp_path / "empty"), {}, "is empty"),
    ]:
        with pytest.raises(ValueError, match=message) as caught:
            load_secret(path, env)
        assert "env-secret" not in str(caught.value)


def test_urls_are_checked_and_logged_without_credentials() -> None:
    assert check_url("https://hooks.example.com/cc") == "https://hooks.example.com/cc"
    bad_urls = ("ftp://example.com/x", "hooks.example.com/cc", "http:///path", "http://host:port/x", "", "http://a b/")
    for bad in bad_urls:
        with pytest.raises(ValueError):
            check_url(bad)
    assert redact_url("https://user:pw@example.com:8443/hook?token=abc#f") == "https://example.com:8443/hook"
    assert "pw" not in str(pytest.raises(ValueError, check_url, "ftp://u:pw@x/?t=pw").value)
    assert default_group("https://a/") == default_group("https://a/") != default_group("https://b/")
    assert default_group("https://a/").startswith("ccmeter-alerts-") and len(default_group("https://a/")) == 27


async def _post_to(handler_status: list[Any], timeout: float = 0.5) -> list[tuple[Attempt, dict[str, str], bytes]]:
    """POST one alert per entry of `handler_status` to a local aiohttp server answering with that behaviour."""
    import aiohttp
    from aiohttp import web

    seen: list[tuple[dict[str, str], bytes]] = []
    behaviours = iter(handler_status)

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append((dict(request.headers), await request.read()))
        behaviour = next(behaviours)
        if behaviour == "drop":
            assert request.transport is not None
            request.transport.close()
            await asyncio.sleep(0.2)
        if behaviour == "slow":
            await asyncio.sleep(timeout + 0.5)
        status, extra = (behaviour, {}) if isinstance(behaviour, int) else (200, {})
        if status == 503:
            extra = {"Retry-After": "3"}
        return web.Response(status=status, text="nope\n\tno" if status >= 400 else "ok", headers=extra)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    delivery = build_delivery(json.dumps(alert()).encode())
    results = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in handler_status:
                attempt = await post(session, f"http://127.0.0.1:{port}/hook", delivery, SECRET, timeout)
                headers, body = seen[-1]
                results.append((attempt, headers, body))
    finally:
        await runner.cleanup()
    return results


def test_one_post_against_a_real_server_classifies_every_answer() -> None:
    results = asyncio.run(_post_to([200, 503, 400, 429, "drop", "slow", 204]))
    outcomes = [(a.outcome, a.status) for a, _, _ in results]
    assert outcomes == [
        ("ok", 200),
        ("retry", 503),
        ("dead", 400),
        ("retry", 429),
        ("retry", None),
        ("retry", None),
        ("ok", 204),
    ]
    assert results[1][0].retry_after == 3.0
    assert results[2][0].reason == "HTTP 400: nope no"  # one line, whatever the receiver sent
    assert results[5][0].reason == "no answer within 0.5s"
    for _, headers, body in results:
        assert headers[KEY_HEADER] == "0123456789abcdef:raised"
        assert headers["Content-Type"] == "application/json"
        assert verify(body, SECRET, headers[SIGNATURE_HEADER])
