"""A throwaway single-node Apache Kafka 4.x (KRaft, combined broker+controller) for development and tests.

Runs the real broker from the Maven Central jars that `make kafka-jars` puts in tools/kafka/lib (or the directory
in $CCMETER_KAFKA_LIB) with `java -cp 'lib/*' kafka.Kafka server.properties`, after `kafka.tools.StorageTool
format` with a random cluster id. Everything (data, config, logs) lives in a temp dir that stop() removes.

    with KafkaServer() as kafka:
        use(kafka.bootstrap)          # "127.0.0.1:<free port>"

`python -m processor.brokers.kafka_server --port 9092` runs one in the foreground until Ctrl-C (`make kafka`).

Settings worth knowing (see `server_properties`):
  * auto.create.topics.enable=false, like a production cluster: topics come from `ccmeter topics create`
    (processor.topics) and Faust declares its own internal topics, so a typo or a missing topic shows up as an
    error instead of a silently auto-created 1-partition topic. Pass auto_create_topics=True to change it.
  * group.initial.rebalance.delay.ms=0 and group.min.session.timeout.ms=1000, so consumer groups form at once
    and tests may use short session timeouts.
  * All internal topics (offsets, transaction state, share state) have replication factor 1 and a single
    partition, which keeps the first group join and the first transaction fast.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from processor.brokers.common import BrokerError, free_port, port_in_use, serve_forever, tail_file, terminate
from processor.brokers.probe import probe_brokers

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LIB_DIR = REPO_ROOT / "tools" / "kafka" / "lib"
LIB_ENV = "CCMETER_KAFKA_LIB"
HOST = "127.0.0.1"
HEAP_ENV = "CCMETER_KAFKA_HEAP_OPTS"  # e.g. "-Xms128m -Xmx384m" for a tight CI box
DEFAULT_HEAP = ("-Xms256m", "-Xmx512m")
JVM_FLAGS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true", "-XX:+ExitOnOutOfMemoryError")
# The one-shot storage format: C1 only and serial GC start the JVM ~0.8 s faster on a 2-core box.
TOOL_JVM_FLAGS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true")

_LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = {level}
logger.apache.name = org.apache.kafka
logger.apache.level = {level}
"""


class KafkaServerError(BrokerError):
    """The Kafka server could not be started (missing jars/java, port taken, start-up failure or timeout)."""


def kafka_lib_dir() -> Path:
    """The directory holding the Kafka jars: $CCMETER_KAFKA_LIB or <repo>/tools/kafka/lib."""
    configured = os.environ.get(LIB_ENV)
    return Path(configured).expanduser().resolve() if configured else DEFAULT_LIB_DIR


def check_kafka_lib(lib_dir: Path | None = None) -> Path:
    """Return the jar directory if it holds the Kafka server jar; raise KafkaServerError saying how to get it."""
    lib = lib_dir or kafka_lib_dir()
    if not any(lib.glob("kafka_2.13-*.jar")):
        raise KafkaServerError(
            f"Kafka jars not found in {lib}: run `make kafka-jars` (downloads Apache Kafka from Maven Central)"
            f" or set ${LIB_ENV} to a directory holding kafka_2.13-*.jar and its dependencies"
        )
    return lib


def java_executable() -> str:
    """The `java` to run: $JAVA_HOME/bin/java if set, else `java` on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaServerError("`java` not found: install a Java 17+ runtime or set JAVA_HOME")
    return found


def random_cluster_id() -> str:
    """A random Kafka cluster id (a UUID in URL-safe base64 without padding, never starting with '-')."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def server_properties(
    port: int,
    controller_port: int,
    log_dirs: Path,
    *,
    auto_create_topics: bool = False,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The server.properties of a single-node combined broker+controller listening on 127.0.0.1."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dirs),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "auto.create.topics.enable": str(auto_create_topics).lower(),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    props.update(extra or {})
    return props


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()), encoding="utf-8")


class KafkaServer:
    """A single-node KRaft Kafka in a temp dir; a context manager (start on enter, stop and clean up on exit)."""

    def __init__(
        self,
        port: int | None = None,
        controller_port: int | None = None,
        *,
        lib_dir: Path | None = None,
        heap: tuple[str, ...] | None = None,
        auto_create_topics: bool = False,
        extra_properties: Mapping[str, str] | None = None,
        startup_timeout: float = 90.0,
        stop_timeout: float = 30.0,
        log_level: str = "INFO",
    ) -> None:
        self.requested_port = port
        self.requested_controller_port = controller_port
        self.lib_dir = lib_dir
        self.heap = heap if heap is not None else tuple(shlex.split(os.environ.get(HEAP_ENV, ""))) or DEFAULT_HEAP
        self.auto_create_topics = auto_create_topics
        self.extra_properties = dict(extra_properties or {})
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.log_level = log_level
        self.port = 0
        self.controller_port = 0
        self.workdir: Path | None = None
        self.cluster_id = ""
        self.startup_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The bootstrap address for clients, "127.0.0.1:PORT"."""
        if not self.port:
            raise KafkaServerError("the Kafka server is not started")
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The server log (Log4j output) inside the temp dir."""
        if self.workdir is None:
            raise KafkaServerError("the Kafka server is not started")
        return self.workdir / "server.log"

    @property
    def running(self) -> bool:
        """True while the Java process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> KafkaServer:
        """Format storage, start the JVM and block until the broker answers Metadata requests."""
        if self._process is not None:
            raise KafkaServerError("the Kafka server is already started")
        lib = check_kafka_lib(self.lib_dir)
        java = java_executable()
        if self.workdir is not None:  # stopped with keep_data: same ports, same data, no new format
            return self._restart(java, lib)
        for wanted in (self.requested_port, self.requested_controller_port):
            if wanted and port_in_use(HOST, wanted):
                raise KafkaServerError(f"port {HOST}:{wanted} is already in use (another broker running?)")
        started = time.monotonic()
        # A free port picked here may be taken by someone else before the JVM binds it: retry then, with new ports
        # (only when we picked them).
        attempts = 1 if self.requested_port and self.requested_controller_port else 3
        for attempt in range(1, attempts + 1):
            self.port = self.requested_port or free_port(HOST)
            self.controller_port = self.requested_controller_port or free_port(HOST)
            while self.controller_port == self.port:
                self.controller_port = free_port(HOST)
            self.workdir = Path(tempfile.mkdtemp(prefix="ccmeter-kafka-"))
            try:
                self._launch(java, lib)
                self._wait_ready()
                break
            except KafkaServerError as exc:
                self.stop()
                if attempt == attempts or "Address already in use" not in str(exc):
                    raise
            except BaseException:
                self.stop()
                raise
        self.startup_seconds = time.monotonic() - started
        atexit.register(self.stop)
        return self

    def _java_command(self, java: str, lib: Path, main_class: str, *args: str, tool: bool = False) -> list[str]:
        assert self.workdir is not None
        return [
            java,
            *(TOOL_JVM_FLAGS if tool else (*self.heap, *JVM_FLAGS)),
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{lib}{os.sep}*",
            main_class,
            *args,
        ]

    def _launch(self, java: str, lib: Path) -> None:
        assert self.workdir is not None
        config = self.workdir / "server.properties"
        _write_properties(config, self._server_properties())
        (self.workdir / "log4j2.properties").write_text(
            _LOG4J2.format(log=self.log_path, level=self.log_level), encoding="utf-8"
        )
        self.cluster_id = random_cluster_id()
        fmt = subprocess.run(
            self._java_command(
                java,
                lib,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                self.cluster_id,
                "-c",
                str(config),
                *self._format_arguments(),
                tool=True,
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if fmt.returncode != 0:
            raise KafkaServerError(f"kafka-storage format failed ({fmt.returncode}):\n{fmt.stdout}{fmt.stderr}")
        self._spawn(java, lib)

    def _server_properties(self) -> dict[str, str]:
        """The server.properties of this run (a hook: the secured broker in processor.brokers.secure extends it)."""
        assert self.workdir is not None
        return server_properties(
            self.port,
            self.controller_port,
            self.workdir / "data",
            auto_create_topics=self.auto_create_topics,
            extra=self.extra_properties,
        )

    def _format_arguments(self) -> list[str]:
        """Extra `kafka-storage format` arguments (a hook, e.g. `--add-scram` for the secured broker)."""
        return []

    def _probe(self) -> bool:
        """True when the broker answers a Metadata request listing a broker (a hook: the secured broker probes TLS).

        Raises OSError while it is not serving yet.
        """
        return bool(probe_brokers(HOST, self.port, timeout=2.0))

    def _spawn(self, java: str, lib: Path) -> None:
        assert self.workdir is not None
        config = self.workdir / "server.properties"
        with open(self.workdir / "java.out", "ab") as out:
            self._process = subprocess.Popen(
                self._java_command(java, lib, "kafka.Kafka", str(config)),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # Ctrl-C reaches us, and we stop Kafka in order
            )

    def _wait_ready(self) -> None:
        assert self._process is not None and self.workdir is not None
        deadline = time.monotonic() + self.startup_timeout
        last_error = "not contacted yet"
        while time.monotonic() < deadline:
            code = self._process.poll()
            if code is not None:
                raise KafkaServerError(f"Kafka exited with status {code} during start-up; {self._diagnostics()}")
            try:
                if self._probe():
                    return
                last_error = "Metadata listed no brokers"
            except OSError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        raise KafkaServerError(
            f"Kafka did not become ready on {self.bootstrap} within {self.startup_timeout:.0f}s "
            f"(last probe: {last_error}); {self._diagnostics()}"
        )

    def _diagnostics(self) -> str:
        """The first ERROR/FATAL lines of the server log, its tail and any JVM output (the temp dir goes away)."""
        assert self.workdir is not None
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            lines = []
        errors = [line for line in lines if "] ERROR " in line or "] FATAL " in line][:5]
        parts = []
        if errors:
            parts.append("first errors:\n" + "\n".join(errors))
        parts.append(f"log tail ({self.log_path}):\n{tail_file(self.log_path, 25)}")
        java_out = self.workdir / "java.out"
        if java_out.is_file() and java_out.stat().st_size:
            parts.append(f"JVM output:\n{tail_file(java_out, 20)}")
        return "\n".join(parts)

    def _restart(self, java: str, lib: Path) -> KafkaServer:
        """Start the JVM again on the data and ports of the previous run (see `stop(keep_data=True)`)."""
        if port_in_use(HOST, self.port):
            raise KafkaServerError(f"port {HOST}:{self.port} is already in use (another broker running?)")
        started = time.monotonic()
        try:
            self._spawn(java, lib)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        atexit.register(self.stop)
        return self

    def stop(self, *, keep_data: bool = False) -> None:
        """Stop Kafka (SIGTERM, then SIGKILL after stop_timeout) and remove the temp dir. Safe to call twice.

        With `keep_data`, the temp dir stays and the next `start()` runs the broker again on the same ports and
        data (a broker outage and its return); a later plain `stop()` removes it.
        """
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        terminate(process, self.stop_timeout)
        if keep_data:
            atexit.register(self.stop)
            return
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> KafkaServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m processor.brokers.kafka_server`: run a Kafka server in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m processor.brokers.kafka_server",
        description="Run a throwaway single-node Apache Kafka (KRaft) on 127.0.0.1 until Ctrl-C. "
        "Data lives in a temp dir removed on exit.",
    )
    parser.add_argument("--port", type=int, default=9092, help="client port (default: 9092; 0 = any free port)")
    parser.add_argument("--controller-port", type=int, default=0, help="KRaft controller port (default: any free)")
    parser.add_argument(
        "--auto-create-topics", action="store_true", help="enable auto.create.topics.enable (off by default)"
    )
    args = parser.parse_args(argv)
    server = KafkaServer(args.port or None, args.controller_port or None, auto_create_topics=args.auto_create_topics)
    try:
        return serve_forever(server, "Kafka")
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
