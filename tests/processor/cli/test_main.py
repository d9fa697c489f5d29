"""`ccmeter` exits: --version, one line per error, status 1 for runtime failures and 2 for usage errors."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError

from processor import cli
from processor.brokers.common import free_port
from processor.errors import (
    CcmeterError,
    CliError,
    FencedError,
    InputError,
    OperationalError,
    RuntimeFailure,
    StateFormatError,
    UsageError,
    exit_code_of,
)

ROOT = Path(__file__).resolve().parents[3]


def run_ccmeter(*argv: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """The console command in a child process (all of its stderr: logging, warnings, tracebacks)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCMETER_")}
    env["PYTHONWARNINGS"] = "default"  # show ResourceWarnings (unclosed clients) if there are any
    return subprocess.run(
        [sys.executable, "-m", "processor.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("ccmeter ") and out.strip() == f"ccmeter {cli.version()}"


def test_the_error_types_and_their_exit_status() -> None:
    assert CliError is UsageError and OperationalError is RuntimeFailure
    assert issubclass(RuntimeFailure, CliError)  # handlers that only know CliError still catch it
    assert all(issubclass(t, CcmeterError) for t in (CliError, InputError, RuntimeFailure, StateFormatError))
    assert [exit_code_of(t("x")) for t in (CliError, InputError, RuntimeFailure, StateFormatError)] == [2, 2, 1, 1]
    assert exit_code_of(ValueError("x")) == 1
    assert FencedError("lost").line().startswith("ownership failed")


@pytest.mark.parametrize(
    ("raised", "status", "line"),
    [
        (CliError("--thing: bad"), 2, "ccmeter: error: --thing: bad"),
        (InputError("x.jsonl: expected an existing .jsonl file"), 2, "ccmeter: error: x.jsonl: expected"),
        (RuntimeFailure("topic t does not exist"), 1, "ccmeter: error: topic t does not exist"),
        (KafkaConnectionError("Unable to bootstrap from h:1"), 1, "ccmeter: error: KafkaConnectionError"),
        (OSError(28, "No space left on device"), 1, "ccmeter: error: OSError: [Errno 28] No space left"),
    ],
)
def test_errors_become_one_line_and_a_status(
    raised: Exception,
    status: int,
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "build_parser", lambda: parser_running(lambda: _raise(raised)))
    assert cli.main(["boom"]) == status
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_bug_still_shows_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "build_parser", lambda: parser_running(lambda: _raise(ZeroDivisionError("bug"))))
    with pytest.raises(ZeroDivisionError):
        cli.main(["boom"])


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["sink", "--data-dir", "x", "--flush-interval", "soon"])
    assert done.value.code == 2
    assert "--flush-interval" in capsys.readouterr().err
    assert cli.main(["publish", "no-such-file.jsonl"]) == 2
    assert capsys.readouterr().err == "ccmeter: error: no-such-file.jsonl: expected an existing .jsonl file\n"


def test_publish_without_a_broker_is_one_line_and_status_1(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"account_id": "a"}\n')
    broker = f"127.0.0.1:{free_port()}"
    done = run_ccmeter("publish", "--broker", broker, str(events))
    assert done.returncode == 1, done.stderr
    assert done.stderr == f"ccmeter: error: cannot publish to {broker}: broker not reachable\n", done.stderr


def test_topics_create_without_a_broker_is_one_line_and_status_1() -> None:
    broker = f"127.0.0.1:{free_port()}"
    done = run_ccmeter("topics", "create", "--broker", broker, "--timeout", "5s")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ccmeter: error: creating topics on {broker} failed"), lines


def test_topics_create_reads_the_broker_from_the_environment() -> None:
    broker = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCMETER_")}
    done = subprocess.run(
        [sys.executable, "-m", "processor.cli", "topics", "create", "--timeout", "5s"],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env={**env, "CCMETER_BROKER": broker, "CCMETER_PREFIX": "envtest."},
    )
    assert done.returncode == 1 and broker in done.stderr, done.stderr


def test_help_names_the_variables_and_the_exit_statuses() -> None:
    text = cli.build_parser().format_help()
    assert "$CCMETER_MAX_RECORD_BYTES" in text and "1/true/yes/on or 0/false/no/off" in text
    for status in ("0    success", "1    runtime failure: broker unreachable", "2    usage error", "130  interrupted"):
        assert status in text, text


def test_variables_reach_the_console_script_and_a_bad_one_exits_2() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCMETER_")}
    run = {"capture_output": True, "text": True, "timeout": 90, "cwd": ROOT}
    done = subprocess.run(  # the brief's unreachable broker, set only through variables: one line, status 1
        [sys.executable, "-m", "processor.cli", "topics", "list"],
        env={**env, "CCMETER_BROKER": "127.0.0.1:1", "CCMETER_TIMEOUT": "3s"},
        **run,
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "127.0.0.1:1" in done.stderr, done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "processor.cli", "topics", "list"], env={**env, "CCMETER_TIMEOUT": "soon"}, **run
    )
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.startswith("ccmeter: error: $CCMETER_TIMEOUT: invalid value 'soon' for --timeout: ")
    assert done.stderr.count("\n") == 1, done.stderr


@pytest.fixture
def no_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("CCMETER_")]:
        monkeypatch.delenv(name)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("ccmeter: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_snapshot_before_the_sink_wrote_its_data_is_a_runtime_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_variables: None
) -> None:
    data, out = str(tmp_path / "sink"), str(tmp_path / "usage.duckdb")
    assert cli.main(["snapshot", "--data-dir", data, "--out", out, "--quiet"]) == 1  # an earlier step's output
    assert "no sink data (run `ccmeter sink --data-dir" in one_line(capsys)
    assert cli.main(["snapshot", "--data-dir", data, "--out", out, "--keep", "0", "--quiet"]) == 2  # a bad flag
    assert "--keep must be at least 1" in one_line(capsys)
    assert cli.main(["replay", "carry", "--from", data, "--to", str(tmp_path / "v2")]) == 1
    assert "is not a sink data directory" in one_line(capsys)


def test_a_snapshot_locked_by_a_writer_is_a_runtime_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_variables: None
) -> None:
    locked = tmp_path / "locked.duckdb"
    holder = "import duckdb, sys\ncon = duckdb.connect(sys.argv[1])\nprint('ready', flush=True)\nsys.stdin.read()\n"
    writer = subprocess.Popen(
        [sys.executable, "-c", holder, str(locked)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        assert cli.main(["deadletters", "--snapshot", str(locked), "--account", "a"]) == 1  # wait, then retry
        assert "locked by another process" in one_line(capsys)
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait(timeout=60)
    assert cli.main(["deadletters", "--snapshot", str(locked), "--account", "a"]) == 2  # a file of something else
    assert "not a ccmeter snapshot" in one_line(capsys)


def test_a_missing_optional_package_is_a_runtime_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_variables: None
) -> None:
    monkeypatch.setitem(sys.modules, "rocksdict", None)  # `import rocksdict` raises ImportError
    argv = ["worker", "--store", "rocksdb://", "--web-insecure-no-auth", "--broker", "127.0.0.1:1"]
    assert cli.main(argv) == 1
    assert "--store rocksdb:// needs rocksdict" in one_line(capsys)
    with pytest.raises(SystemExit) as done:
        cli.main(["worker", "--store", "redis://"])
    assert done.value.code == 2 and "the store is memory:// or rocksdb://" in capsys.readouterr().err  # a bad value


def parser_running(action: Callable[[], object]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccmeter")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("boom").set_defaults(func=lambda _args: action())
    return parser


def _raise(exc: Exception) -> None:
    raise exc
