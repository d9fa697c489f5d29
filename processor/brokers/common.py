"""What the embedded brokers share: the error type, port helpers, log tails and a foreground runner."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self


class BrokerError(RuntimeError):
    """A broker could not be started, probed or stopped."""


class Broker(Protocol):
    """A locally started broker process (KafkaServer, TansuBroker)."""

    @property
    def bootstrap(self) -> str: ...

    @property
    def log_path(self) -> Path: ...

    @property
    def running(self) -> bool: ...

    def start(self) -> Self: ...

    def stop(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def terminate(process: subprocess.Popen | None, timeout: float) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it has not exited after `timeout` seconds."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it; tiny race until the caller binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port (a connect succeeds)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def tail_file(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note saying it is missing or empty."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:]) or f"(empty log at {path})"


def serve_forever(broker: Broker, what: str) -> int:
    """Start `broker`, print its bootstrap address, block until Ctrl-C or SIGTERM, then stop it; exit status."""
    stopping = False

    def _on_sigterm(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    try:
        with broker as running:
            try:
                print(f"{what} ready on {running.bootstrap} (log: {running.log_path}); Ctrl-C stops it", flush=True)
                while not stopping:
                    if not running.running:
                        print(f"{what} exited unexpectedly; see {running.log_path}", file=sys.stderr)
                        return 1
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the broker mid-stop
            print(f"stopping {what} ...", flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
    return 0
