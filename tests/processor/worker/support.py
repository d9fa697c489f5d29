"""Helpers of the broker tests of the worker: worker subprocesses, input files, output collection, expectations."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from processor.brokers.common import free_port
from processor.cli.worker import record_key as key_of
from processor.core.model import PeakWindow, Settings, UsageChange
from processor.core.partition import fold_history
from processor.web.tokens import new_token, token_line
from processor.worker import records as rec
from schemas.events import decode, format_ms

ROOT = Path(__file__).resolve().parents[3]
DAY_MS = 86_400_000
SETTINGS = Settings()
FAST = (
    "--session-timeout", "6s", "--heartbeat-interval", "500ms", "--rebalance-timeout", "4s",
    "--commit-interval", "500ms", "--batch-within", "100ms", "--log-level", "info",
)  # fmt: skip
OPERATOR_TOKEN = new_token()  # test workers get a tokens file with this operator token unless told otherwise
_AUTH_FLAGS = ("--web-tokens-file", "--web-tokens", "--web-insecure-no-auth")
OWN = "own token"  # `WorkerProcess.get(token=OWN)`: the worker's operator token


def partition_of(key: bytes, partitions: int) -> int:
    """The partition aiokafka's (and Kafka's) default partitioner picks for `key`."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass
class WorkerProcess:
    """A `ccmeter worker` subprocess with its HTTP port and log file."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    args: list[str] = field(default_factory=list)
    token: str | None = None  # the operator token of its tokens file (None: the test configured access itself)
    tls: ssl.SSLContext | None = None  # client context when the worker serves HTTPS

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    def get(
        self, path: str, timeout: float = 5.0, token: str | None = OWN, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """(status, JSON body) of GET path, with `Authorization: Bearer <token>` (default: the worker's own operator
        token; None: no header) and any other `headers`."""
        token = self.token if token == OWN else token
        sent = {"Authorization": f"Bearer {token}"} if token else {}
        request = urllib.request.Request(self.url(path), headers=sent | (headers or {}))
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.tls) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body)
            except ValueError:
                return exc.code, body.decode(errors="replace")

    def health(self) -> dict[str, Any] | None:
        try:
            status, body = self.get("/health", timeout=2.0)
        except (OSError, ValueError):
            return None
        return body if status == 200 else None

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the worker owns partitions and is not rebalancing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            health = self.health()
            if health and health["partitions"] and not health["rebalancing"]:
                return health
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout}s:\n{self.tail()}")

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def exited(self, timeout: float = 90.0) -> int:
        """Wait until the process ends by itself; its exit status (AssertionError with the log if it does not)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running after {timeout}s:\n{self.tail()}") from None

    def kill(self) -> None:
        """SIGKILL, no goodbye."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait (SIGKILL if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def start_worker(
    bootstrap: str, prefix: str, app_id: str, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> WorkerProcess:
    """Start `python -m processor.cli worker` with short timeouts and a free web port (`env`: extra `CCMETER_*`
    variables, e.g. `CCMETER_FAULT`; the caller's own `CCMETER_*` variables are not passed on). Unless `extra` or
    `env` configure the HTTP API's access, the worker gets a tokens file with `OPERATOR_TOKEN`, which `get` sends."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"worker-{port}.log"
    token: str | None = None
    if not any(flag in extra for flag in _AUTH_FLAGS) and not any(k.startswith("CCMETER_WEB_") for k in env or {}):
        token = OPERATOR_TOKEN
        tokens = workdir / f"tokens-{port}.txt"
        tokens.write_text(f"# test operator token\n{token_line(token)}\n")
        extra = ("--web-tokens-file", str(tokens), *extra)
    args = [
        sys.executable, "-m", "processor.cli", "worker",
        "--broker", bootstrap, "--prefix", prefix, "--app-id", app_id,
        "--web-host", "127.0.0.1", "--web-bind", "127.0.0.1", "--web-port", str(port),
        "--store", "memory://", "--state-dir", str(workdir / f"data-{port}"),
        *FAST, *extra,
    ]  # fmt: skip
    environment = {k: v for k, v in os.environ.items() if not k.startswith("CCMETER_")} | (env or {})
    with log.open("wb") as handle:
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=environment)
    return WorkerProcess(proc, port, log, args, token)


# -- input ------------------------------------------------------------------------------------------------------------


def pushers(at_ms: int, partitions: int, settings: Settings = SETTINGS) -> list[bytes]:
    """One api.request per partition, on throwaway accounts `~push-N`, at `at_ms` (moves each watermark there)."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < partitions:
        account = f"~push-{index}"
        found.setdefault(partition_of(account.encode(), partitions), account)
        index += 1
    body = {"event_id": "push", "type": "api.request", "user_id": "p", "occurred_at": format_ms(at_ms)}
    return [json.dumps({**body, "account_id": account}).encode() for account in found.values()]


def last_time(lines: Iterable[bytes]) -> int:
    """Latest occurred_at (ms) of the valid events among `lines`."""
    return max(event.at_ms for line in lines if not hasattr(event := decode(line), "reason"))


def with_pushers(lines: list[bytes], partitions: int, settings: Settings = SETTINGS) -> list[bytes]:
    """`lines` plus watermark pushers far enough ahead that every instant of the real accounts is final."""
    return lines + pushers(last_time(lines) + DAY_MS + settings.account_idle_lateness_ms + 60_000, partitions, settings)


def write_jsonl(path: Path, lines: Iterable[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def arrival_times(lines: Iterable[bytes], start_ms: int = 0) -> list[int]:
    """Record timestamps of a real-time stream: each record arrives at the latest event time seen so far."""
    out: list[int] = []
    latest = start_ms
    for line in lines:
        event = decode(line)
        if not hasattr(event, "reason"):
            latest = max(latest, event.at_ms)
        out.append(latest)
    return out


async def _produce(bootstrap: str, topic: str, lines: list[bytes], timestamps: list[int] | None) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for index, line in enumerate(lines):
            stamp = timestamps[index] if timestamps else None
            await producer.send(topic, value=line, key=key_of(line), timestamp_ms=stamp)
        await producer.flush()
    finally:
        await producer.stop()
    return len(lines)


def produce(bootstrap: str, topic: str, lines: list[bytes], timestamps: list[int] | None = None) -> int:
    """Publish lines in order with key = account_id (like `ccmeter publish`), with these record timestamps
    (default: `arrival_times(lines)`, as if the events were published as they happened)."""
    if timestamps is None:
        timestamps = arrival_times(lines)
    return asyncio.run(_produce(bootstrap, topic, list(lines), timestamps))


async def _committed(bootstrap: str, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


def committed_offsets(bootstrap: str, group: str, tps: list[TopicPartition]) -> dict[TopicPartition, int | None]:
    """The offsets `group` has committed for `tps` (None: nothing committed)."""
    return asyncio.run(_committed(bootstrap, group, tps))


def wait_committed(
    bootstrap: str, group: str, offsets: dict[TopicPartition, int], worker: WorkerProcess, timeout: float = 60.0
) -> None:
    """Wait until `group` has committed exactly `offsets` (AssertionError with the worker's log after `timeout`)."""
    deadline = time.monotonic() + timeout
    while (committed := committed_offsets(bootstrap, group, list(offsets))) != offsets:
        assert time.monotonic() < deadline, f"committed {committed}, not {offsets}\n{worker.tail(120)}"
        time.sleep(0.3)


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
    finally:
        await consumer.stop()


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[TopicPartition, int]:
    """The offset the next record of each partition of `topic` will get."""
    return asyncio.run(_end_offsets(bootstrap, topic, partitions))


# -- output -----------------------------------------------------------------------------------------------------------


def by_id(records: Iterable[dict], key: str) -> dict[str, dict]:
    """Drop re-deliveries by id; a re-delivery must equal the first copy."""
    out: dict[str, dict] = {}
    for record in records:
        first = out.setdefault(record[key], record)
        assert first == record, f"two different records with {key} {record[key]}: {first} / {record}"
    return out


# -- expectations -----------------------------------------------------------------------------------------------------


def _as_record(item: Any, kind: str) -> dict:
    if isinstance(item, dict):
        return item
    if hasattr(item, "model_dump"):
        return item.model_dump(mode="json")
    if kind == "usage":
        assert isinstance(item, UsageChange)
        return rec.usage_change(item)
    assert isinstance(item, PeakWindow)
    return rec.peak_window(item)


def expected(path: Path, settings: Settings = SETTINGS) -> tuple[dict[str, dict], dict[str, dict], str]:
    """Usage changes and peak windows (by id) of the real accounts, from BatchEngine (else the fold), and which."""
    try:
        from processor.batch.engine import BatchEngine
    except ImportError:
        BatchEngine = None  # noqa: N806
    if BatchEngine is not None:
        engine = BatchEngine(settings)
        engine.load(path)
        changes = [_as_record(c, "usage") for c in engine.usage_changes()]
        windows = [_as_record(w, "window") for w in engine.peak_windows()]
        source = "BatchEngine"
    else:
        events = [e for line in path.read_bytes().splitlines() if not hasattr(e := decode(line), "reason")]
        out, _, _ = fold_history(events, settings)
        changes = [rec.usage_change(c) for c in out.usage_changes]
        windows = [rec.peak_window(w) for w in out.windows]
        source = "fold_history"
    real_changes = {c["change_id"]: c for c in changes if not c["account_id"].startswith("~")}
    real_windows = {w["window_id"]: w for w in windows if not w["account_id"].startswith("~")}
    return real_changes, real_windows, source


def real(records: dict[str, dict]) -> dict[str, dict]:
    """Without the watermark pushers' records."""
    return {k: v for k, v in records.items() if not v["account_id"].startswith("~")}


def settled(workers: list[WorkerProcess], partitions: int, timeout: float = 90.0) -> dict[int, int]:
    """Wait until the workers share all `partitions` without overlap and none rebalances: partition -> worker index."""
    deadline = time.monotonic() + timeout
    healths: list[Any] = []
    while time.monotonic() < deadline:
        healths = [worker.health() for worker in workers]
        if all(h and h["partitions"] and not h["rebalancing"] for h in healths):
            owner = {p: index for index, h in enumerate(healths) for p in h["partitions"]}
            if sorted(owner) == list(range(partitions)) and sum(len(h["partitions"]) for h in healths) == partitions:
                return owner
        time.sleep(0.3)
    tails = "\n".join(worker.tail(60) for worker in workers)
    raise AssertionError(f"workers did not settle: {healths}\n{tails}")
