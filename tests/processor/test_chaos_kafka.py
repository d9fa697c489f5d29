"""Kill-safety under chaos (issue 11), on a real broker: two `ccmeter worker`s with `--store rocksdb://` (each its own
data directory) meter a ~100k-event history published while they run; either is SIGKILLed at random moments and
restarted at once (six times), and one of them is paused (SIGSTOP) past its session timeout while the other takes
its partitions, then resumed with new input waiting: a zombie, which must find itself fenced (docs/running.md,
"Checkpoint, fencing and failures").

Most kills come a random moment after both workers process again (small batches: most land inside a checkpoint),
the others whenever (e.g. during a recovery). The schedule (the victims, the pauses, which kills wait, where the
zombie comes) is drawn from a seeded RNG; the seed is in every failure message and `$CCMETER_CHAOS_SEED` replays a
schedule (the moments are wall-clock delays, so how they fall between the workers' batches still varies). Once both
workers have caught up (the group's committed offsets are the end of every events partition and both own
partitions, settled), the outputs read `read_committed` (like the sink) must equal the batch engine's on the same
events, and no id may have been emitted with two contents.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from processor.brokers.readback import consume
from processor.topics import ALERTS, EVENTS, INTERVALS, PEAK_WINDOWS, USAGE_CHANGES
from tests.processor.test_app_kafka import PARTITIONS, check_equal, done_when, scenario
from tests.processor.worker.support import (
    WorkerProcess,
    arrival_times,
    by_id,
    committed_offsets,
    end_offsets,
    produce,
    start_worker,
)

pytestmark = [pytest.mark.kafka, pytest.mark.chaos, pytest.mark.timeout(420)]

SEED_ENV = "CCMETER_CHAOS_SEED"
SHAPE = {"accounts": 8, "agents": 10, "days": 3}  # 112,202 records with the watermark pushers (history seed 12)
KILLS = 6
CHUNKS = 12  # the history is published in chunks while the workers run, the last one while the zombie sleeps
BUSY = 0.75  # the share of kills that wait until both workers are processing again (else: whatever is going on)
PAUSES_S = (0.2, 1.5)  # the random wait before each action
NAMES = ("a", "b")
OPTIONS = (
    "--store", "rocksdb://", "--batch-size", "500",  # many checkpoints: most kills land in one
    "--session-timeout", "3s", "--heartbeat-interval", "300ms",  # a killed member leaves the group soon
)  # fmt: skip
WAIT_S = 90.0  # bound of every wait on the workers
CATCH_UP_S = 180.0


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Crew:
    """The test's two workers, each restarted in its own directory (same RocksDB data dir, a new log per run)."""

    broker: str
    prefix: str
    app_id: str
    root: Path
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    logs: dict[str, list[Path]] = field(default_factory=dict)
    schedule: list[str] = field(default_factory=list)
    began: float = field(default_factory=time.monotonic)

    def note(self, what: str) -> None:
        """Add a line to the schedule, with the seconds since the crew began."""
        self.schedule.append(f"{time.monotonic() - self.began:6.1f}s {what}")

    def start(self, name: str) -> WorkerProcess:
        """Start worker `name` (again) on its own data directory."""
        workdir = self.root / name
        data = ("--state-dir", str(workdir / "data"))
        worker = start_worker(self.broker, self.prefix, self.app_id, workdir, *OPTIONS, *data)
        self.workers[name] = worker
        self.logs.setdefault(name, []).append(worker.log)
        return worker

    def kill_and_restart(self, name: str) -> None:
        """SIGKILL worker `name` (it must still be running) and start it again at once."""
        worker = self.workers[name]
        worker.kill()
        status = worker.proc.returncode
        assert status == -signal.SIGKILL, f"worker {name} had exited by itself with status {status}"
        self.note(f"SIGKILL {name}, restart")
        self.start(name)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        """Poll `condition` until it holds; AssertionError naming `what` after `timeout`."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"{what}: not after {timeout:.0f}s"
            for name, worker in self.workers.items():
                assert worker.proc.poll() is None, f"worker {name} exited with {worker.proc.returncode}"
            time.sleep(0.2)

    def settled(self) -> bool:
        """Both workers own partitions, not rebalancing, and together own each partition once."""
        healths = [worker.health() for worker in self.workers.values()]
        if not all(h and h["partitions"] and not h["rebalancing"] for h in healths):
            return False
        owned = [p for h in healths for p in h["partitions"]]  # type: ignore[index]
        return sorted(owned) == list(range(PARTITIONS))

    def report(self, lines: int = 40) -> str:
        """The schedule so far and the tails of each worker's last two logs."""
        out = ["schedule:", *self.schedule]
        for name, paths in self.logs.items():
            for path in paths[-2:]:
                out += [f"--- worker {name}: {path.name} ---", _tail(path, lines)]
        return "\n".join(out)

    def stop(self) -> None:
        """Stop every worker cleanly (a paused one is resumed first)."""
        for worker in self.workers.values():
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGCONT)  # a paused worker would not see SIGTERM
            worker.stop()


def _publish(broker: str, topic: str, chunks: Iterable[tuple[list[bytes], list[int]]]) -> int:
    """Publish the chunks in order (runs beside the chaos)."""
    return sum(produce(broker, topic, lines, stamps) for lines, stamps in chunks)


def _zombie(crew: Crew, name: str, publishing: Future[int], tail: tuple[list[bytes], list[int]], topic: str) -> None:
    """Pause `name` past its session timeout while the other worker takes every partition and the last chunk is
    published, resume it, and wait until it says it lost its partitions (the approach of test_checkpoint_kafka.py)."""
    zombie, other = crew.workers[name], crew.workers[next(n for n in NAMES if n != name)]
    crew.wait_until(crew.settled, "both workers own partitions before the pause")
    owned = (zombie.health() or {}).get("partitions")
    zombie.proc.send_signal(signal.SIGSTOP)
    crew.note(f"SIGSTOP {name} (owned {owned})")
    publishing.result(timeout=WAIT_S)
    produce(crew.broker, topic, *tail)  # waiting for the zombie when it wakes up
    crew.note("last chunk published")

    def taken_over() -> bool:
        health = other.health()
        return bool(health) and len(health["partitions"]) == PARTITIONS and not health["rebalancing"]

    crew.wait_until(taken_over, "the other worker owns every partition once the zombie's session expired")
    zombie.proc.send_signal(signal.SIGCONT)
    crew.note(f"SIGCONT {name}")
    crew.wait_until(lambda: "ownership failed" in zombie.log.read_text(errors="replace"), "the zombie was fenced")
    crew.note(f"{name} logged: ownership failed")


def _check_no_conflicts(got: dict[str, list[dict]], names: dict[str, str]) -> None:
    """Besides usage changes and windows (check_equal): every copy of an alert transition and of a closed interval
    equals the first one."""

    def keyed(records: Iterable[dict], key: Callable[[dict], object]) -> list[dict]:
        return [{**record, "~id": repr(key(record))} for record in records]

    by_id(keyed(got[names[ALERTS]], lambda r: (r["alert_id"], r["state"])), "~id")
    intervals = [r for r in got[names[INTERVALS]] if r["record"] in ("user_interval", "presence_interval")]
    by_id(keyed((r for r in intervals if r["end"] is not None), lambda r: r["interval_id"]), "~id")


def test_random_kills_and_a_zombie_lose_and_corrupt_nothing(
    broker: str, broker_kind: str, topic_prefix: str, tmp_path: Path
) -> None:
    pytest.importorskip("rocksdict", reason="a dev dependency")
    if broker_kind == "tansu":
        pytest.skip("Tansu has no transactions and reports a high watermark one below the end: no catch-up to wait on")
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(2**31))
    print(f"chaos seed {seed} (replay: {SEED_ENV}={seed})")
    rng = random.Random(seed)
    names, lines, want_changes, want_windows, app_id = scenario(broker, topic_prefix, tmp_path, 12, **SHAPE)
    stamps = arrival_times(lines)
    size = -(-len(lines) // CHUNKS)
    chunks = [(lines[i : i + size], stamps[i : i + size]) for i in range(0, len(lines), size)]
    actions = ["kill"] * KILLS
    actions.insert(rng.randint(2, KILLS - 2), "zombie")
    crew = Crew(broker, topic_prefix, app_id, tmp_path)
    try:
        with ThreadPoolExecutor(1) as pool:
            for name in NAMES:
                crew.start(name)
            for worker in crew.workers.values():
                worker.wait_ready(timeout=WAIT_S)
            publishing = pool.submit(_publish, broker, names[EVENTS], chunks[:-1])
            crew.note(f"publishing {len(lines)} records in {len(chunks)} chunks")
            for action in actions:
                if rng.random() < BUSY:
                    crew.wait_until(crew.settled, "both workers own partitions again")
                time.sleep(rng.uniform(*PAUSES_S))  # a random moment: nothing waits on it
                if action == "zombie":
                    _zombie(crew, rng.choice(NAMES), publishing, chunks[-1], names[EVENTS])
                else:
                    crew.kill_and_restart(rng.choice(NAMES))
            assert publishing.result(timeout=WAIT_S) + len(chunks[-1][0]) == len(lines)
        ends = end_offsets(broker, names[EVENTS], PARTITIONS)
        assert sum(ends.values()) == len(lines), ends

        def caught_up() -> bool:
            return committed_offsets(broker, app_id, list(ends)) == ends and crew.settled()

        crew.wait_until(caught_up, "the group's committed offsets reach the end of the events topic", CATCH_UP_S)
        crew.note("caught up")
        topics = [names[USAGE_CHANGES], names[PEAK_WINDOWS], names[ALERTS], names[INTERVALS]]  # JSON values
        got = consume(broker, topics, done_when(want_changes, want_windows, names), timeout=WAIT_S)
        check_equal(got, names, want_changes, want_windows)
        _check_no_conflicts(got, names)
    except Exception as exc:
        detail = str(exc)
        detail = detail if len(detail) < 4000 else detail[:4000] + " [...]"
        raise AssertionError(f"chaos seed {seed} ({SEED_ENV}={seed} replays it): {detail}\n{crew.report()}") from exc
    finally:
        print("\n".join(crew.schedule))
        crew.stop()
