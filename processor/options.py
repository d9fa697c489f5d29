"""Options shared by the `ccmeter` commands: one meaning per flag name, each with its `CCMETER_*` variable.

The rules (tests/processor/test_options.py checks them on every subcommand's parser):
- every option has help text, and the help names the option's `CCMETER_*` variable;
- a duration carries a unit (`500ms`, `30s`, `3m`, `2h`, `1d`; a bare number is seconds) and its help shows one;
- a flag name means one thing in every command: the same dest and the same kind of value (`value_kind`: a date is
  not a choice, a count not a list); a renamed flag stays as a hidden alias that warns once used;
- values from a fixed set are argparse `choices`;
- every option has a `CCMETER_*` variable named after its flag (`--max-record-bytes` -> `CCMETER_MAX_RECORD_BYTES`),
  given to it by `add_variables` and read by `EnvParser` when the flag is absent, except those in `NO_VARIABLE`
  (each with its reason) and `--ssl-no-check-hostname`, whose command reads `$CCMETER_SSL_CHECK_HOSTNAME`.
Precedence everywhere: the flag, then the variable, then the default.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from processor.durations import parse_seconds, show_seconds
from processor.errors import EXIT_USAGE, CliError

DEFAULT_BROKER = "127.0.0.1:9092"
DEFAULT_PREFIX = "ccmeter."
DEFAULT_APP_ID = "ccmeter-worker"
LOG_LEVELS = ("debug", "info", "warning", "error")
OUT_DIR = "ccmeter-out"  # every default output path lives here (ignored by git, removed by `make clean`)
QUIET_HELP = "print only warnings, errors and the result: no progress bars or per-item lines"


def out_path(*parts: str) -> str:
    """A default output path under `OUT_DIR` (relative to the working directory)."""
    return str(Path(OUT_DIR, *parts))


def env_note(env: str, default: str | None = None) -> str:
    """The `($CCMETER_X; default D)` suffix of an option's help."""
    return f"(${env}" + ("" if default is None else f"; default {default}") + ")"


def duration(text: str) -> float:
    """argparse type of a duration option: seconds (float) of `500ms`, `30s`, `3m`, `2h`, `1d` or bare seconds."""
    try:
        return parse_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


duration.__name__ = "duration"

DEFAULT_MEMORY_LIMIT = "1GB"  # of each DuckDB database a command holds (`--memory-limit`)
_SIZE = re.compile(r"[0-9]+(?:[.][0-9]+)?(?:KB|MB|GB|TB|KiB|MiB|GiB|TiB)")


def memory_size(text: str) -> str:
    """argparse type of a memory size as DuckDB reads it: a number and a unit, e.g. `512MB`, `2GB`, `1.5GiB`."""
    value = text.strip().replace(" ", "")
    if not _SIZE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size: write a number and a unit, e.g. 512MB or 2GB")
    return value


memory_size.__name__ = "memory size"


def _mark(action: argparse.Action, env: str | None) -> argparse.Action:
    action.ccmeter_env = env  # type: ignore[attr-defined]  # read by `env_of` and the option rules test
    return action


def env_of(action: argparse.Action) -> str | None:
    """The `CCMETER_*` variable an option added here reads, if any."""
    return getattr(action, "ccmeter_env", None)


def add_broker(parser: argparse.ArgumentParser, what: str = "Kafka bootstrap servers") -> argparse.Action:
    """`--broker HOST:PORT[,...]`, from `$CCMETER_BROKER` when not given (read it with `broker_of`)."""
    action = parser.add_argument(
        "--broker", default=None, metavar="HOST:PORT", help=f"{what} {env_note('CCMETER_BROKER', DEFAULT_BROKER)}"
    )
    return _mark(action, "CCMETER_BROKER")


def add_prefix(parser: argparse.ArgumentParser, what: str = "topic name prefix") -> argparse.Action:
    """`--prefix PREFIX`, from `$CCMETER_PREFIX` when not given (read it with `prefix_of`)."""
    action = parser.add_argument(
        "--prefix", default=None, metavar="PREFIX", help=f"{what} {env_note('CCMETER_PREFIX', DEFAULT_PREFIX)}"
    )
    return _mark(action, "CCMETER_PREFIX")


def add_quiet(parser: argparse.ArgumentParser) -> argparse.Action:
    """`--quiet`: one meaning in every command."""
    return parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def add_duration(
    parser: argparse.ArgumentParser,
    flag: str,
    *,
    default: str | None,
    help: str,
    dest: str | None = None,
) -> argparse.Action:
    """A duration option in seconds (float); `default` is a text with its unit (`"30s"`), shown in the help."""
    shown = "" if default is None else f" (default {default})"
    kwargs: dict[str, Any] = {"dest": dest} if dest else {}
    return parser.add_argument(
        flag,
        type=duration,
        default=None if default is None else parse_seconds(default),
        metavar="DURATION",
        help=help + shown,
        **kwargs,
    )


class _DeprecatedAlias(argparse.Action):
    """A renamed flag's old spelling: warns on stderr, then does what the new flag does."""

    def __init__(self, option_strings: Sequence[str], dest: str, new: argparse.Action, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: str | None = None):
        new_flag = self.new.option_strings[0]
        print(f"ccmeter: warning: {option_string} is deprecated, use {new_flag}", file=sys.stderr)
        self.new(parser, namespace, values, new_flag)


def deprecated(parser: argparse.ArgumentParser, old: str, new: argparse.Action) -> argparse.Action:
    """Keep `old` working as a hidden alias of the option `new` (same value, a warning when used)."""
    takes_value = new.nargs != 0
    return parser.add_argument(
        old,
        dest=new.dest,
        action=_DeprecatedAlias,
        new=new,
        nargs=new.nargs if takes_value else 0,
        type=new.type if takes_value else None,
        metavar=new.metavar,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )


FROM_VARIABLES = "ccmeter_from_variables"  # a parsed namespace's {dest: variable} of the options read from variables


def source_of(args: argparse.Namespace, dest: str, flag: str) -> str:
    """Where the value of option `dest` came from, for an error message: `$CCMETER_X` when an `EnvParser` read it
    from that variable, else `flag`."""
    variable = getattr(args, FROM_VARIABLES, {}).get(dest)
    return f"${variable}" if variable else flag


def broker_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """The bootstrap servers of a command: `--broker`, `$CCMETER_BROKER`, the default."""
    env = os.environ if env is None else env
    return getattr(args, "broker", None) or env.get("CCMETER_BROKER") or DEFAULT_BROKER


def prefix_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """The topic prefix of a command: `--prefix`, `$CCMETER_PREFIX`, the default; checked (a CliError naming the flag
    or, when the value came from it, the variable)."""
    from processor.topics import validate_prefix

    env = os.environ if env is None else env
    given = getattr(args, "prefix", None)
    if given:
        text, source = given, source_of(args, "prefix", "--prefix")
    elif env.get("CCMETER_PREFIX"):
        text, source = env["CCMETER_PREFIX"], "$CCMETER_PREFIX"
    else:
        text, source = DEFAULT_PREFIX, "--prefix"
    try:
        return validate_prefix(text)
    except ValueError as exc:
        raise CliError(f"{source}: {exc}") from None


def app_id_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """The worker's app id (its consumer group): `--app-id`, `$CCMETER_APP_ID`, the default."""
    env = os.environ if env is None else env
    return getattr(args, "app_id", None) or env.get("CCMETER_APP_ID") or DEFAULT_APP_ID


def add_app_id(parser: argparse.ArgumentParser, what: str) -> argparse.Action:
    """`--app-id ID` (the worker's app id = its consumer group), from `$CCMETER_APP_ID`; `--group` is its old name."""
    action = parser.add_argument(
        "--app-id", default=None, metavar="ID", help=f"{what} {env_note('CCMETER_APP_ID', DEFAULT_APP_ID)}"
    )
    deprecated(parser, "--group", action)
    return _mark(action, "CCMETER_APP_ID")


# -- a CCMETER_* variable for every option ------------------------------------------------------------------------

ENV_PREFIX = "CCMETER_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
EVERY_COMMAND = "*"  # a `NO_VARIABLE` key's command: the flag has no variable in any command
# Options without a variable, and why: (command path, flag). --help, --version, positional arguments and hidden
# options (old spellings of renamed flags: they set their new flag, whose variable is the one) have none either.
NO_VARIABLE: dict[tuple[str, str], str] = {
    (EVERY_COMMAND, "--out"): "an output file: one variable would make `report` overwrite the snapshot of `snapshot`",
    (EVERY_COMMAND, "--from"): "a local date, an instant or a directory, depending on the command",
    (EVERY_COMMAND, "--to"): "a local date, an instant or a directory, depending on the command",
    (EVERY_COMMAND, "--data-dir"): "$CCMETER_DATA_DIR is still the deprecated name of the worker's $CCMETER_STATE_DIR",
    (EVERY_COMMAND, "--yes"): "confirms a deletion that cannot be undone: given on its command line each time",
    (EVERY_COMMAND, "--include-events"): "widens a deletion that cannot be undone: given on its command line each time",
    (EVERY_COMMAND, "--apply"): "turns a dry run into a change of the billing record: given on its command line",
    ("topics delete", "--prefix"): "what is deleted is always named on the command line",
    ("replay restate", "--broker"): "opt-in: only when given does restate also read the dead-letter topic",
    ("replay restate", "--prefix"): "defaults to the snapshot's prefix",
    ("replay run", "--app-id"): "the new version's id; $CCMETER_APP_ID names the live worker (default: it + -VERSION)",
    ("replay run", "--state-dir"): "$CCMETER_STATE_DIR is the live worker's; the new version's has its own default",
    ("replay run", "--web-port"): "$CCMETER_WEB_PORT is the live worker's port; the new version's takes a free one",
    ("replay run", "--give-up-after"): "bounds a whole rebuild: $CCMETER_GIVE_UP_AFTER, set for `sink` or `alerts "
    "deliver`, must not end one",
    ("tokens new", "--account-ids"): "a token's scope is named on the command line each time: a variable left set "
    "would scope every new token",
}
# Options whose command reads a variable named otherwise than the flag (their help names it).
OWN_VARIABLE: dict[str, str] = {"--ssl-no-check-hostname": "CCMETER_SSL_CHECK_HOSTNAME"}  # processor/kafka_security.py
_DEFAULT_NOTE = re.compile(r"\(([^()]*\bdefault\b[^()]*)\)\s*$")  # a closing `(... default ...)`
_SWITCHES = (argparse._StoreConstAction,)  # noqa: SLF001 - store_const, store_true and store_false options


def value_kind(action: argparse.Action) -> str:
    """What an option takes, the part of its meaning that its type and metavar show: `switch`, `choice`, `duration`,
    `number`, `date`, `instant`, `list`, `directory`, `file` or `text` (one flag name takes one kind everywhere)."""
    metavar = str(action.metavar or "")
    if action.nargs == 0:
        return "switch"
    if action.choices is not None:
        return "choice"
    if action.type is duration or metavar == "DURATION":
        return "duration"
    if action.type in (int, float) or metavar in ("N", "PORT", "RATE"):
        return "number"
    kinds = {"YYYY-MM-DD": "date", "TS": "instant", "DIR": "directory"}
    if metavar in kinds:
        return kinds[metavar]
    if "," in metavar:
        return "list"
    return "file" if metavar.startswith("FILE") else "text"


def variable_name(flag: str) -> str:
    """The variable of a flag: `--max-record-bytes` -> `CCMETER_MAX_RECORD_BYTES`."""
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def long_flag(action: argparse.Action) -> str:
    """The option's first `--long` spelling (its first spelling if it has none)."""
    return next((flag for flag in action.option_strings if flag.startswith("--")), action.option_strings[0])


def walk_options(parser: argparse.ArgumentParser, path: str = "") -> Iterator[tuple[str, argparse.Action]]:
    """(command path, option) of every visible option of `parser` and its subcommands: no --help, --version or
    hidden option (old spellings of renamed flags)."""
    for action in _actions_of(parser):
        if action.nargs == argparse.PARSER:  # the subcommands
            seen: set[int] = set()
            subcommands: dict[str, argparse.ArgumentParser] = action.choices  # type: ignore[assignment]
            for name, sub in subcommands.items():
                if id(sub) not in seen:  # an alias names the same parser again
                    seen.add(id(sub))
                    yield from walk_options(sub, f"{path} {name}".strip())
        elif action.option_strings and action.help != argparse.SUPPRESS:
            if not (action.nargs == 0 and action.default == argparse.SUPPRESS):  # not --help or --version
                yield path, action


def no_variable_reason(command: str, flag: str) -> str | None:
    """Why the option `flag` of `command` has no variable (`NO_VARIABLE`), or None when it has one."""
    return NO_VARIABLE.get((command, flag)) or NO_VARIABLE.get((EVERY_COMMAND, flag))


def add_variables(parser: argparse.ArgumentParser) -> None:
    """Give every option of `parser` and its subcommands its `CCMETER_*` variable: marked on the option (`env_of`),
    named in its help and, with an `EnvParser`, read when the flag is absent. `NO_VARIABLE` options get none."""
    for command, action in walk_options(parser):
        flag = long_flag(action)
        if no_variable_reason(command, flag) is not None:
            continue
        if flag in OWN_VARIABLE:
            _mark(action, OWN_VARIABLE[flag])
            continue
        switch = action.nargs == 0
        if not (switch and isinstance(action, _SWITCHES)) and action.nargs not in (None, "?"):
            raise TypeError(f"{command} {flag}: a {type(action).__name__} option takes no CCMETER_* variable yet")
        variable = env_of(action) or variable_name(flag)
        _mark(action, variable).ccmeter_parsed = True  # type: ignore[attr-defined]  # read by EnvParser
        if f"${variable}" not in (action.help or ""):
            action.help = _with_variable(action.help or "", f"${variable}=1" if switch else f"${variable}")


def _with_variable(text: str, shown: str) -> str:
    """`text` naming the variable: a closing `(default 30s)` becomes `($CCMETER_X; default 30s)`, else it gets
    ` ($CCMETER_X)`."""
    found = _DEFAULT_NOTE.search(text)
    if found:
        return f"{text[: found.start()]}({shown}; {found.group(1)})"
    return f"{text} ({shown})".strip()


def variables_table(parser: argparse.ArgumentParser) -> str:
    """Every variable as a Markdown table (variable, flag, the commands that read it), the Kafka commands, and the
    options without a variable with their reasons (docs/running.md)."""
    commands: dict[tuple[str, str], list[str]] = {}
    for command, action in walk_options(parser):
        variable = env_of(action)
        if variable is not None:
            commands.setdefault((variable, long_flag(action)), []).append(command)
    kafka = commands.get(("CCMETER_SECURITY_PROTOCOL", "--security-protocol")) or []
    rows = ["| variable | flag | commands |", "|---|---|---|"]
    for (variable, flag), names in sorted(commands.items()):
        missing = [n for n in kafka if n not in names]
        if names == kafka:
            shown = "the Kafka commands"
        elif set(names) < set(kafka) and len(missing) <= 2:
            shown = "the Kafka commands except " + " and ".join(f"`{n}`" for n in missing)
        else:
            shown = ", ".join(f"`{n}`" for n in names)
        rows.append(f"| `{variable}` | `{flag}` | {shown} |")
    listed = ", ".join(f"`{n}`" for n in kafka)
    rows += ["", f"The Kafka commands (those with the security options, docs/security.md): {listed}.", ""]
    rows.append("Options without a variable, and why:")
    for (command, flag), reason in NO_VARIABLE.items():
        rows.append(f"- `{flag}`" + ("" if command == EVERY_COMMAND else f" of `{command}`") + f": {reason}")
    return "\n".join(rows)


class _FromEnv:
    """A parsed namespace's placeholder while parsing: the flag was absent, its variable holds `text`."""

    __slots__ = ("text", "variable")

    def __init__(self, variable: str, text: str) -> None:
        self.variable, self.text = variable, text


class _Absent:
    """A placeholder for an option of a mutually exclusive group whose flag and variable are both absent."""


_ABSENT = _Absent()


class EnvParser(argparse.ArgumentParser):
    """An ArgumentParser whose options fall back to their `CCMETER_*` variables (given by `add_variables`).

    A variable counts only when its flag is absent (an empty one counts as unset); it is converted by the option's
    `type` and checked against its `choices`; a switch's takes 1/true/yes/on or 0/false/no/off; a flag given in a
    mutually exclusive group beats the variables of the other members. A bad value: one line, exit status 2.
    Subcommand parsers are EnvParsers too (argparse makes them of their parent's class)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        env = os.environ
        space = argparse.Namespace() if namespace is None else namespace
        from_env: dict[str, argparse.Action] = {}
        for action in self._actions:
            variable = env_of(action) if getattr(action, "ccmeter_parsed", False) else None
            if variable and env.get(variable, "") != "" and not hasattr(space, action.dest):
                setattr(space, action.dest, _FromEnv(variable, env[variable]))
                from_env[action.dest] = action
        groups = [g for g in self._mutually_exclusive_groups if any(a.dest in from_env for a in _members(g))]
        for group in groups:
            for action in _members(group):
                if not hasattr(space, action.dest):
                    setattr(space, action.dest, _ABSENT)
        relaxed: list[Any] = [a for a in from_env.values() if a.required] + [g for g in groups if g.required]
        for item in relaxed:  # a variable stands in for a required flag
            item.required = False
        try:
            space, extras = super().parse_known_args(args, space)
        finally:
            for item in relaxed:
                item.required = True
        for group in groups:
            self._settle(space, group)
        read: dict[str, str] = {}
        for dest, action in from_env.items():
            value = getattr(space, dest, None)
            if isinstance(value, _FromEnv):
                setattr(space, dest, self._value_of(action, value))
                read[dest] = value.variable
        if read:  # kept for `source_of` (a subcommand's record is copied onto its parent's namespace)
            setattr(space, FROM_VARIABLES, {**getattr(space, FROM_VARIABLES, {}), **read})
        return space, extras

    def _settle(self, namespace: argparse.Namespace, group: Any) -> None:
        """A flag given in the group beats the members' variables; two variables of one group are an error."""
        members = _members(group)
        given = [a for a in members if not isinstance(getattr(namespace, a.dest), _FromEnv | _Absent)]
        set_by_env = [a for a in members if isinstance(getattr(namespace, a.dest), _FromEnv)]
        if not given and len(set_by_env) > 1:
            names = " and ".join(f"${getattr(namespace, a.dest).variable}" for a in set_by_env)
            flags = ", ".join(long_flag(a) for a in members)
            self._fail(f"{names} are set together, but {flags} exclude each other: unset all but one (or give a flag)")
        for action in members:
            value = getattr(namespace, action.dest)
            if isinstance(value, _Absent) or (given and isinstance(value, _FromEnv)):
                setattr(namespace, action.dest, self._default_of(action))

    def _value_of(self, action: argparse.Action, value: _FromEnv) -> Any:
        if action.nargs == 0:  # a switch: on is as if the flag were given
            word = value.text.strip().lower()
            if word in TRUE_WORDS:
                return action.const
            if word in FALSE_WORDS:
                return self._default_of(action)
            words = f"{', '.join(TRUE_WORDS)} / {', '.join(FALSE_WORDS)}"
            self._fail(f"${value.variable}: {value.text!r} is not a yes/no value for {long_flag(action)} ({words})")
        return self._convert(action, value.text, f"${value.variable}")

    def _default_of(self, action: argparse.Action) -> Any:
        """The option's default as argparse leaves it when the flag is absent (a text default converted)."""
        if isinstance(action.default, str):
            return self._convert(action, action.default, long_flag(action) + " default")
        return action.default

    def _convert(self, action: argparse.Action, text: str, source: str) -> Any:
        flag = long_flag(action)
        try:
            value = action.type(text) if callable(action.type) else text
        except argparse.ArgumentTypeError as exc:
            self._fail(f"{source}: invalid value {text!r} for {flag}: {exc}")
        except (TypeError, ValueError):
            kind = getattr(action.type, "__name__", "")
            self._fail(f"{source}: invalid {kind} value {text!r} for {flag}".replace("  ", " "))
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(str, action.choices))
            self._fail(f"{source}: invalid value {text!r} for {flag}: choose from {choices}")
        return value

    def _fail(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"ccmeter: error: {message}\n")


def _members(group: Any) -> list[argparse.Action]:
    return list(group._group_actions)  # noqa: SLF001 - argparse keeps a group's options only there


def _actions_of(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return list(parser._actions)  # noqa: SLF001 - argparse lists a parser's options only there


__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_BROKER",
    "DEFAULT_PREFIX",
    "ENV_PREFIX",
    "EVERY_COMMAND",
    "FALSE_WORDS",
    "FROM_VARIABLES",
    "LOG_LEVELS",
    "NO_VARIABLE",
    "OUT_DIR",
    "OWN_VARIABLE",
    "QUIET_HELP",
    "TRUE_WORDS",
    "EnvParser",
    "add_app_id",
    "add_broker",
    "add_duration",
    "add_prefix",
    "add_quiet",
    "add_variables",
    "app_id_of",
    "broker_of",
    "deprecated",
    "duration",
    "env_note",
    "env_of",
    "long_flag",
    "no_variable_reason",
    "out_path",
    "prefix_of",
    "show_seconds",
    "source_of",
    "value_kind",
    "variable_name",
    "variables_table",
    "walk_options",
]
