"""Live queries answered by any worker for any account, whatever partitioner the producers used (SPEC section 5).

An account lives in the partition its records are in, so no hash of its id says which worker holds it. The worker
that receives `GET /accounts/{id}/usage`:

1. answers from its own partitions when one of them holds the account (and its assignment is settled);
2. otherwise asks every other member of the group that owns partitions, all at once, each with a short timeout,
   and returns the first 200. The forwarded request carries `FORWARDED_HEADER`: a worker never forwards such a
   request again (no loops); it answers 200, 404 with the partitions it checked, or 503 while it rebalances. It
   also carries the caller's own `Authorization` header, so that the peer checks the same token and scope
   (processor/web/auth.py) as the worker that received it: forwarding grants nothing the caller did not have;
3. answers 404 `unknown account` only when it is settled, no member failed and the partitions checked (its own and
   those each peer's 404 lists) cover every partition of the events topic; otherwise 503 with the reason.

This module knows nothing of Faust: the worker gives it a `Local` (what it holds) and the peers' URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

FORWARDED_HEADER = "X-Ccmeter-Forwarded"
PEER_TIMEOUT_S = 2.0
RETRY_AFTER_S = 1
UNKNOWN = "unknown account"
UNAVAILABLE = "live answer unavailable, try again"
REBALANCING = "rebalance in progress"


@dataclass(frozen=True)
class Answer:
    """HTTP status and JSON body of a live query."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Local:
    """What the receiving worker knows: whether it is settled, the partitions it owns, its own answer if any."""

    ready: bool
    partitions: frozenset[int]
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class PeerReply:
    """One peer's reply: a 200 body, the partitions it checked (404), or why it gave no answer."""

    url: str
    body: dict[str, Any] | None = None
    checked: frozenset[int] | None = None
    failure: str | None = None


def same_endpoint(a: str, b: str) -> bool:
    """Whether two base URLs name the same host and port."""
    ua, ub = URL(a), URL(b)
    return (ua.host or "", ua.port) == (ub.host or "", ub.port)


def peer_urls(members: Mapping[str, Mapping[str, Sequence[int]]], own_url: str) -> list[str]:
    """Base URLs of the other members that own partitions, from `{url: {topic: [partitions]}}`."""
    return sorted(url for url, topics in members.items() if any(topics.values()) and not same_endpoint(url, own_url))


def unknown(account_id: str, partitions: Iterable[int] | None = None) -> Answer:
    """404; a forwarded answer lists the partitions checked so that the asking worker can count coverage."""
    body: dict[str, Any] = {"error": UNKNOWN, "account_id": account_id}
    if partitions is not None:
        body["partitions"] = sorted(partitions)
    return Answer(404, body)


def unavailable(account_id: str, reason: str) -> Answer:
    """503 with the reason (a rebalance in progress, a peer that did not answer, a partition nobody owns)."""
    return Answer(503, {"error": UNAVAILABLE, "reason": reason, "account_id": account_id})


def read_reply(url: str, status: int, body: Any) -> PeerReply:
    """Classify a peer's HTTP answer."""
    if status == 200 and isinstance(body, dict):
        return PeerReply(url, body=body)
    if status == 404 and isinstance(body, dict) and body.get("error") == UNKNOWN:
        checked = body.get("partitions")
        if isinstance(checked, list) and all(isinstance(p, int) for p in checked):
            return PeerReply(url, checked=frozenset(checked))
    if isinstance(body, dict) and isinstance(body.get("reason"), str):
        return PeerReply(url, failure=f"{url} answered {status}: {body['reason']}")
    return PeerReply(url, failure=f"{url} answered {status}")


def conclude(account_id: str, local: Local, replies: Sequence[PeerReply], total: Iterable[int]) -> Answer:
    """The answer when no peer had the account: 404 if every partition was checked, else 503 saying why."""
    if not local.ready:
        return unavailable(account_id, REBALANCING)
    failures = [reply.failure for reply in replies if reply.failure]
    if failures:
        return unavailable(account_id, "; ".join(failures))
    checked = set(local.partitions).union(*(reply.checked or () for reply in replies))
    missing = sorted(set(total) - checked)
    if missing:
        return unavailable(account_id, f"partitions {missing} are not owned by any worker (rebalance in progress)")
    return unknown(account_id)


class PeerRouter:
    """Answers live queries from this worker or its peers (see the module docstring)."""

    def __init__(self, timeout: float = PEER_TIMEOUT_S, ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.ssl_context = ssl_context  # verifies HTTPS peers (processor/web/tls.py)
        self._session: aiohttp.ClientSession | None = None

    async def answer(
        self,
        account_id: str,
        path: str,
        forwarded: bool,
        local: Local,
        peers: Sequence[str],
        total: Iterable[int],
        authorization: str | None = None,
    ) -> Answer:
        """The answer to GET `path` (an encoded path and query) for `account_id`; `total`: every partition;
        `authorization`: the caller's Authorization header, passed on to the peers."""
        if local.body is not None:
            return Answer(200, local.body)
        if forwarded:  # never forwarded again
            return unknown(account_id, local.partitions) if local.ready else unavailable(account_id, REBALANCING)
        replies: list[PeerReply] = []
        tasks = [asyncio.ensure_future(self.ask(url, path, authorization)) for url in peers]
        try:
            for next_reply in asyncio.as_completed(tasks):
                reply = await next_reply
                if reply.body is not None:
                    return Answer(200, reply.body)
                replies.append(reply)
        finally:
            for task in tasks:
                task.cancel()
        return conclude(account_id, local, replies, total)

    async def ask(self, base_url: str, path: str, authorization: str | None = None) -> PeerReply:
        """GET `path` from one peer, marked as forwarded, with the caller's Authorization if any; never raises."""
        url = URL(base_url.rstrip("/") + path, encoded=True)
        headers = {FORWARDED_HEADER: "1"}
        if authorization is not None:
            headers["Authorization"] = authorization
        extra: dict[str, Any] = {"ssl": self.ssl_context} if self.ssl_context is not None else {}
        try:
            session = self._ensure()
            async with session.get(url, headers=headers, **extra) as response:
                try:
                    body = await response.json(content_type=None)
                except ValueError:
                    body = None
                return read_reply(base_url, response.status, body)
        except TimeoutError:
            return PeerReply(base_url, failure=f"{base_url} did not answer within {self.timeout:g}s")
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return PeerReply(base_url, failure=f"{base_url} unreachable: {type(exc).__name__}: {exc}")

    def _ensure(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        """Close the HTTP client (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()
