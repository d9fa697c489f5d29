"""Tenant-scoped access to the worker's HTTP API on a real broker: two workers serving HTTPS with a tokens file.

Tokens: an operator token, a tenant token for `acct-a` and `acct-b`, one for `acct-c`. Each account's records go to
an explicit partition, `acct-a` and `acct-c` on the first worker's, `acct-b` on the second's, so the first worker
answers `acct-b` only by forwarding the query to its peer (over HTTPS, certificate verified) with the caller's own
token, which the peer checks again. Checked on the first worker: 401 without a token or with a wrong one, 403 for
another tenant's account and for an account that does not exist (the same body), 200 with the right tenant token
(local and forwarded) and with the operator token, /health without a token; on the second worker: a request marked
as forwarded is not forwarded again and grants nothing without a token.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from processor.topics import EVENTS, create_topics, topic_names
from processor.web.tls import peer_context
from processor.web.tokens import new_token, token_line
from processor.worker.peers import FORWARDED_HEADER
from schemas.events import format_ms
from tests.processor.web.certs import self_signed
from tests.processor.worker.support import OPERATOR_TOKEN, WorkerProcess, start_worker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]
PARTITIONS = 2
T0 = 1_793_520_000_000  # 2026-11-01T08:00:00Z
TENANT_AB = new_token()
TENANT_C = new_token()


def tokens_file(path: Path) -> Path:
    lines = [
        "# ccmeter API tokens (hashes only)",
        token_line(OPERATOR_TOKEN) + "  # operators",
        token_line(TENANT_AB, ["acct-a", "acct-b"]),
        "",
        token_line(TENANT_C, ["acct-c"]),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def events(account: str) -> list[bytes]:
    body = {"type": "api.request", "user_id": "u1", "account_id": account}
    return [
        json.dumps({**body, "event_id": f"{account}-{n}", "occurred_at": format_ms(T0 + n * 1000)}).encode()
        for n in range(3)
    ]


async def _produce(bootstrap: str, topic: str, placed: dict[str, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for account, partition in placed.items():
            for line in events(account):
                await producer.send(topic, value=line, key=account.encode(), partition=partition, timestamp_ms=T0)
        await producer.flush()
    finally:
        await producer.stop()


def logs(workers: list[WorkerProcess]) -> str:
    return "\n".join(f"--- worker on port {w.port}:\n{w.tail(80)}" for w in workers)


def settled(workers: list[WorkerProcess], timeout: float = 90.0) -> list[list[int]]:
    """Wait until the workers share every partition, one each, none rebalancing: each worker's partitions."""
    deadline = time.monotonic() + timeout
    healths: list[Any] = []
    while time.monotonic() < deadline:
        for worker in workers:
            if worker.proc.poll() is not None:
                raise AssertionError(f"a worker exited with {worker.proc.returncode}\n{logs(workers)}")
        healths = [worker.health() for worker in workers]
        if all(h and h["partitions"] and not h["rebalancing"] for h in healths):
            if sorted(p for h in healths for p in h["partitions"]) == list(range(PARTITIONS)):
                return [h["partitions"] for h in healths]
        time.sleep(0.3)
    raise AssertionError(f"workers did not settle: {healths}\n{logs(workers)}")


def until(ask, done, workers: list[WorkerProcess], timeout: float = 60.0) -> tuple[int, Any]:
    """Repeat `ask()` until `done(answer)` (events still being applied, a rebalance settling), bounded."""
    deadline = time.monotonic() + timeout
    answer = ask()
    while not done(answer) and time.monotonic() < deadline:
        time.sleep(0.3)
        answer = ask()
    assert done(answer), f"last answer {answer}\n{logs(workers)}"
    return answer


def test_tokens_scope_live_queries_locally_and_through_a_forwarding_peer(
    broker: str, topic_prefix: str, tmp_path: Path
) -> None:
    asyncio.run(create_topics(broker, topic_prefix, PARTITIONS, 1))
    cert, key = self_signed(tmp_path)
    tokens = tokens_file(tmp_path / "tokens.txt")
    extra = ("--web-tokens-file", str(tokens), "--web-tls-cert", str(cert), "--web-tls-key", str(key))
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    workers = [start_worker(broker, topic_prefix, app_id, tmp_path / name, *extra) for name in ("a", "b")]
    client = peer_context(str(cert))
    for worker in workers:
        worker.token, worker.tls = OPERATOR_TOKEN, client
    first, second = workers
    try:
        owned = settled(workers)
        placed = {"acct-a": owned[0][0], "acct-c": owned[0][0], "acct-b": owned[1][0]}
        asyncio.run(_produce(broker, topic_names(topic_prefix)[EVENTS], placed))

        def usage(worker: WorkerProcess, account: str, token: str | None, **kw: Any) -> tuple[int, Any]:
            return worker.get(f"/accounts/{account}/usage", token=token, **kw)

        known = lambda answer: answer[0] == 200  # noqa: E731
        for account in placed:  # applied by the owner, asked through the first worker by the operator
            status, body = until(lambda a=account: usage(first, a, OPERATOR_TOKEN), known, workers)
            assert body["account_id"] == account and body["usage"] == 1, body

        # the tenant's own accounts: acct-a held locally, acct-b forwarded to the peer with the tenant's token
        local = usage(first, "acct-a", TENANT_AB)
        forwarded = usage(first, "acct-b", TENANT_AB)
        assert local[0] == 200 and local[1]["account_id"] == "acct-a", local
        assert forwarded == usage(second, "acct-b", TENANT_AB), forwarded
        assert forwarded[0] == 200 and forwarded[1]["account_id"] == "acct-b", (forwarded, logs(workers))
        assert usage(first, "acct-c", TENANT_C)[0] == 200

        # another tenant's account and an account that does not exist: the same 403
        other = usage(first, "acct-c", TENANT_AB)
        absent = usage(first, "no-such-account", TENANT_AB)
        assert other == absent == (403, {"error": "forbidden", "reason": "this token may not read this account"})
        assert usage(second, "acct-a", TENANT_C) == other  # forwarded or not, the scope holds

        # no token, a wrong token: 401; /health needs none
        missing, wrong = usage(first, "acct-a", None), usage(first, "acct-a", new_token())
        assert missing[0] == 401 and missing[1]["error"] == "unauthorized", missing
        assert wrong[0] == 401 and wrong[1]["reason"] == "invalid token", wrong
        status, health = first.get("/health", token=None)
        assert status == 200 and health["status"] == "ok"

        # the operator: every account; an unknown one is 404 once both workers are settled
        not_503 = lambda answer: answer[0] != 503  # noqa: E731
        assert until(lambda: usage(first, "no-such-account", OPERATOR_TOKEN), not_503, workers)[0] == 404

        # a request marked as forwarded is never forwarded again, and the marker grants nothing
        marked = {FORWARDED_HEADER: "1"}
        assert usage(second, "acct-a", None, headers=marked)[0] == 401
        status, body = until(lambda: usage(second, "acct-a", TENANT_AB, headers=marked), not_503, workers)
        assert status == 404 and body["partitions"] == owned[1], body  # only its own partitions checked

        # Faust's own pages (cluster topology, tables) are not served
        assert first.get("/router/", token=None)[0] == 404
        assert first.get("/table/", token=None)[0] == 404
    finally:
        for worker in workers:
            worker.stop()
    assert "HTTP API: bearer tokens required: 1 operator, 2 scoped" in first.log.read_text(), first.tail()
