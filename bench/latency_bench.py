"""End-to-end latency from publish to the provisional usage in the live query (GET /accounts/{id}/usage).

A fresh `ccmeter worker` (real settings) reads a fresh 1-partition topic. The producer publishes simulated events at
a fixed rate (aiokafka batches every 10 ms, Kafka timestamp = latest event time so far), and every 100 ms a probe:
an `api.request` of a new user of the account `~probe`, at an event time strictly after every earlier probe.
A poller asks the worker for `/accounts/~probe/usage` every 5 ms while probes are outstanding; a probe counts as
reflected once the live view's `as_of` (the latest event time applied to the account, buffered events included)
reaches the probe's event time. Latency = that moment - the moment the probe's batch was handed to the producer.

Two phases: a rate the worker sustains (the floor of the latency), then the target rate. If the worker is slower
than the input, the backlog grows and latency with it; probes still unanswered `drain` seconds after the last
publish are reported as lower bounds.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from bench.common import OUT, Row, log, percentile
from bench.data import SimDataset
from bench.kafka_io import record_key
from bench.procs import Proc, cpu_seconds, start_worker
from processor.topics import EVENTS, create_topics, topic_names
from schemas.events import format_ms

PROBE_ACCOUNT = "~probe"
TARGET_P99_S = 1.0


@dataclass
class Phase:
    """One publishing phase and its probes."""

    rate: int
    seconds: float
    published: int = 0
    probes: dict[int, tuple[int, float]] = field(default_factory=dict)  # n -> (event time, publish time)
    latencies: dict[int, float] = field(default_factory=dict)  # n -> seconds
    worker_cpu: float = 0.0

    def summary(self, end: float) -> dict[str, Any]:
        """p50/p99 over answered probes; unanswered ones as lower bounds (now - publish)."""
        done = list(self.latencies.values())
        missing = [end - sent for n, (_, sent) in self.probes.items() if n not in self.latencies]
        values = done + missing
        return {
            "rate": self.rate, "seconds": self.seconds, "published": self.published, "probes": len(self.probes),
            "answered": len(done), "unanswered": len(missing), "p50": percentile(values, 50),
            "p99": percentile(values, 99), "max": max(values, default=float("nan")),
            "p50_answered": percentile(done, 50), "p99_answered": percentile(done, 99),
            "achieved_rate": self.published / self.seconds, "worker_cpu_share": self.worker_cpu / self.seconds,
        }  # fmt: skip


class Probe:
    """Publisher and poller sharing the probe bookkeeping."""

    def __init__(self, bootstrap: str, topic: str, worker: Proc, lines: list[bytes], stamps: list[int]) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.worker = worker
        self.lines = lines
        self.stamps = stamps
        self.position = 0
        self.latest = stamps[0]
        self.probe_at = 0
        self.count = 0
        self.outstanding: dict[int, tuple[int, float, Phase]] = {}
        self.stop = False

    def probe_line(self) -> tuple[int, bytes, int]:
        """The next probe: (number, line, event time)."""
        self.count += 1
        self.probe_at = max(self.latest, self.probe_at + 1)
        body = {
            "event_id": f"probe-{self.count}", "type": "api.request", "account_id": PROBE_ACCOUNT,
            "occurred_at": format_ms(self.probe_at), "user_id": f"p{self.count}",
        }  # fmt: skip
        return self.count, json.dumps(body, separators=(",", ":")).encode(), self.probe_at

    async def publish(self, producer: AIOKafkaProducer, phase: Phase) -> None:
        """Publish `phase.rate` events per second for `phase.seconds`, with a probe every 100 ms."""
        began = time.perf_counter()
        next_probe = began
        cpu0 = cpu_seconds(self.worker.pid)
        while True:
            now = time.perf_counter()
            elapsed = now - began
            if elapsed >= phase.seconds or self.position >= len(self.lines):
                break
            due = int(phase.rate * elapsed) - phase.published
            batch = producer.create_batch()
            sent = 0
            for _ in range(max(0, due)):
                if self.position >= len(self.lines):
                    break
                line, stamp = self.lines[self.position], self.stamps[self.position]
                if batch.append(key=record_key(line), value=line, timestamp=stamp) is None:
                    break
                self.position += 1
                self.latest = max(self.latest, stamp)
                sent += 1
            probe = None
            if now >= next_probe:
                number, line, at = self.probe_line()
                if batch.append(key=PROBE_ACCOUNT.encode(), value=line, timestamp=at) is not None:
                    probe = (number, at)
                    next_probe += 0.1
            if batch.record_count():
                await producer.send_batch(batch, self.topic, partition=0)
                handed = time.perf_counter()
                if probe is not None:
                    phase.probes[probe[0]] = (probe[1], handed)
                    self.outstanding[probe[0]] = (probe[1], handed, phase)
            phase.published += sent
            await asyncio.sleep(max(0.0, 0.01 - (time.perf_counter() - now)))
        phase.seconds = time.perf_counter() - began
        phase.worker_cpu = cpu_seconds(self.worker.pid) - cpu0

    async def poll(self) -> None:
        """Ask the live endpoint while probes are outstanding; resolve the probes its `as_of` covers."""
        url = f"http://127.0.0.1:{self.worker.port}/accounts/{PROBE_ACCOUNT}/usage"
        async with aiohttp.ClientSession(headers=self.worker.auth) as session:
            while not (self.stop and not self.outstanding):
                if not self.outstanding:
                    await asyncio.sleep(0.005)
                    continue
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                        body = await response.json() if response.status == 200 else None
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    body = None
                now = time.perf_counter()
                if body and body.get("as_of"):
                    as_of = _ms(body["as_of"])
                    for number, (at, sent, phase) in list(self.outstanding.items()):
                        if at <= as_of:
                            phase.latencies[number] = now - sent
                            del self.outstanding[number]
                await asyncio.sleep(0.005)


def _ms(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(moment.timestamp() * 1000)


async def _run(bootstrap: str, topic: str, worker: Proc, lines: list[bytes], stamps: list[int],
               phases: list[Phase], drain: float) -> float:  # fmt: skip
    probe = Probe(bootstrap, topic, worker, lines, stamps)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0, max_batch_size=1 << 20)
    await producer.start()
    poller = asyncio.create_task(probe.poll())
    try:
        for phase in phases:
            log(f"latency: publishing {phase.rate:,} events/s for {phase.seconds:.0f} s")
            await probe.publish(producer, phase)
        await producer.flush()
        probe.stop = True
        try:
            await asyncio.wait_for(asyncio.shield(poller), timeout=drain)
        except TimeoutError:
            pass
    finally:
        end = time.perf_counter()
        poller.cancel()
        await producer.stop()
    return end


def bench(bootstrap: str, dataset: SimDataset, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """Part 5: rows and details."""
    prefix = f"bench-lat-{uuid.uuid4().hex[:6]}."
    asyncio.run(create_topics(bootstrap, prefix, 1, 1))
    topic = topic_names(prefix)[EVENTS]
    workdir: Path = OUT / "work"
    worker = start_worker(bootstrap, prefix, f"bench-lat-{uuid.uuid4().hex[:6]}", workdir)
    try:
        worker.wait_ready()
        lines, stamps = dataset.lines()[:-1], dataset.timestamps()[:-1]  # without the watermark pusher
        phases = [Phase(1_000, 10 if quick else 20), Phase(10_000, 8 if quick else 20)]
        end = asyncio.run(_run(bootstrap, topic, worker, lines, stamps, phases, drain=20 if quick else 40))
    finally:
        worker.stop()
    summaries = [phase.summary(end) for phase in phases]
    for summary in summaries:
        log(f"latency: {summary}")
    rows = []
    for summary in summaries:
        target = summary["rate"] == 10_000
        lower = " (lower bound: probes unanswered)" if summary["unanswered"] else ""
        note = (
            f"{summary['probes']} probes, {summary['unanswered']} unanswered after the drain; published "
            f"{summary['achieved_rate']:,.0f}/s for {summary['seconds']:.0f} s; worker CPU "
            f"{summary['worker_cpu_share'] * 100:.0f}%"
        )
        for name in ("p50", "p99"):
            met = (summary["p99"] < TARGET_P99_S) if (target and name == "p99") else None
            rows.append(Row("latency", f"{name} publish -> live usage at {summary['rate']:,} events/s{lower}",
                            summary[name], "s", f"< {TARGET_P99_S:g} s" if met is not None else "", met,
                            note if name == "p99" else f"p50 of answered {summary['p50_answered']:.3f} s"))  # fmt: skip
    return rows, {"phases": summaries}
