"""The rebuilt version's worker process, and how far it has got.

Progress is read from the worker's own state, not from Faust's committed offsets: every batch ends with a clock entry
per partition (`__clock__:P`, processor/worker/state.py) holding the last offset fully applied, written to the
changelog topic. `ClockWatch` follows that topic, so "caught up" means applied, whatever Faust acknowledged.

`WorkerProcess` starts the worker (`python -m replay.launch`), stops it, and restarts it when it is ready (its
/health answers, partitions assigned, no rebalance) but has applied nothing for `stall_s` while records remain.
This was seen when the worker read through Faust's stream, which skipped records after restarts; the worker now
reads the events itself from its applied offsets (processor/app.py), and the watchdog remains as a safety net. Before
a restart the group's offsets are set back to what the worker has applied (`rewind_group`), which keeps the group's
lag figures honest; the worker's state is in its changelog, so it resumes exactly there.
"""

from __future__ import annotations

import asyncio
import functools
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from processor.cli import RuntimeFailure
from processor.kafka_security import child_env
from processor.worker.state import decode_clock, is_clock_key
from replay import kafka

ROOT = Path(__file__).resolve().parents[1]
STOP_TIMEOUT_S = 60.0
MAX_RESTARTS = 5


class ClockWatch:
    """The last applied offset per partition, from the clock entries on a changelog topic."""

    def __init__(self, broker: str, changelog: str) -> None:
        self.broker = broker
        self.changelog = changelog
        self.applied: dict[int, int] = {}
        self._client: Any = None
        self._assigned = False

    async def __aenter__(self) -> ClockWatch:
        self._client = kafka.consumer(self.broker)
        await self._client.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.stop()

    async def poll(self) -> dict[int, int]:
        """Read what is new on the changelog (the topic may appear only once the worker runs)."""
        client = self._client
        if not self._assigned:
            await kafka.refresh_metadata(client)
            found = client.partitions_for_topic(self.changelog)
            if not found:
                return self.applied
            parts = kafka.tps(self.changelog, sorted(found))
            client.assign(parts)
            await client.seek_to_beginning(*parts)
            self._assigned = True
        batches = await client.getmany(timeout_ms=200, max_records=50_000)
        for records in batches.values():
            for record in records:
                if record.key is not None and record.value is not None and is_clock_key(record.key):
                    clock = decode_clock(record.value)
                    self.applied[clock.partition] = clock.applied
        return self.applied


class WorkerProcess:
    """The new version's worker subprocess (output appended to its log file)."""

    def __init__(self, command: list[str], log: Path, web_port: int) -> None:
        self.command = command
        self.log = log
        self.web_port = web_port
        self.restarts = 0
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as handle:
            return subprocess.Popen(self.command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=child_env())

    def exited(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return self.proc.poll()

    def ready(self) -> bool:
        """True when /health answers with partitions assigned and no rebalance under way."""
        try:
            url = f"http://127.0.0.1:{self.web_port}/health"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                health = json.loads(response.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return bool(health.get("partitions")) and not health.get("rebalancing")

    def stop(self) -> int:
        """SIGTERM, wait (SIGKILL after STOP_TIMEOUT_S); return the exit status."""
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def restart(self, before_start: Callable[[], None] | None = None) -> None:
        """Stop, run `before_start` (the process is gone), start again."""
        if self.restarts >= MAX_RESTARTS:
            raise RuntimeFailure(f"the worker made no progress after {self.restarts} restarts:\n{tail(self.log)}")
        self.stop()
        if before_start is not None:
            before_start()
        self.restarts += 1
        self.proc = self._start()

    def wait(self) -> int:
        """Wait until the process ends on its own; its exit status."""
        return self.proc.wait()


def tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def rewind_group(broker: str, group: str, topic: str, offsets: dict[int, int], patience_s: float = 90.0) -> None:
    """Commit `offsets` for the (stopped) worker's group, retrying while the broker still lists its old member.

    The offsets are the last applied ones, not the next: the restarted worker drops that record as a re-delivery,
    and a consumer that skips the record at its committed offset (seen with Faust after restarts) loses nothing.
    """
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + patience_s
    while True:
        try:
            asyncio.run(kafka.commit_group_offsets(broker, group, topic, offsets))
            return
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeFailure(f"cannot rewind group {group} after a stall: {exc!r}") from None
            time.sleep(1.0)


async def follow_progress(
    broker: str,
    group: str,
    topic: str,
    changelog: str,
    starts: dict[int, int],
    ends: dict[int, int],
    worker: WorkerProcess,
    bar: Any,
    *,
    poll_s: float = 1.0,
    stall_s: float | None = 60.0,
    timeout_s: float | None = None,
) -> float:
    """Until every partition has applied up to its end offset: progress, lag per partition, restarts on a stall.

    Returns the seconds taken; CliError when the worker exits or the timeout passes.
    """
    from replay.common import lag_text

    began = time.monotonic()
    done, moved_at, ready_at, last = 0, began, None, None
    async with ClockWatch(broker, changelog) as clocks:
        while True:
            status = worker.exited()
            if status is not None:
                raise RuntimeFailure(f"the worker exited with status {status}:\n{tail(worker.log)}")
            applied = await clocks.poll()
            lag = {p: max(0, end - max(starts[p], applied.get(p, -1) + 1)) for p, end in ends.items()}
            position = sum(ends[p] - starts[p] - lag[p] for p in ends if ends[p] > starts[p])
            now = time.monotonic()
            if position != last:
                last, moved_at = position, now
            ready = await asyncio.to_thread(worker.ready)
            ready_at = (ready_at or now) if ready else None
            bar.set_postfix_str(("running" if ready else "starting") + f"; {lag_text(lag)}", refresh=False)
            bar.update(position - done)
            done = position
            if not any(lag.values()):
                return now - began
            if stall_s is not None and ready_at is not None and now - max(moved_at, ready_at) > stall_s:
                bar.write(
                    f"no progress for {stall_s:g}s ({lag_text(lag)}): restarting the worker at the offsets it has "
                    "applied",
                    file=sys.stderr,
                )
                rewind = {p: applied.get(p, starts[p]) for p in ends}
                await asyncio.to_thread(worker.restart, functools.partial(rewind_group, broker, group, topic, rewind))
                moved_at, ready_at = time.monotonic(), None
            if timeout_s is not None and now - began > timeout_s:
                raise RuntimeFailure(f"not caught up after {timeout_s:.0f}s ({lag_text(lag)}); re-run to resume")
            await asyncio.sleep(poll_s)
