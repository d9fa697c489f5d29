"""`python -m replay.launch`, the worker of a rebuilt version: usage errors exit 2, broker and file failures 1, and
the Kafka security settings `replay run` passes on as variables reach its clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

from processor import kafka_security as ks
from processor.errors import RuntimeFailure
from replay import launch

SECRET = "launch-Pa55word"
V2 = ["--events-topic", "ccmeter.events", "--prefix", "ccmeter.v2.", "--app-id", "ccmeter-worker-v2"]


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CCMETER_* variable of the machine running the tests."""
    for name in [name for name in os.environ if name.startswith("CCMETER_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


def failing_with(exc: BaseException) -> Any:
    async def prepare(config: Any, events_topic: str) -> int:
        raise exc

    return prepare


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prefix", "ccmeter.v2."], "--events-topic is required"),
        (["--events-topic", "ccmeter.events", "--prefix", "ccmeter."], "--prefix must differ from the live prefix"),
        ([*V2, "CCMETER_BATCH_SIZE=0"], "$CCMETER_BATCH_SIZE: '0' must be at least 1"),
        ([*V2, "--security-protocol", "SASL_SSL"], "--sasl-mechanism is missing"),
        ([*V2, "--security-protocol", "SSL", "--ssl-cafile", "/nonexistent/ca.pem"], "/nonexistent/ca.pem"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, env, capsys: pytest.CaptureFixture[str]) -> None:
    env.setattr(launch, "prepare_output_topics", failing_with(AssertionError("a usage error reached the broker")))
    for assignment in [a for a in argv if a.startswith("CCMETER_")]:
        env.setenv(*assignment.split("=", 1))
    assert launch.main([a for a in argv if not a.startswith("CCMETER_")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("replay.launch: error: ") and message in err and err.count("\n") == 1, err


def test_a_bad_flag_is_argparse_s_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        launch.main([*V2, "--batch-size", "0"])
    assert done.value.code == 2 and "'0' must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeFailure("topic ccmeter.events does not exist on 127.0.0.1:1 (or has no partitions)"),
        KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]"),
        PermissionError(13, "Permission denied"),
        ks.KafkaAccessError("not authorized at 127.0.0.1:1 for topic(s) ccmeter.events"),
    ],
    ids=["topic-missing", "broker-down", "file", "refused"],
)
def test_broker_and_file_failures_exit_1(exc: BaseException, env, capsys: pytest.CaptureFixture[str]) -> None:
    env.setattr(launch, "prepare_output_topics", failing_with(exc))
    assert launch.main([*V2, "--broker", "127.0.0.1:1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("replay.launch: error: ") and err.count("\n") == 1, err


def test_an_unreachable_broker_exits_1_as_a_process() -> None:
    broker = closed_port()
    done = subprocess.run(
        [sys.executable, "-m", "replay.launch", *V2, "--broker", broker],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith("CCMETER_")},
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("replay.launch: error: cannot prepare topics on " + broker), done.stderr
    assert "Traceback" not in done.stderr


def test_the_security_variables_replay_run_passes_on_reach_the_clients(env, tmp_path) -> None:
    password = tmp_path / "password"
    password.write_text(SECRET + "\n")
    parent = ks.security_from_mapping(
        {"protocol": "SASL_PLAINTEXT", "mechanism": "SCRAM-SHA-256", "username": "v2", "password_file": str(password)},
        {},
    )
    with ks.use_security(parent):
        passed = ks.child_env({})  # what replay/supervise.py gives the worker process
    for name, value in passed.items():
        env.setenv(name, value)
    seen: dict[str, Any] = {}

    async def no_check(broker: str, security: ks.KafkaSecurity | None, timeout_s: float = 15.0) -> None:
        seen["checked"] = (broker, security)

    async def prepare(config: Any, events_topic: str) -> int:
        seen["kwargs"] = ks.client_kwargs()
        return 4

    def run_worker(config: Any, partitions: int) -> int:
        seen["worker"] = (ks.current_security(), partitions)
        return 0

    env.setattr(launch, "check_access", no_check)
    env.setattr(launch, "prepare_output_topics", prepare)
    env.setattr("processor.app.run_worker", run_worker)
    assert launch.main([*V2, "--broker", "kafka.example:9093"]) == 0
    kwargs = seen["kwargs"]
    assert (kwargs["security_protocol"], kwargs["sasl_mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("v2", SECRET)
    assert seen["checked"] == ("kafka.example:9093", seen["worker"][0])
    security, partitions = seen["worker"]
    assert (security.protocol, security.username, partitions) == ("SASL_PLAINTEXT", "v2", 4)
    assert ks.current_security().protocol == "PLAINTEXT"  # active only while the launcher runs


def test_the_launcher_takes_the_security_flags_too() -> None:
    args = launch.build_parser().parse_args([*V2, "--security-protocol", "SSL", "--ssl-no-check-hostname"])
    assert (args.kafka_protocol, args.kafka_check_hostname) == ("SSL", False)
