"""Options shared by the `ccmeter` commands: one meaning per flag name, each with its `CCMETER_*` variable.

The rules (tests/processor/test_options.py checks them on every subcommand's parser):
- every option has help text, and an option read from a `CCMETER_*` variable names it in its help;
- a duration carries a unit (`500ms`, `30s`, `3m`, `2h`, `1d`; a bare number is seconds) and its help shows one;
- a flag name means one thing in every command; a renamed flag stays as a hidden alias that warns once used;
- values from a fixed set are argparse `choices`.
Precedence everywhere: the flag, then the variable, then the default.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from processor.durations import parse_seconds, show_seconds
from processor.errors import CliError

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


def broker_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """The bootstrap servers of a command: `--broker`, `$CCMETER_BROKER`, the default."""
    env = os.environ if env is None else env
    return getattr(args, "broker", None) or env.get("CCMETER_BROKER") or DEFAULT_BROKER


def prefix_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str:
    """The topic prefix of a command: `--prefix`, `$CCMETER_PREFIX`, the default; checked (CliError)."""
    from processor.topics import validate_prefix

    env = os.environ if env is None else env
    text = getattr(args, "prefix", None) or env.get("CCMETER_PREFIX") or DEFAULT_PREFIX
    try:
        return validate_prefix(text)
    except ValueError as exc:
        raise CliError(f"--prefix: {exc}") from None


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


__all__ = [
    "DEFAULT_APP_ID",
    "DEFAULT_BROKER",
    "DEFAULT_PREFIX",
    "LOG_LEVELS",
    "OUT_DIR",
    "QUIET_HELP",
    "add_app_id",
    "add_broker",
    "add_duration",
    "add_prefix",
    "add_quiet",
    "app_id_of",
    "broker_of",
    "deprecated",
    "duration",
    "env_note",
    "env_of",
    "out_path",
    "prefix_of",
    "show_seconds",
]
