"""`ccmeter alerts deliver` flags: defaults, usage errors as one line with status 2, no secret in help or errors."""

from __future__ import annotations

import argparse

import pytest

from processor.alerts.webhook import SECRET_ENV, default_group
from processor.cli import build_parser, main
from processor.cli.alerts import build_config

URL = "https://user:pw@hooks.example.com/cc?token=t0k"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["alerts", "deliver", "--webhook", URL, *argv])


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "env-secret")
    monkeypatch.delenv("CCMETER_BROKER", raising=False)
    monkeypatch.setenv("CCMETER_PREFIX", "staging.")
    config = build_config(parse())
    assert (config.broker, config.prefix, config.group) == ("127.0.0.1:9092", "staging.", default_group(URL))
    assert (config.secret, config.timeout, config.give_up_seconds) == (b"env-secret", 10.0, None)
    assert config.start == "earliest"
    assert (config.policy.first, config.policy.cap) == (0.5, 30.0)
    assert "env-secret" not in repr(config)
    once = build_config(parse("--once", "--group", "g", "--retry-max", "2m", "--give-up-after", "never"))
    assert (once.group, once.policy.cap, once.give_up_seconds) == ("g", 120.0, None)
    assert build_config(parse("--once")).give_up_seconds == 60.0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--webhook", "ftp://u:pw@host/x"], "--webhook must be an http:// or https:// URL"),
        (["--post-timeout", "soon"], "--post-timeout: 'soon' is not a duration"),
        (["--retry-max", "0s"], "--retry-max: '0s' must be more than 0"),
        (["--retry-first", "1m", "--retry-max", "30s"], "--retry-first (1m) is longer than --retry-max (30s)"),
        (["--prefix", "bad prefix"], "topic prefix 'bad prefix'"),
        (["--secret-file", "/nonexistent/secret"], "--secret-file /nonexistent/secret: No such file"),
    ],
)
def test_usage_errors_are_one_line_with_status_2(
    argv: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(SECRET_ENV, "env-secret")
    assert main(["alerts", "deliver", "--webhook", URL, *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert "env-secret" not in err and "pw" not in err


def test_help_shows_no_secret(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(SECRET_ENV, "env-secret")
    with pytest.raises(SystemExit) as done:
        main(["alerts", "deliver", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "Idempotency-Key" in out and "X-Ccmeter-Signature" in out and "env-secret" not in out
    assert main(["alerts"]) == 2  # the group alone: its help on standard error


def test_no_secret_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert main(["alerts", "deliver", "--webhook", "http://127.0.0.1:1/"]) == 2
    assert "no signing secret: give --secret-file FILE or set $CCMETER_WEBHOOK_SECRET" in capsys.readouterr().err


def test_from_position_its_variable_and_the_old_spellings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(SECRET_ENV, "env-secret")
    for name in ("CCMETER_FROM_POSITION", "CCMETER_START"):
        monkeypatch.delenv(name, raising=False)
    assert build_config(parse("--from-position", "latest")).start == "latest"
    assert build_config(parse("--start", "latest")).start == "latest"
    assert "--start is deprecated, use --from-position" in capsys.readouterr().err
    monkeypatch.setenv("CCMETER_FROM_POSITION", "latest")
    assert build_config(parse()).start == "latest"
    assert build_config(parse("--from-position", "earliest")).start == "earliest"  # the flag beats the variable
    monkeypatch.delenv("CCMETER_FROM_POSITION")
    monkeypatch.setenv("CCMETER_START", "2026-11-01")  # `simulate --start`: its first day, not a position
    assert build_config(parse()).start == "earliest"
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("CCMETER_START", "latest")  # what deployments set while the flag was --start
    assert build_config(parse()).start == "latest"
    assert "$CCMETER_START is deprecated for `alerts deliver`, use $CCMETER_FROM_POSITION" in capsys.readouterr().err
    monkeypatch.setenv("CCMETER_FROM_POSITION", "earliest")
    assert build_config(parse()).start == "earliest"  # the new variable beats the old one
    assert capsys.readouterr().err == ""


def test_a_bad_from_position_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        parse("--from-position", "newest")
    assert done.value.code == 2 and "invalid choice: 'newest'" in capsys.readouterr().err
