"""Subprocesses of the benchmarks (the ccmeter worker, the naive agent, the Quix baseline, CLI commands) and /proc
readings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT
from processor.brokers.common import free_port
from processor.web.tokens import new_token, token_line

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def clean_env() -> dict[str, str]:
    """The environment without CCMETER_* settings (the flags decide)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CCMETER_")}


@dataclass
class Proc:
    """A subprocess with its log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    token: str | None = None  # operator token of the worker's HTTP API

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header of the worker's HTTP API (empty without a token)."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, Any]:
        """(status, JSON body) of GET path on the web port."""
        try:
            request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=self.auth)
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def health(self) -> dict[str, Any] | None:
        try:
            status, body = self.get("/health", timeout=2.0)
        except (OSError, ValueError):
            return None
        return body if status == 200 else None

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """Wait until the worker owns its partitions and is not rebalancing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"process exited with {self.proc.returncode}:\n{self.tail()}")
            health = self.health()
            if health and health["partitions"] and not health["rebalancing"]:
                return health
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready after {timeout:.0f}s:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL if it hangs."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_worker(
    bootstrap: str,
    prefix: str,
    app_id: str,
    workdir: Path,
    *extra: str,
    module: str = "processor.cli",
    env: dict[str, str] | None = None,
) -> Proc:
    """`ccmeter worker` with its real (default) settings: memory store, batch 20,000 / 200 ms, commit every 2 s.
    Only the broker, names, web port and data directory are set. `module` runs a variant (bench.worker_variant),
    `env` adds environment variables. The HTTP API gets an operator token (`Proc.token`), as in production."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"worker-{app_id}.log"
    token = new_token()
    tokens = workdir / f"tokens-{app_id}.txt"
    tokens.write_text(token_line(token) + "\n")
    extra = ("--web-tokens-file", str(tokens), *extra)
    args = [
        sys.executable, "-m", module, "worker",
        "--broker", bootstrap, "--prefix", prefix, "--app-id", app_id,
        "--web-host", "127.0.0.1", "--web-bind", "127.0.0.1", "--web-port", str(port),
        "--store", "memory://", "--state-dir", str(workdir / f"data-{app_id}"), "--partitions", "1",
        *extra,
    ]  # fmt: skip
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            args, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env={**clean_env(), **(env or {})}
        )
    return Proc(proc, log, port, token)


def start_naive(
    bootstrap: str, topic: str, app_id: str, limit: int, result: Path, workdir: Path, mode: str = "naive"
) -> Proc:
    """bench/naive_agent.py (the naive Faust agent, or a Faust floor: `mode`) as a subprocess."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"naive-{app_id}.log"
    args = [
        sys.executable, "-m", "bench.naive_agent", "--broker", bootstrap, "--topic", topic, "--app-id", app_id,
        "--mode", mode, "--limit", str(limit), "--result", str(result), "--data-dir", str(workdir / f"data-{app_id}"),
    ]  # fmt: skip
    with log.open("wb") as handle:
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=clean_env())
    return Proc(proc, log)


def start_quix(python: Path, bootstrap: str, topic: str, app_id: str, limit: int, result: Path, workdir: Path) -> Proc:
    """bench/quix_app.py (the Quix Streams baseline) as a subprocess of `python` (its own environment, see
    bench/quix_env.py), run as a script so that it imports nothing of ccmeter."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"quix-{app_id}.log"
    args = [
        str(python), str(ROOT / "bench" / "quix_app.py"), "--broker", bootstrap, "--topic", topic, "--app-id", app_id,
        "--limit", str(limit), "--result", str(result), "--state-dir", str(workdir / f"data-{app_id}"),
    ]  # fmt: skip
    with log.open("wb") as handle:
        proc = subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, cwd=workdir, env=clean_env())
    return Proc(proc, log)


def run_cli(*args: str, timeout: float = 600.0) -> tuple[float, str]:
    """Run `python -m processor.cli ARGS`; (wall seconds, stdout). Raises with stderr on failure."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "processor.cli", *args],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"ccmeter {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed, done.stdout
