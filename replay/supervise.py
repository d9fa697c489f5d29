"""The rebuilt version's worker process, and how far it has got.

Progress is read from the worker's own state, not from Faust's committed offsets: every batch ends with a clock entry
per partition (`__clock__:P`, processor/worker/state.py) holding the last offset fully applied, written to the
changelog topic. `ClockWatch` follows that topic, so "caught up" means applied, whatever Faust acknowledged.

`WorkerProcess` starts a worker (`python -m replay.launch`) and stops it; `WorkerGroup` holds the rebuild's workers
(`replay run --workers N`, one consumer group), stops them together and restarts them all when they are ready (each
/health answers, the partitions assigned, no rebalance) but have applied nothing for `stall_s` while records remain.
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
    """A worker subprocess of the new version (output appended to its log file), started at once."""

    def __init__(self, command: list[str], log: Path, web_port: int, name: str = "the worker") -> None:
        self.command = command
        self.log = log
        self.web_port = web_port
        self.name = name  # for messages: "the worker", "worker 2 of 3"
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as handle:
            return subprocess.Popen(self.command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=child_env())

    def start(self) -> None:
        """Start the process again (after it has ended)."""
        self.proc = self._start()

    def exited(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return self.proc.poll()

    def health(self) -> dict[str, Any] | None:
        """The worker's /health body, None while it does not answer."""
        try:
            url = f"http://127.0.0.1:{self.web_port}/health"
            with urllib.request.urlopen(url, timeout=1.0) as response:
                health = json.loads(response.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None
        return health if isinstance(health, dict) else None

    def ready(self) -> bool:
        """True when /health answers with partitions assigned and no rebalance under way."""
        health = self.health()
        return health is not None and bool(health.get("partitions")) and not health.get("rebalancing")

    def terminate(self) -> bool:
        """Send SIGTERM if the process still runs (`reap` then waits for it); whether it was sent."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return True
        return False

    def reap(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Wait for the process to end (SIGKILL after `timeout_s`); its exit status."""
        proc = self.proc
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return proc.returncode

    def stop(self) -> int:
        """SIGTERM, wait (SIGKILL after STOP_TIMEOUT_S); return the exit status."""
        self.terminate()
        return self.reap()

    def wait(self) -> int:
        """Wait until the process ends on its own; its exit status."""
        return self.proc.wait()


class WorkerGroup:
    """The rebuild's worker processes, one consumer group of the new version (`replay run --workers N`): what
    `follow_progress` watches. Any member that ends fails the rebuild; they are stopped and restarted together.

    `partitions`: of the events topic; members beyond it own none and count as ready without partitions.
    """

    def __init__(self, members: list[WorkerProcess], partitions: int | None = None) -> None:
        if not members:
            raise ValueError("a worker group needs at least one worker")
        self.members = members
        self.partitions = len(members) if partitions is None else partitions
        self.restarts = 0

    @classmethod
    def launch(cls, specs: list[tuple[list[str], Path, int, str]], partitions: int | None = None) -> WorkerGroup:
        """Start a member per (command, log, web port, name); if one cannot start, stop those started and raise."""
        members: list[WorkerProcess] = []
        try:
            for command, log, port, name in specs:
                members.append(WorkerProcess(command, log, port, name))
        except BaseException:
            if members:
                cls(members).stop()
            raise
        return cls(members, partitions)

    @property
    def ended(self) -> WorkerProcess | None:
        """The first member whose process has ended, else None."""
        return next((member for member in self.members if member.exited() is not None), None)

    @property
    def name(self) -> str:
        """The member that ended (for messages), else the group."""
        ended = self.ended
        if ended is not None:
            return ended.name
        return self.members[0].name if len(self.members) == 1 else f"the {len(self.members)} workers"

    @property
    def log(self) -> Path:
        """The log of the member that ended, else the first member's."""
        return (self.ended or self.members[0]).log

    def exited(self) -> int | None:
        """The exit status of the first member found ended (one is enough to fail the rebuild), else None."""
        ended = self.ended
        return None if ended is None else ended.exited()

    def ready(self) -> bool:
        """True when every member's /health answers with no rebalance under way and every member owns partitions
        (with more members than partitions: one member per partition, the others idle)."""
        healths = [member.health() for member in self.members]
        if any(health is None or health.get("rebalancing") for health in healths):
            return False
        owning = sum(1 for health in healths if health and health.get("partitions"))
        return owning >= min(len(self.members), max(1, self.partitions))

    def stop(self) -> int:
        """SIGTERM to every member at once, wait for all (SIGKILL after STOP_TIMEOUT_S); the worst exit status: a
        failure a member reported (> 0, the highest), else an end by a signal (< 0), else 0. A member that ends by
        the SIGTERM sent here stopped as asked (0): one still starting, before it handles signals, does that."""
        asked = [member.terminate() for member in self.members]
        statuses = [member.reap() for member in self.members]
        statuses = [0 if sent and code == -signal.SIGTERM else code for sent, code in zip(asked, statuses, strict=True)]
        return max(statuses, key=lambda status: (status > 0, status != 0, abs(status)))

    def restart(self, before_start: Callable[[], None] | None = None) -> None:
        """Stop all, run `before_start` once (no member runs), start all again."""
        if self.restarts >= MAX_RESTARTS:
            logs = "\n".join(f"{member.name} ({member.log}):\n{tail(member.log)}" for member in self.members)
            them = "the worker" if len(self.members) == 1 else "the workers"
            raise RuntimeFailure(f"{them} made no progress after {self.restarts} restarts:\n{logs}")
        self.stop()
        if before_start is not None:
            before_start()
        self.restarts += 1
        for member in self.members:
            member.start()

    def wait(self, poll_s: float = 0.5) -> int:
        """Wait until a member ends on its own; its exit status (the caller stops the others)."""
        while True:
            status = self.exited()
            if status is not None:
                return status
            time.sleep(poll_s)


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
    worker: WorkerGroup,
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
                raise RuntimeFailure(f"{worker.name} exited with status {status}:\n{tail(worker.log)}")
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
                    f"no progress for {stall_s:g}s ({lag_text(lag)}): restarting {worker.name} at the offsets applied",
                    file=sys.stderr,
                )
                rewind = {p: applied.get(p, starts[p]) for p in ends}
                await asyncio.to_thread(worker.restart, functools.partial(rewind_group, broker, group, topic, rewind))
                moved_at, ready_at = time.monotonic(), None
            if timeout_s is not None and now - began > timeout_s:
                raise RuntimeFailure(f"not caught up after {timeout_s:.0f}s ({lag_text(lag)}); re-run to resume")
            await asyncio.sleep(poll_s)
