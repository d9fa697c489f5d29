"""Live-query routing between workers (processor/worker/peers.py), with local aiohttp servers standing in for peers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import test_utils, web

from processor.brokers.common import free_port
from processor.worker.peers import (
    FORWARDED_HEADER,
    UNKNOWN,
    Answer,
    Local,
    PeerRouter,
    peer_urls,
    read_reply,
    same_endpoint,
)

ALL = range(4)
BODY = {"account_id": "acme", "usage": 3, "licenses": 5, "data_through": None}
Behaviour = Callable[[web.Request], Awaitable[web.Response]]


def reply(status: int, body: dict[str, Any], delay: float = 0.0) -> Behaviour:
    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(delay)
        return web.json_response(body, status=status)

    return handle


class Peer:
    """A stand-in worker: answers /accounts/{id}/usage as told and records what it was asked."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests: list[tuple[str, str | None]] = []
        app = web.Application()
        app.router.add_get("/accounts/{account_id}/usage", self._handle)
        self.server = test_utils.TestServer(app, host="127.0.0.1")

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.raw_path, request.headers.get(FORWARDED_HEADER)))
        return await self.behaviour(request)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def __aenter__(self) -> Peer:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close()


async def ask(
    peers: list[str], local: Local, forwarded: bool = False, timeout: float = 2.0, path: str = "/accounts/acme/usage"
) -> Answer:
    router = PeerRouter(timeout=timeout)
    try:
        return await router.answer("acme", path, forwarded, local, peers, ALL)
    finally:
        await router.close()


def settled(*partitions: int, body: dict[str, Any] | None = None) -> Local:
    return Local(True, frozenset(partitions), body)


def test_own_answer_is_given_without_asking_peers():
    async def run() -> None:
        async with Peer(reply(200, {"account_id": "other"})) as peer:
            answer = await ask([peer.url], settled(0, 1, body=BODY))
            assert answer == Answer(200, BODY)
            assert peer.requests == []

    asyncio.run(run())


def test_the_peer_holding_the_account_answers_and_requests_are_marked_forwarded():
    async def run() -> None:
        async with Peer(reply(404, {"error": UNKNOWN, "partitions": [1]})) as empty:
            async with Peer(reply(200, BODY)) as holder:
                answer = await ask([empty.url, holder.url], settled(0), path="/accounts/a%20b%2Fc/usage?x=1")
                assert answer == Answer(200, BODY)
                assert holder.requests == [("/accounts/a%20b%2Fc/usage?x=1", "1")]

    asyncio.run(run())


def test_first_200_wins_without_waiting_for_a_slow_peer():
    async def run() -> None:
        async with Peer(reply(200, BODY, delay=5.0)) as slow:
            async with Peer(reply(200, {**BODY, "usage": 4})) as fast:
                started = time.monotonic()
                answer = await ask([slow.url, fast.url], settled(0), timeout=10.0)
                assert answer.status == 200 and answer.body["usage"] == 4
                assert time.monotonic() - started < 4.0

    asyncio.run(run())


def test_404_only_when_every_partition_was_checked():
    async def run() -> None:
        async with Peer(reply(404, {"error": UNKNOWN, "partitions": [2, 3]})) as peer:
            answer = await ask([peer.url], settled(0, 1))
            assert answer == Answer(404, {"error": UNKNOWN, "account_id": "acme"})
            answer = await ask([peer.url], settled(0))
            assert answer.status == 503 and "[1]" in answer.body["reason"]
            assert (await ask([], settled(0, 1, 2))).status == 503

    asyncio.run(run())


def test_a_peer_that_does_not_answer_in_time_gives_503():
    async def run() -> None:
        async with Peer(reply(404, {"error": UNKNOWN, "partitions": [2, 3]}, delay=3.0)) as slow:
            started = time.monotonic()
            answer = await ask([slow.url], settled(0, 1), timeout=0.5)
            assert answer.status == 503
            assert slow.url in answer.body["reason"] and "within 0.5s" in answer.body["reason"]
            assert time.monotonic() - started < 2.5

    asyncio.run(run())


def test_an_unreachable_or_broken_peer_gives_503_not_a_crash():
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="<html>oops</html>")

    async def run() -> None:
        gone = f"http://127.0.0.1:{free_port()}"
        answer = await ask([gone], settled(0, 1, 2, 3))
        assert answer.status == 503 and "unreachable" in answer.body["reason"]
        async with Peer(broken) as peer:
            answer = await ask([peer.url], settled(0, 1))
            assert answer.status == 503 and "answered 500" in answer.body["reason"]

    asyncio.run(run())


def test_forwarded_requests_are_never_forwarded_again():
    async def run() -> None:
        async with Peer(reply(200, BODY)) as peer:
            answer = await ask([peer.url], settled(2, 0), forwarded=True)
            assert answer == Answer(404, {"error": UNKNOWN, "account_id": "acme", "partitions": [0, 2]})
            answer = await ask([peer.url], Local(False, frozenset()), forwarded=True)
            assert answer.status == 503 and answer.body["reason"] == "rebalance in progress"
            assert peer.requests == []

    asyncio.run(run())


def test_while_rebalancing_a_peer_may_still_answer_else_503():
    async def run() -> None:
        async with Peer(reply(200, BODY)) as holder:
            assert await ask([holder.url], Local(False, frozenset())) == Answer(200, BODY)
        async with Peer(reply(404, {"error": UNKNOWN, "partitions": [0, 1, 2, 3]})) as empty:
            answer = await ask([empty.url], Local(False, frozenset()))
            assert answer.status == 503 and answer.body["reason"] == "rebalance in progress"
        async with Peer(reply(503, {"error": "x", "reason": "rebalance in progress"})) as busy:
            answer = await ask([busy.url], settled(0, 1))
            assert answer.status == 503 and "rebalance in progress" in answer.body["reason"]

    asyncio.run(run())


def test_peer_urls_skip_this_worker_and_members_without_partitions():
    members = {
        "http://127.0.0.1:6066": {"app-state-changelog": [0, 1]},
        "http://127.0.0.1:6067": {"app-state-changelog": [2, 3]},
        "http://127.0.0.1:6068": {},
        "http://127.0.0.1:6069": {"app-state-changelog": []},
    }
    assert peer_urls(members, "http://127.0.0.1:6066/") == ["http://127.0.0.1:6067"]
    assert same_endpoint("http://h:80", "http://h") and not same_endpoint("http://h:1", "http://g:1")


def test_replies_are_classified_whatever_a_peer_sends():
    assert read_reply("u", 200, BODY).body == BODY
    assert read_reply("u", 404, {"error": UNKNOWN, "partitions": [1]}).checked == frozenset({1})
    for status, body in ((200, None), (200, [1]), (404, {"error": UNKNOWN}), (404, {"partitions": "x"}), (502, "?")):
        got = read_reply("u", status, body)
        assert got.body is None and got.checked is None and got.failure, (status, body)


def test_the_callers_authorization_goes_to_the_peers_and_their_refusal_is_a_503_with_the_reason():
    seen: list[str | None] = []

    async def check(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.headers.get("Authorization") != "Bearer right":
            return web.json_response({"error": "unauthorized", "reason": "invalid token"}, status=401)
        return web.json_response(BODY)

    async def run() -> None:
        async with Peer(check) as peer:
            router = PeerRouter(timeout=2.0)
            try:
                ok = await router.answer(
                    "acme", "/accounts/acme/usage", False, settled(0), [peer.url], ALL, "Bearer right"
                )
                refused = await router.answer("acme", "/accounts/acme/usage", False, settled(0), [peer.url], ALL, None)
            finally:
                await router.close()
            assert ok == Answer(200, BODY)
            assert refused.status == 503 and refused.body["reason"] == f"{peer.url} answered 401: invalid token"
            assert seen == ["Bearer right", None]

    asyncio.run(run())
