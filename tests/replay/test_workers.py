"""`replay run --workers N`: the commands, ports, logs and state directories of a group, the usage errors, and
`WorkerGroup` (replay/supervise.py) over trivial subprocesses (sleepers and tiny /health servers, no Kafka)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from processor.brokers.common import free_port
from processor.cli import RuntimeFailure, main
from processor.cli.replay import _web_ports
from replay import supervise
from replay.kafka import GroupState
from replay.run import RunConfig, RunPlan, plan_lines, worker_command, worker_slots
from replay.supervise import WorkerGroup, WorkerProcess
from tests.replay.test_supervise import Bar, FakeClocks

SLEEP = "import time; time.sleep(120)"
# Exits with status sys.argv[1] on SIGTERM (after a delay, so that a stop that waits in turn shows); prints `armed`
# once its handler is installed.
TRAP = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.0), sys.exit(int(sys.argv[1]))))\n"
    "print('armed', flush=True)\n"
    "time.sleep(120)\n"
)
# Serves the JSON body sys.argv[2] as every page on 127.0.0.1:sys.argv[1] (a worker's /health).
HEALTH = (
    "import http.server, sys\n"
    "body = sys.argv[2].encode()\n"
    "class Page(http.server.BaseHTTPRequestHandler):\n"
    "    def do_GET(self):\n"
    "        self.send_response(200)\n"
    "        self.send_header('Content-Type', 'application/json')\n"
    "        self.end_headers()\n"
    "        self.wfile.write(body)\n"
    "    def log_message(self, *args):\n"
    "        pass\n"
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), Page).serve_forever()\n"
)


@pytest.fixture(autouse=True)
def _no_ccmeter_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CCMETER_"):
            monkeypatch.delenv(name)


def config_of(tmp_path: Path, ports: tuple[int, ...], store: str = "memory://") -> RunConfig:
    state = tmp_path / "worker-state-v2"
    return RunConfig(
        broker="127.0.0.1:9092", prefix="ccmeter.", version="v2", from_ms=None, app_id="ccmeter-worker-v2",
        data_dir=state, web_ports=ports, log=state / "replay-worker.log", worker_args=("--batch-size", "500"),
        store=store,
    )  # fmt: skip


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_a_group_of_three_has_its_own_ports_logs_and_rocksdb_state_dirs(tmp_path: Path) -> None:
    config = config_of(tmp_path, (6070, 6071, 6072), store="rocksdb://")
    slots = worker_slots(config)
    state = tmp_path / "worker-state-v2"
    assert [s.web_port for s in slots] == [6070, 6071, 6072]
    assert [s.log for s in slots] == [
        state / "replay-worker.log", state / "replay-worker-2.log", state / "replay-worker-3.log"
    ]  # fmt: skip
    assert [s.state_dir for s in slots] == [state, state / "worker-2", state / "worker-3"]
    assert [s.name(3) for s in slots] == ["worker 1 of 3", "worker 2 of 3", "worker 3 of 3"]
    commands = [worker_command(config, 4, slot) for slot in slots]
    assert [flag(c, "--web-port") for c in commands] == ["6070", "6071", "6072"]
    assert len({flag(c, "--state-dir") for c in commands}) == 3  # two RocksDB stores never share a directory
    for command in commands:  # the same version and group, the user's flags last
        assert command[1:3] == ["-m", "replay.launch"]
        assert flag(command, "--app-id") == "ccmeter-worker-v2" and flag(command, "--prefix") == "ccmeter.v2."
        assert flag(command, "--events-topic") == "ccmeter.events" and flag(command, "--partitions") == "4"
        assert command[-2:] == ["--batch-size", "500"]
    assert worker_command(config, 4) == commands[0]  # the first worker by default, as before --workers


def test_memory_stores_share_the_state_dir_and_one_worker_is_as_before(tmp_path: Path) -> None:
    config = config_of(tmp_path, (7001, 7002, 7003))
    assert {s.state_dir for s in worker_slots(config)} == {tmp_path / "worker-state-v2"}  # Faust's datadir only
    single = config_of(tmp_path, (7001,))
    (slot,) = worker_slots(single)
    assert (slot.web_port, slot.log, slot.name(1)) == (7001, single.log, "the worker")
    custom = RunConfig(**{**config.__dict__, "log": tmp_path / "logs" / "v2.log"})
    assert [s.log.name for s in worker_slots(custom)] == ["v2.log", "v2-2.log", "v2-3.log"]


def test_the_plan_says_how_many_workers_and_that_extra_ones_idle(tmp_path: Path) -> None:
    ends = {0: 10, 1: 10}
    plan = RunPlan("beginning", {0: 0, 1: 0}, ends, GroupState("ccmeter-worker-v2", "Empty"))
    lines = plan_lines(config_of(tmp_path, (7001, 7002, 7003)), plan)
    text = "\n".join(lines)
    assert "workers: 3 processes of group ccmeter-worker-v2 share the 2 partitions; 1 of them idle" in text
    assert "then stop the workers" in text
    assert sum(1 for line in lines if line.startswith("  worker ")) == 3
    assert "replay-worker-3.log" in text and "web port 7003" in text
    single = "\n".join(plan_lines(config_of(tmp_path, (7001,)), plan))
    assert "worker: web port 7001" in single and "workers:" not in single and "then stop the worker" in single


def test_web_ports_count_up_from_the_given_one_or_are_free_and_distinct() -> None:
    assert _web_ports(6070, 3) == (6070, 6071, 6072)
    assert _web_ports(6070, 1) == (6070,)
    free = _web_ports(None, 4)
    assert len(set(free)) == 4 and all(0 < port < 65536 for port in free)


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def run_args(*extra: str) -> list[str]:
    """`replay run` on a broker where nothing listens: a usage error must come before any broker call."""
    return ["replay", "run", "--broker", closed_port(), "--from", "beginning", "--into", "v2", "--quiet", *extra]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--workers", "0"], "--workers must be at least 1, not 0"),
        (["--workers", "-2"], "--workers must be at least 1, not -2"),
        (["--workers", "2", "--web-port", "65535"], "--web-port 65535 with --workers 2"),
        (["--workers", "2", "--", "--web-port", "7000"], "--web-port after -- would be the same for all 2 workers"),
        (["--workers", "3", "--", "--state-dir=/tmp/x"], "--state-dir after -- would be the same for all 3"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(extra: list[str], fragment: str, capsys, tmp_path: Path) -> None:
    assert main(run_args("--state-dir", str(tmp_path / "state"), *extra)) == 2
    err = capsys.readouterr().err
    assert err.startswith("ccmeter: error: ") and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "state").exists()


def test_the_variable_is_named_when_it_holds_the_bad_value(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("CCMETER_WORKERS", "0")
    assert main(run_args()) == 2
    err = capsys.readouterr().err
    assert err == "ccmeter: error: $CCMETER_WORKERS must be at least 1, not 0\n"


def test_help_says_that_extra_workers_idle(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["replay", "run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--workers N" in text and "workers beyond the partition count idle" in text and "$CCMETER_WORKERS" in text


# -- WorkerGroup over trivial subprocesses ----------------------------------------------------------------------------


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def group_of(tmp_path: Path, commands: list[list[str]], partitions: int | None = None) -> WorkerGroup:
    n = len(commands)
    specs = [
        (command, tmp_path / f"w{i}.log", free_port(), f"worker {i} of {n}")
        for i, command in enumerate(commands, start=1)
    ]
    return WorkerGroup.launch(specs, partitions)


def until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def armed(group: WorkerGroup, *members: int) -> None:
    """Wait until the TRAP `members` (indexes) have installed their SIGTERM handler (a fixed sleep raced a slow
    start)."""
    until(lambda: all("armed" in supervise.tail(group.members[i].log) for i in members))


def health_group(tmp_path: Path, bodies: list[dict[str, object]], partitions: int) -> WorkerGroup:
    ports = [free_port() for _ in bodies]
    specs = [
        (python(HEALTH, str(port), json.dumps(body)), tmp_path / f"h{i}.log", port, f"worker {i}")
        for i, (port, body) in enumerate(zip(ports, bodies, strict=True), start=1)
    ]
    group = WorkerGroup.launch(specs, partitions)
    until(lambda: all(member.health() is not None for member in group.members))
    return group


def test_stop_stops_every_member_at_once_and_returns_the_worst_status(tmp_path: Path) -> None:
    group = group_of(tmp_path, [python(TRAP, "0"), python(TRAP, "3"), python(TRAP, "0")])
    armed(group, 0, 1, 2)
    assert group.exited() is None
    began = time.monotonic()
    assert group.stop() == 3
    assert time.monotonic() - began < 2.5  # three 1 s shutdowns in parallel; in turn they take 3 s
    assert [member.exited() for member in group.members] == [0, 3, 0]
    assert group.stop() == 3  # stopping again signals nothing and reports the same


def test_a_member_ended_by_the_groups_own_sigterm_stopped_as_asked(tmp_path: Path) -> None:
    """A worker still starting (no SIGTERM handler yet) dies of the SIGTERM of `stop`: that is the stop asked for,
    reported as 0 (found in CI: a second worker still importing when the first had rebuilt everything)."""
    group = group_of(tmp_path, [python(TRAP, "0"), python(SLEEP)])
    armed(group, 0)  # the sleeper has no handler
    assert group.stop() == 0
    assert [member.exited() for member in group.members] == [0, -15]


def test_a_member_that_ends_is_named_with_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = group_of(tmp_path, [python(SLEEP), python("import sys; print('boom'); sys.exit(7)")])
    try:
        until(lambda: group.exited() is not None)
        assert group.exited() == 7 and group.name == "worker 2 of 2" and group.log == tmp_path / "w2.log"
        assert group.members[0].exited() is None  # the other one still runs until the group is stopped
        assert group.wait() == 7
        FakeClocks.worker = group  # type: ignore[assignment]
        monkeypatch.setattr(supervise, "ClockWatch", FakeClocks)
        coro = supervise.follow_progress("b:1", "g", "t", "c", {0: 0}, {0: 10}, group, Bar(), poll_s=0.01)
        with pytest.raises(RuntimeFailure, match="^worker 2 of 2 exited with status 7:\nboom$"):
            asyncio.run(coro)
    finally:
        assert group.stop() == 7  # the sleeper is stopped too (SIGTERM: -15), the worst is the failure
    assert group.members[0].exited() == -15


def test_ready_needs_every_member_answering_without_a_rebalance(tmp_path: Path) -> None:
    owns = {"partitions": [0, 1], "rebalancing": False}
    idle = {"partitions": [], "rebalancing": False}
    cases = [
        ([owns, owns], 4, True),
        ([owns, idle], 4, False),  # a member still without partitions while there are enough for both
        ([owns, idle], 1, True),  # more workers than partitions: the extra one idles
        ([owns, {"partitions": [2, 3], "rebalancing": True}], 4, False),
        ([idle], 4, False),
    ]
    for bodies, partitions, ready in cases:
        group = health_group(tmp_path, bodies, partitions)
        try:
            assert group.ready() is ready, (bodies, partitions)
        finally:
            group.stop()
    group = group_of(tmp_path, [python(SLEEP)], 4)  # no /health at all
    try:
        assert group.ready() is False
    finally:
        group.stop()


def test_restart_stops_all_runs_before_start_once_and_starts_all(tmp_path: Path) -> None:
    group = group_of(tmp_path, [python(SLEEP), python(SLEEP)])
    try:
        first = [member.proc.pid for member in group.members]
        seen: list[list[int | None]] = []
        group.restart(lambda: seen.append([member.exited() for member in group.members]))
        assert seen == [[-15, -15]]  # once, with no member running
        assert group.restarts == 1 and group.exited() is None
        assert not {member.proc.pid for member in group.members} & set(first)
        group.restarts = supervise.MAX_RESTARTS
        with pytest.raises(RuntimeFailure, match="the workers made no progress after 5 restarts:\nworker 1 of 2"):
            group.restart()
        assert group.exited() is None  # refused before stopping anything
    finally:
        group.stop()


def test_a_group_of_one_is_the_old_single_worker(tmp_path: Path) -> None:
    group = WorkerGroup.launch([(python("import sys; sys.exit(4)"), tmp_path / "w.log", free_port(), "the worker")])
    assert group.wait() == 4 and group.name == "the worker" and group.stop() == 4
    single = WorkerProcess(python(SLEEP), tmp_path / "single.log", free_port())
    assert single.name == "the worker" and single.stop() == -15
