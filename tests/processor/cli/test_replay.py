"""`ccmeter replay` flags checked without a broker: `restate --broker` with the Kafka security options (they reach
the consumer it builds), and what `replay run` refuses from its arguments alone, before any broker call."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError

import replay.run
from processor.cli import build_parser, main
from processor.errors import RuntimeFailure
from replay import kafka
from tests.replay.support import MINUTE, T0, build_snapshot_of, event, plan

ACCOUNT = "acct-r"
SECRET = "restate-Pa55word"
SASL = ["--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "restater"]


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CCMETER_* variable of the machine running the tests."""
    for name in [name for name in os.environ if name.startswith("CCMETER_")]:
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lines = [plan("p1", T0), event("e1", T0 + MINUTE, user_id="u1"), event("e2", T0 + 30 * MINUTE, user_id="u3")]
    return build_snapshot_of(lines, tmp_path_factory.mktemp("replay-cli") / "usage.duckdb")


# -- restate --broker: the Kafka security options ----------------------------------------------------------------


def test_restate_takes_the_kafka_security_options() -> None:
    args = build_parser().parse_args(
        ["replay", "restate", "--snapshot", "s", "--account", "a", "--period", "current", "--broker", "h:1", *SASL]
    )
    assert (args.kafka_protocol, args.kafka_mechanism, args.kafka_username) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-512",
        "restater",
    )
    assert not hasattr(args, "kafka_password")  # a password only from a file or $CCMETER_SASL_PASSWORD


class RecordingConsumer:
    """Stands in for AIOKafkaConsumer: keeps its keyword arguments, then cannot connect."""

    made: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        RecordingConsumer.made.append(kwargs)

    async def start(self) -> None:
        raise KafkaConnectionError("Unable to bootstrap from [('127.0.0.1', 1)]")

    async def stop(self) -> None:
        return None


@pytest.mark.parametrize("by", ["flags", "variables"])
def test_restate_reads_the_dead_letter_topic_with_the_security_settings(
    by: str, snapshot: Path, env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    async def no_check(*_args: Any, **_kwargs: Any) -> None:  # no secured broker here to log in to
        return None

    env.setattr("processor.kafka_security.check_access", no_check)
    env.setattr(kafka, "AIOKafkaConsumer", RecordingConsumer)
    env.setenv("CCMETER_SASL_PASSWORD", SECRET)
    RecordingConsumer.made.clear()
    argv = ["replay", "restate", "--snapshot", str(snapshot), "--account", ACCOUNT, "--period", "2026-11"]
    argv += ["--out", str(tmp_path / "restated.json"), "--broker", "127.0.0.1:1", "--quiet"]
    if by == "flags":
        argv += SASL
    else:
        env.setenv("CCMETER_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
        env.setenv("CCMETER_SASL_MECHANISM", "SCRAM-SHA-512")
        env.setenv("CCMETER_SASL_USERNAME", "restater")
    assert main(argv) == 1  # the stand-in cannot connect: a runtime failure, one line
    err = capsys.readouterr().err
    assert err.startswith("ccmeter: error: cannot connect to Kafka at 127.0.0.1:1") and err.count("\n") == 1, err
    assert SECRET not in err
    assert len(RecordingConsumer.made) == 1
    kwargs = RecordingConsumer.made[0]
    assert kwargs["bootstrap_servers"] == "127.0.0.1:1"
    assert (kwargs["security_protocol"], kwargs["sasl_mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512")
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("restater", SECRET)


def test_restate_refuses_a_bad_security_setting_in_one_line(snapshot: Path, capsys) -> None:
    argv = ["replay", "restate", "--snapshot", str(snapshot), "--account", ACCOUNT, "--period", "2026-11"]
    assert main([*argv, "--broker", "127.0.0.1:1", "--security-protocol", "SASL_SSL"]) == 2
    expected = "--sasl-mechanism is missing: expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
    assert capsys.readouterr().err == f"ccmeter: error: {expected}\n"


# -- replay run: what its arguments alone decide -----------------------------------------------------------------


@pytest.fixture
def plans(env: pytest.MonkeyPatch) -> list[Any]:
    """Replaces the first broker call of `replay run` (make_plan): records its config, then fails as a broker
    would (exit 1). A run refused before it leaves the list empty."""
    seen: list[Any] = []

    async def make_plan(config: Any) -> Any:
        seen.append(config)
        raise RuntimeFailure("broker called")

    env.setattr(replay.run, "make_plan", make_plan)
    return seen


def run(*argv: str) -> int:
    return main(["replay", "run", "--broker", "127.0.0.1:1", "--into", "v2", "--state-dir", "sd", *argv])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--from", "beginning", "--from-snapshot", "{snapshot}"], "--from-snapshot goes with --from TS"),
        (["--from", "2026-11-02", "--from-snapshot", "/nonexistent/usage.duckdb"], "no such snapshot file"),
        (
            ["--from", "2026-11-02", "--from-snapshot", "{snapshot}", "--prefix", "staging."],
            "is a snapshot of ccmeter.events, not of staging.events",
        ),
        (["--from", "beginning", "--give-up-after", "soon"], "--give-up-after: 'soon' is not a duration"),
        (["--from", "beginning", "--give-up-after", "0s"], "--give-up-after: '0s' must be more than 0"),
        (["--from", "yesterday"], "--from must be a timestamp"),
    ],
)
def test_run_refuses_bad_arguments_before_any_broker_call(
    argv: list[str], message: str, snapshot: Path, plans: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(*[a.replace("{snapshot}", str(snapshot)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ccmeter: error: ") and message in err and err.count("\n") == 1, err
    assert plans == []


def test_run_with_a_snapshot_of_its_topic_goes_on_to_the_broker(snapshot: Path, plans: list[Any], capsys) -> None:
    assert run("--from", "2026-11-02T09:00:00Z", "--from-snapshot", str(snapshot)) == 1
    assert "broker called" in capsys.readouterr().err
    assert [c.snapshot for c in plans] == [snapshot]


def test_run_from_an_instant_without_a_snapshot_needs_the_broker_to_decide(plans: list[Any], capsys) -> None:
    """A group with committed offsets resumes and needs no state, so `--from TS` without `--from-snapshot` can only
    be refused once the group is known (replay.run.make_plan)."""
    assert run("--from", "2026-11-02T09:00:00Z") == 1
    assert "broker called" in capsys.readouterr().err and plans[0].snapshot is None


def test_run_give_up_after_and_its_old_spelling(plans: list[Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--from", "beginning") == 1
    assert plans.pop().timeout_s is None  # default: never
    assert run("--from", "beginning", "--give-up-after", "never") == 1
    assert plans.pop().timeout_s is None
    assert run("--from", "beginning", "--give-up-after", "2h") == 1
    assert plans.pop().timeout_s == 7200.0
    capsys.readouterr()
    assert run("--from", "beginning", "--timeout", "150") == 1
    assert plans.pop().timeout_s == 150.0
    assert "--timeout is deprecated, use --give-up-after" in capsys.readouterr().err


def test_run_give_up_after_has_no_variable(env: pytest.MonkeyPatch, plans: list[Any]) -> None:
    env.setenv("CCMETER_GIVE_UP_AFTER", "90s")  # the sink's or the deliverer's: not a bound on a rebuild
    assert run("--from", "beginning") == 1
    assert plans.pop().timeout_s is None
    env.setenv("CCMETER_TIMEOUT", "5s")  # one broker answer of `topics`
    assert run("--from", "beginning") == 1
    assert plans.pop().timeout_s is None
