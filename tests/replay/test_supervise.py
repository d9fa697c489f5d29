"""The stall watchdog of `replay run` (replay/supervise.py), with a fake worker and fake changelog clocks."""

from __future__ import annotations

import asyncio

import pytest

from processor.cli import RuntimeFailure
from replay import supervise


class FakeClocks:
    """Applied offsets per partition; p1 stays stuck until the worker has restarted once."""

    worker: FakeWorker

    def __init__(self, broker: str, changelog: str) -> None:
        self.applied: dict[int, int] = {}

    async def __aenter__(self) -> FakeClocks:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def poll(self) -> dict[int, int]:
        self.applied[0] = 9  # done: offsets 0..9 of p0
        self.applied[1] = 19 if self.worker.restarts else 4  # stuck at 4 of 0..19 until a restart
        return self.applied


class FakeWorker:
    name = "the worker"

    def __init__(self, exits: int | None = None) -> None:
        self.restarts = 0
        self.rewinds: list[dict[int, int]] = []
        self.exits = exits
        self.log = None

    def exited(self) -> int | None:
        return self.exits

    def ready(self) -> bool:
        return True

    def restart(self, before_start=None) -> None:
        if before_start:
            before_start()
        self.restarts += 1


class Bar:
    def __init__(self) -> None:
        self.n, self.lines = 0, []

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text

    def write(self, text: str, file: object = None) -> None:
        self.lines.append(text)


def test_a_stalled_worker_is_rewound_to_what_it_applied_and_restarted(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = FakeWorker()
    FakeClocks.worker = worker
    rewinds: list[tuple[str, str, dict[int, int]]] = []
    monkeypatch.setattr(supervise, "ClockWatch", FakeClocks)
    monkeypatch.setattr(
        supervise, "rewind_group", lambda broker, group, topic, offsets: rewinds.append((group, topic, offsets))
    )
    bar = Bar()
    coro = supervise.follow_progress(
        "b:1", "app-v2", "ccmeter.events", "app-v2-state-changelog", {0: 0, 1: 0}, {0: 10, 1: 20}, worker, bar,
        poll_s=0.02, stall_s=0.2, timeout_s=10,
    )  # fmt: skip
    asyncio.run(coro)
    assert worker.restarts == 1
    assert rewinds == [("app-v2", "ccmeter.events", {0: 9, 1: 4})]  # the last applied offsets, not the next
    assert bar.n == 30 and "lag none" in bar.postfix
    assert "restarting the worker" in bar.lines[0]


def test_an_exited_worker_fails_with_its_log(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    worker = FakeWorker(exits=70)
    worker.log = tmp_path / "worker.log"
    worker.log.write_text("boom\n")
    FakeClocks.worker = worker
    monkeypatch.setattr(supervise, "ClockWatch", FakeClocks)
    coro = supervise.follow_progress("b:1", "g", "t", "c", {0: 0}, {0: 10}, worker, Bar(), poll_s=0.01, stall_s=None)
    with pytest.raises(RuntimeFailure, match="exited with status 70:\nboom"):  # exit status 1
        asyncio.run(coro)
