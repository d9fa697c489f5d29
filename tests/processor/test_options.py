"""The option rules of every `ccmeter` subcommand (processor/options.py), checked on the real parser tree."""

from __future__ import annotations

import argparse
import os
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.cli import build_parser
from processor.durations import parse_seconds, show_ms, show_seconds
from processor.errors import CliError
from processor.options import (
    EVERY_COMMAND,
    LOG_LEVELS,
    NO_VARIABLE,
    OUT_DIR,
    OWN_VARIABLE,
    QUIET_HELP,
    add_duration,
    add_quiet,
    app_id_of,
    broker_of,
    deprecated,
    duration,
    env_of,
    long_flag,
    no_variable_reason,
    prefix_of,
    source_of,
    value_kind,
    variable_name,
    variables_table,
)

UNIT = re.compile(r"\b\d+(?:\.\d+)?(?:ms|s|m|h|d)\b")
# A flag name's meaning is its dest and the kind of value it takes (`value_kind`). These names mean one thing with a
# documented variation in what they take: `--from`/`--to` bound what a command reads (local dates for reports,
# instants for replay, directories for carry).
SAME_MEANING = {
    "--from": {("from_date", "date"), ("from_ts", "instant"), ("source", "directory")},
    "--to": {("to_date", "date"), ("to_ts", "instant"), ("target", "directory")},
}
ROOT = Path(__file__).resolve().parents[2]


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
def test_every_option_has_a_variable_named_after_its_flag(command: str, action: argparse.Action) -> None:
    flag = long_flag(action)
    env = env_of(action)
    reason = no_variable_reason(command, flag)
    if reason is not None:
        assert env is None, f"{command} {flag} is in NO_VARIABLE ({reason}) but reads ${env}"
        return
    assert env == OWN_VARIABLE.get(flag, variable_name(flag)), f"{command} {flag}: variable {env}"
    assert f"${env}" in (action.help or ""), f"{command} {flag} reads ${env} but its help does not say so"


def test_every_option_without_a_variable_exists_and_says_why() -> None:
    flags = {(command, long_flag(action)) for command, action in OPTIONS}
    for (command, flag), reason in NO_VARIABLE.items():
        exists = any(f == flag for _, f in flags) if command == EVERY_COMMAND else (command, flag) in flags
        assert exists, f"NO_VARIABLE names {command} {flag}, which is not an option"
        assert len(reason) > 20
    assert variable_name("--max-record-bytes") == "CCMETER_MAX_RECORD_BYTES"


def test_the_help_shows_the_variable_next_to_the_default() -> None:
    text = " ".join(commands(build_parser())["topics create"].format_help().split())
    assert "replication factor of new topics ($CCMETER_REPLICATION; default: 1)" in text
    assert "($CCMETER_TIMEOUT; default 30s)" in text
    text = " ".join(commands(build_parser())["sink"].format_help().split())
    assert "($CCMETER_ONCE=1)" in text and "--data-dir" in text and "$CCMETER_DATA_DIR" not in text


def test_docs_list_every_variable() -> None:
    assert variables_table(build_parser()) in (ROOT / "docs" / "running.md").read_text()


def meaning_conflicts(options: list[tuple[str, argparse.Action]]) -> dict[str, dict[tuple[str, str], list[str]]]:
    """Flags with more than one meaning, (dest, kind of value) -> the commands, beyond `SAME_MEANING`."""
    meanings: dict[str, dict[tuple[str, str], list[str]]] = defaultdict(lambda: defaultdict(list))
    for command, action in options:
        for flag in action.option_strings:
            meanings[flag][(action.dest, value_kind(action))].append(command)
    return {
        flag: dict(found)
        for flag, found in meanings.items()
        if len(found) > 1 and not set(found) <= SAME_MEANING.get(flag, set())
    }


def test_a_flag_name_has_one_meaning_in_every_command() -> None:
    conflicts = meaning_conflicts(OPTIONS)
    assert not conflicts, f"flags with more than one meaning ((dest, kind): commands): {conflicts}"


def test_the_meaning_check_sees_the_same_dest_taking_another_kind_of_value() -> None:
    """What the check must catch: the names that meant two things before issue 14 (same dest, other values)."""
    root = argparse.ArgumentParser()
    commands = root.add_subparsers()
    simulate, deliver, tokens = (commands.add_parser(name) for name in ("simulate", "deliver", "tokens"))
    simulate.add_argument("--start", metavar="YYYY-MM-DD", help="first local day")
    simulate.add_argument("--accounts", type=int, metavar="N", help="number of accounts")
    deliver.add_argument("--start", choices=("earliest", "latest"), help="where a new group starts")
    tokens.add_argument("--accounts", metavar="A,B", help="account ids")
    for parser in (simulate, deliver):
        add_duration(parser, "--give-up-after", default=None, help="exit 1 after 30s")
    found = meaning_conflicts(list(walk(root)))
    assert found == {
        "--start": {("start", "date"): ["simulate"], ("start", "choice"): ["deliver"]},
        "--accounts": {("accounts", "number"): ["simulate"], ("accounts", "list"): ["tokens"]},
    }


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [
        ({"action": "store_true"}, "switch"),
        ({"choices": ("a", "b")}, "choice"),
        ({"type": duration}, "duration"),
        ({"metavar": "DURATION"}, "duration"),
        ({"type": int}, "number"),
        ({"metavar": "PORT"}, "number"),
        ({"metavar": "YYYY-MM-DD"}, "date"),
        ({"metavar": "TS"}, "instant"),
        ({"metavar": "A,B"}, "list"),
        ({"metavar": "DIR"}, "directory"),
        ({"metavar": "FILE.parquet"}, "file"),
        ({"metavar": "PREFIX"}, "text"),
        ({}, "text"),
    ],
)
def test_value_kinds(kwargs: dict[str, object], kind: str) -> None:
    action = argparse.ArgumentParser().add_argument("--x", **kwargs)  # type: ignore[arg-type]
    assert value_kind(action) == kind


def test_quiet_means_one_thing() -> None:
    helps = {action.help for _, action in OPTIONS if "--quiet" in action.option_strings}
    assert helps == {f"{QUIET_HELP} ($CCMETER_QUIET=1)"}


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
        (["alerts", "deliver", "--webhook", "https://h/x", "--start", "latest"], "from_position", "latest"),
        (["tokens", "new", "--accounts", "acct-1,acct-2"], "account_ids", ["acct-1", "acct-2"]),
        (["replay", "run", "--from", "beginning", "--into", "v2", "--timeout", "30m"], "give_up_after", "30m"),
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
    with pytest.raises(CliError, match=r"^\$CCMETER_PREFIX: topic prefix 'bad prefix'"):
        prefix_of(build_parser().parse_args(["publish", "x.jsonl"]))


@pytest.mark.parametrize(
    ("argv", "variable", "named"),
    [
        (["publish", "x.jsonl"], "bad prefix", "$CCMETER_PREFIX"),  # the parser read the variable
        (["publish", "x.jsonl", "--prefix", "bad flag"], "ok.", "--prefix"),
        (["publish", "x.jsonl", "--prefix", "bad flag"], "bad prefix", "--prefix"),  # the flag beats the variable
        (["replay", "plan", "--from", "beginning"], "bad prefix", "$CCMETER_PREFIX"),
        (["replay", "restate", "--snapshot", "s", "--account", "a", "--period", "current", "--prefix", "b!"], "x",
         "--prefix"),  # no variable here: the flag only
    ],
)  # fmt: skip
def test_a_bad_prefix_names_where_it_came_from(env: pytest.MonkeyPatch, argv: list[str], variable: str, named: str):
    env.setenv("CCMETER_PREFIX", variable)
    with pytest.raises(CliError) as caught:
        prefix_of(parse(*argv))
    assert str(caught.value).startswith(f"{named}: topic prefix "), caught.value
    assert "\n" not in str(caught.value)


def test_prefix_of_a_plain_namespace_reads_the_environment_it_is_given() -> None:
    with pytest.raises(CliError, match=r"^\$CCMETER_PREFIX: "):
        prefix_of(argparse.Namespace(prefix=None), {"CCMETER_PREFIX": "a b"})
    with pytest.raises(CliError, match=r"^--prefix: "):
        prefix_of(argparse.Namespace(prefix="a b"), {"CCMETER_PREFIX": "ok."})
    assert prefix_of(argparse.Namespace(), {}) == "ccmeter."


def test_the_parser_records_which_options_came_from_variables(env: pytest.MonkeyPatch) -> None:
    env.setenv("CCMETER_PARTITIONS", "12")
    args = parse("topics", "create", "--timeout", "5s")
    assert source_of(args, "partitions", "--partitions") == "$CCMETER_PARTITIONS"
    assert source_of(args, "timeout", "--timeout") == "--timeout"  # given as a flag
    assert source_of(args, "prefix", "--prefix") == "--prefix"  # the default
    assert source_of(argparse.Namespace(), "prefix", "--prefix") == "--prefix"


def test_default_output_paths_are_under_the_ignored_directory() -> None:
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


# -- CCMETER_* variables, read by the parser (processor/options.py EnvParser) ------------------------------------


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The environment without any CCMETER_* variable of the machine running the tests."""
    for name in [name for name in os.environ if name.startswith("CCMETER_")]:
        monkeypatch.delenv(name)
    return monkeypatch


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_a_variable_sets_an_option_and_the_flag_beats_it(env: pytest.MonkeyPatch) -> None:
    assert (parse("topics", "create").partitions, parse("topics", "create").timeout) == (4, 30.0)  # the defaults
    env.setenv("CCMETER_PARTITIONS", "12")
    env.setenv("CCMETER_TIMEOUT", "2m")
    args = parse("topics", "create")
    assert (args.partitions, args.timeout) == (12, 120.0)  # converted by the option's type
    args = parse("topics", "create", "--partitions", "3", "--timeout", "5s")
    assert (args.partitions, args.timeout) == (3, 5.0)
    env.setenv("CCMETER_BATCH_SIZE", "700")  # a worker option: the parser reads it, WorkerConfig gets it
    assert parse("worker").batch_size == 700 and parse("worker", "--batch-size", "9").batch_size == 9


def test_a_renamed_flag_also_beats_the_variable(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("CCMETER_FLUSH_INTERVAL", "2m")
    assert parse("sink", "--data-dir", "d").flush_interval == 120.0
    assert parse("sink", "--data-dir", "d", "--flush-seconds", "3").flush_interval == 3.0
    assert "deprecated" in capsys.readouterr().err


def test_the_existing_variables_keep_their_names(env: pytest.MonkeyPatch) -> None:
    env.setenv("CCMETER_BROKER", "kafka.example:9093")
    env.setenv("CCMETER_PREFIX", "staging.")
    env.setenv("CCMETER_APP_ID", "billing")
    env.setenv("CCMETER_SSL_CAFILE", "/etc/ca.pem")
    args = parse("replay", "plan", "--from", "beginning")
    assert (args.broker, args.prefix, args.app_id) == ("kafka.example:9093", "staging.", "billing")
    assert args.kafka_cafile == "/etc/ca.pem"
    assert (broker_of(args), prefix_of(args), app_id_of(args)) == ("kafka.example:9093", "staging.", "billing")


def test_a_bad_variable_is_one_line_naming_it_and_exit_2(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from processor import cli

    cases = [
        ("CCMETER_TIMEOUT", "soon", ["topics", "create"], "invalid value 'soon' for --timeout: "),
        ("CCMETER_PARTITIONS", "many", ["topics", "create"], "invalid int value 'many' for --partitions"),
        ("CCMETER_FORMAT", "xml", ["deadletters", "--snapshot", "s", "--account", "a"], "choose from json, csv"),
        ("CCMETER_LOG_LEVEL", "verbose", ["worker"], "invalid value 'verbose' for --log-level"),
    ]
    for name, value, argv, reason in cases:
        env.setenv(name, value)
        with pytest.raises(SystemExit) as done:
            cli.main(argv)
        env.delenv(name)
        err = capsys.readouterr().err
        assert done.value.code == 2, (name, err)
        assert err.startswith(f"ccmeter: error: ${name}: ") and reason in err and err.count("\n") == 1, err
    env.setenv("CCMETER_TIMEOUT", "soon")
    assert parse("topics", "list", "--timeout", "1s").timeout == 1.0  # a flag given: its bad variable is not read


def test_a_switch_reads_yes_and_no_words(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for word, quiet in [("1", True), ("yes", True), ("ON", True), ("true", True), ("0", False), ("off", False)]:
        env.setenv("CCMETER_QUIET", word)
        assert parse("snapshot", "--data-dir", "d", "--out", "o").quiet is quiet, word
    env.setenv("CCMETER_ONCE", "no")
    assert parse("sink", "--data-dir", "d", "--once").once is True  # the flag wins over a variable saying off
    env.setenv("CCMETER_QUIET", "maybe")
    with pytest.raises(SystemExit) as done:
        parse("snapshot", "--data-dir", "d", "--out", "o")
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.startswith("ccmeter: error: $CCMETER_QUIET: 'maybe' is not a yes/no value")


def test_an_empty_variable_is_unset(env: pytest.MonkeyPatch) -> None:
    env.setenv("CCMETER_PARTITIONS", "")
    assert parse("topics", "create").partitions == 4


def test_a_variable_stands_in_for_a_required_flag(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("deadletters", "--account", "a")
    assert "--snapshot" in capsys.readouterr().err
    env.setenv("CCMETER_SNAPSHOT", "usage.duckdb")
    assert parse("deadletters", "--account", "a").snapshot == "usage.duckdb"
    assert parse("report", "--all").snapshot == "usage.duckdb"  # a required group: (--events | --snapshot)


def test_a_flag_of_an_exclusive_group_beats_the_other_members_variables(
    env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    env.setenv("CCMETER_SNAPSHOT", "usage.duckdb")
    args = parse("report", "--all", "--events", "events.jsonl")
    assert (args.events, args.snapshot) == ("events.jsonl", None)
    env.setenv("CCMETER_EVENTS", "events.jsonl")
    with pytest.raises(SystemExit) as done:
        parse("report", "--all")
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1
    assert "$CCMETER_EVENTS and $CCMETER_SNAPSHOT are set together" in err, err
    assert parse("report", "--all", "--snapshot", "x.duckdb").snapshot == "x.duckdb"


def test_options_without_a_variable_ignore_it(env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    env.setenv("CCMETER_OUT", "usage.duckdb")
    env.setenv("CCMETER_YES", "1")
    env.setenv("CCMETER_APP_ID", "ccmeter-worker")
    env.setenv("CCMETER_STATE_DIR", "live-state")
    assert parse("report", "--snapshot", "s", "--all").out is None  # never the snapshot's own file
    assert parse("replay", "run", "--from", "beginning", "--into", "v2").app_id is None  # the live id + "-v2"
    assert parse("replay", "run", "--from", "beginning", "--into", "v2").state_dir is None
    env.setenv("CCMETER_PREFIX", "ccmeter.")
    assert parse("topics", "delete", "--prefix", "old.").yes is False
    with pytest.raises(SystemExit):
        parse("topics", "delete")  # what is deleted is named on the command line
    assert "--prefix" in capsys.readouterr().err
