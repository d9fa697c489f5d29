"""What the embedded brokers share: the error type, port helpers, log tails and a foreground runner."""

from __future__ import annotations

import contextlib
import random
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


LOWEST_PICKED_PORT = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_PICKER = random.SystemRandom()  # not the `random` module: a process that seeds it would repeat another's picks


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now, for a server that the caller starts next.

    Picked below the kernel's ephemeral range when it can be: a port of that range (what binding port 0 gives) can be
    taken by any outgoing connection, a Kafka client's, before the server binds it (seen in a bench run: `address
    already in use` for the second worker's web port). Otherwise the OS picks it.
    """
    first_ephemeral = ephemeral_ports()[0]
    if first_ephemeral - LOWEST_PICKED_PORT >= 1_000:
        for _ in range(100):
            port = _PICKER.randrange(LOWEST_PICKED_PORT, first_ephemeral)
            if _bindable(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range of ports for outgoing connections (Linux; 32768-60999 where it cannot be read)."""
    try:
        low, high = (int(part) for part in EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        return 32_768, 60_999
    return low, high


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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
