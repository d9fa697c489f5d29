"""TLS of the HTTP server and of the forwarded live queries (processor/web/tls.py with the peer router)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import test_utils, web

from processor.web.tls import contexts, peer_context, server_context
from processor.worker.peers import FORWARDED_HEADER, Local, PeerRouter
from tests.processor.web.certs import self_signed

BODY = {"account_id": "acme", "usage": 1}


def test_no_files_no_tls_and_half_a_pair_is_an_error(tmp_path: Path):
    assert contexts(None, None) == (None, None)
    cert, key = self_signed(tmp_path)
    with pytest.raises(ValueError, match="go together"):
        contexts(str(cert), None)
    with pytest.raises(ValueError, match="go together"):
        contexts(None, str(key))
    server, peer = contexts(str(cert), str(key))
    assert server is not None and peer is not None


def test_unloadable_files_are_one_line_errors(tmp_path: Path):
    cert, key = self_signed(tmp_path)
    other_cert, _ = self_signed(tmp_path, "other")
    with pytest.raises(ValueError, match="cannot load them"):
        server_context(str(tmp_path / "missing.crt"), str(key))
    with pytest.raises(ValueError, match="cannot load them"):
        server_context(str(other_cert), str(key))  # key of another certificate
    (tmp_path / "junk.crt").write_text("not a certificate")
    with pytest.raises(ValueError, match="cannot use it to verify peers"):
        peer_context(str(tmp_path / "junk.crt"))


async def _ask_https_peer(tmp_path: Path, trust: bool) -> tuple[int, dict, list[tuple[str | None, str | None]]]:
    cert, key = self_signed(tmp_path)
    seen: list[tuple[str | None, str | None]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization"), request.headers.get(FORWARDED_HEADER)))
        return web.json_response(BODY)

    app = web.Application()
    app.router.add_get("/accounts/{account_id}/usage", handle)
    server = test_utils.TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=server_context(str(cert), str(key)))
    router = PeerRouter(timeout=5.0, ssl_context=peer_context(str(cert)) if trust else None)
    try:
        peer = f"https://127.0.0.1:{server.port}"
        answer = await router.answer(
            "acme", "/accounts/acme/usage", False, Local(True, frozenset({0})), [peer], range(2), "Bearer t0k"
        )
        return answer.status, answer.body, seen
    finally:
        await router.close()
        await server.close()


def test_forwarding_to_an_https_peer_verifies_its_certificate_and_passes_the_token(tmp_path: Path):
    status, body, seen = asyncio.run(_ask_https_peer(tmp_path, trust=True))
    assert (status, body) == (200, BODY)
    assert seen == [("Bearer t0k", "1")]


def test_an_untrusted_peer_certificate_is_refused(tmp_path: Path):
    status, body, seen = asyncio.run(_ask_https_peer(tmp_path, trust=False))
    assert status == 503 and "unreachable" in body["reason"] and "certificate" in body["reason"].lower(), body
    assert seen == []
