"""The option rules of every `ccmeter` subcommand (processor/options.py), checked on the real parser tree."""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from collections.abc import Iterator

import pytest

from processor.cli import build_parser
from processor.durations import parse_seconds, show_ms, show_seconds
from processor.errors import CliError
from processor.options import (
    LOG_LEVELS,
    OUT_DIR,
    QUIET_HELP,
    add_duration,
    add_quiet,
    broker_of,
    deprecated,
    duration,
    env_of,
    prefix_of,
)

UNIT = re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|m|h|d)\b")
# A flag name's meaning is its dest. These names mean one thing with a documented variation in what they take:
# `--from`/`--to` bound what a command reads (local dates for reports, instants for replay, directories for carry).
SAME_MEANING = {
    "--from": {"from_date", "from_ts", "source"},
    "--to": {"to_date", "to_ts", "target"},
}
# --broker/--prefix that do not fall back to $CCMETER_BROKER/$CCMETER_PREFIX, and why.
NO_ENV = {
    ("replay restate", "--broker"): "opt-in: only given, it also reads the dead-letter topic",
    ("replay restate", "--prefix"): "defaults to the snapshot's prefix",
    ("topics delete", "--prefix"): "what is deleted is always named on the command line",
}


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, argparse.Action]]:
    """(command path, option) of every visible option of every subcommand, recursively."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))
        elif action.option_strings and not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            if action.help != argparse.SUPPRESS:
                yield " ".join(path), action


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command parser by its path."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in commands(sub).items()})
    return found


OPTIONS = list(walk(build_parser()))
IDS = [f"{command} {action.option_strings[0]}" for command, action in OPTIONS]


def is_duration(action: argparse.Action) -> bool:
    return action.metavar == "DURATION" or action.type is duration


def test_the_walk_sees_every_command() -> None:
    seen = {command for command, _ in OPTIONS}
    for expected in ("worker", "publish", "sink", "topics create", "alerts deliver", "replay run", "simulate"):
        assert expected in seen, sorted(seen)
    assert len(OPTIONS) > 200


@pytest.mark.parametrize(("command", "action"), OPTIONS, ids=IDS)
def test_every_option_has_help(command: str, action: argparse.Action) -> None:
    assert action.help and len(action.help.strip()) > 5, f"{command} {action.option_strings} has no help"


@pytest.mark.parametrize(("command", "action"), OPTIONS, ids=IDS)
def test_durations_show_a_unit_and_no_option_takes_bare_seconds(command: str, action: argparse.Action) -> None:
    flag = action.option_strings[0]
    assert action.metavar != "SECONDS" and not flag.endswith("-seconds"), f"{command} {flag}: use a DURATION"
    if is_duration(action):
        assert UNIT.search(action.help or ""), f"{command} {flag}: the help shows no duration with a unit"


@pytest.mark.parametrize(("command", "action"), OPTIONS, ids=IDS)
def test_an_option_with_a_variable_names_it(command: str, action: argparse.Action) -> None:
    flag = action.option_strings[0]
    env = env_of(action)
    if flag in ("--broker", "--prefix") and (command, flag) not in NO_ENV:
        env = env or f"CCMETER_{flag[2:].upper()}"
    if env is not None:
        assert f"${env}" in (action.help or ""), f"{command} {flag} reads ${env} but its help does not say so"
    for named in re.findall(r"\$(CCMETER_[A-Z_]+)", action.help or ""):
        assert named.isupper()


def test_a_flag_name_has_one_meaning_in_every_command() -> None:
    meanings: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for command, action in OPTIONS:
        for flag in action.option_strings:
            meanings[flag][action.dest].append(command)
    conflicts = {
        flag: dict(dests)
        for flag, dests in meanings.items()
        if len(dests) > 1 and not set(dests) <= SAME_MEANING.get(flag, set())
    }
    assert not conflicts, f"flags with more than one meaning (dest: commands): {conflicts}"


def test_quiet_means_one_thing() -> None:
    helps = {action.help for _, action in OPTIONS if "--quiet" in action.option_strings}
    assert helps == {QUIET_HELP}


@pytest.mark.parametrize(("command", "action"), OPTIONS, ids=IDS)
def test_choices_are_validated(command: str, action: argparse.Action) -> None:
    if action.choices is not None:
        assert action.default is None or action.default in action.choices, (command, action.option_strings)
    if "LEVEL" == action.metavar or action.dest == "log_level":
        assert tuple(action.choices or ()) == LOG_LEVELS, f"{command} {action.option_strings}: unvalidated level"


def test_log_level_rejects_an_unknown_level(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["worker", "--log-level", "DEBUG"]).log_level == "debug"
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["worker", "--log-level", "verbose"])
    assert done.value.code == 2
    assert "verbose" in capsys.readouterr().err


def test_worker_help_shows_durations_with_units() -> None:
    text = commands(build_parser())["worker"].format_help()
    flat = " ".join(text.split())
    for shown in ("default 200ms", "default 30s", "default 3m", "default 2h", "default 5m"):
        assert shown in flat, flat
    assert "default 30000" not in flat and "default 200)" not in flat


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("3m", 180.0), ("2h", 7200.0), ("1d", 86400.0), ("45", 45.0), ("1.5", 1.5)],
)
def test_one_duration_rule_bare_numbers_are_seconds(text: str, seconds: float) -> None:
    assert parse_seconds(text) == seconds
    assert duration(text) == seconds


def test_bad_durations_say_how_to_write_one() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="examples: 500ms, 30s"):
        duration("soon")
    with pytest.raises(argparse.ArgumentTypeError, match="bare number is seconds"):
        duration("-3s")


@pytest.mark.parametrize(
    ("ms", "shown"), [(0, "0s"), (200, "200ms"), (30_000, "30s"), (180_000, "3m"), (7_200_000, "2h")]
)
def test_durations_are_shown_with_units(ms: int, shown: str) -> None:
    assert show_ms(ms) == shown
    assert show_seconds(ms / 1000) == shown


def test_a_renamed_flag_still_works_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    new = add_duration(parser, "--flush-interval", default="30s", help="commit at least this often")
    deprecated(parser, "--flush-seconds", new)
    add_quiet(parser)
    assert parser.parse_args([]).flush_interval == 30.0
    assert capsys.readouterr().err == ""
    assert parser.parse_args(["--flush-seconds", "0.5"]).flush_interval == 0.5
    assert "--flush-seconds is deprecated, use --flush-interval" in capsys.readouterr().err
    assert "--flush-seconds" not in parser.format_help()


@pytest.mark.parametrize(
    ("argv", "dest", "value"),
    [
        (["worker", "--data-dir", "d"], "state_dir", "d"),
        (["replay", "plan", "--from", "beginning", "--group", "g"], "app_id", "g"),
        (["replay", "run", "--from", "beginning", "--into", "v2", "--data-dir", "d"], "state_dir", "d"),
        (["sink", "--data-dir", "x", "--flush-seconds", "2"], "flush_interval", 2.0),
        (["sink", "--data-dir", "x", "--compact-seconds", "0"], "compact_interval", 0.0),
        (["alerts", "deliver", "--webhook", "https://h/x", "--timeout", "3s"], "post_timeout", "3s"),
        (["simulate", "--out", "x.jsonl", "--heartbeat-seconds", "30"], "desktop_heartbeat", 30.0),
    ],
)
def test_old_spellings_of_renamed_flags(argv: list[str], dest: str, value: object, capsys) -> None:
    assert getattr(build_parser().parse_args(argv), dest) == value
    assert "is deprecated, use --" in capsys.readouterr().err


def test_every_broker_and_prefix_honours_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CCMETER_BROKER", "kafka.example:9093")
    monkeypatch.setenv("CCMETER_PREFIX", "staging.")
    args = build_parser().parse_args(["topics", "create"])
    assert (broker_of(args), prefix_of(args)) == ("kafka.example:9093", "staging.")
    args = build_parser().parse_args(["topics", "create", "--broker", "h:1", "--prefix", "p."])
    assert (broker_of(args), prefix_of(args)) == ("h:1", "p.")
    monkeypatch.setenv("CCMETER_PREFIX", "bad prefix")
    with pytest.raises(CliError, match="--prefix"):
        prefix_of(build_parser().parse_args(["publish", "x.jsonl"]))


def test_default_output_paths_are_under_the_ignored_directory() -> None:
    from pathlib import Path

    from processor.worker.config import WorkerConfig

    assert WorkerConfig().state_dir.startswith(f"{OUT_DIR}/")
    ignored = (Path(__file__).resolve().parents[2] / ".gitignore").read_text().splitlines()
    assert f"{OUT_DIR}/" in ignored


@pytest.mark.parametrize("command", sorted(commands(build_parser())))
def test_every_command_help_renders(command: str) -> None:
    text = commands(build_parser())[command].format_help()
    assert text.startswith("usage: ") and len(text) > 50


def test_the_old_variable_of_a_renamed_worker_option_still_works(capsys: pytest.CaptureFixture[str]) -> None:
    from processor.worker.config import WorkerConfig

    assert WorkerConfig.from_mapping({}, {"CCMETER_DATA_DIR": "old"}).state_dir == "old"
    assert "$CCMETER_DATA_DIR is deprecated, use $CCMETER_STATE_DIR" in capsys.readouterr().err
    both = {"CCMETER_DATA_DIR": "old", "CCMETER_STATE_DIR": "new"}
    assert WorkerConfig.from_mapping({}, both).state_dir == "new"
    assert capsys.readouterr().err == ""
