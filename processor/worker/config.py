"""Settings of the streaming worker: one table of options, each a `--flag` and a `CCMETER_*` environment variable.

Precedence: command-line flag, then environment variable, then the default. Durations accept `500ms`, `30s`, `15m`,
`1h`, `2d` or a plain number of seconds (processor/durations.py, the rule of every command). `OPTIONS` is also the
source of the settings table in docs/running.md. A renamed option keeps its old flag and variable as deprecated
aliases (`--data-dir`/`CCMETER_DATA_DIR` of `--state-dir`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from processor.core.alerts import DEFAULT_SHARE, parse_share
from processor.core.model import Settings
from processor.durations import parse_duration_ms, show_ms
from processor.options import LOG_LEVELS, OUT_DIR, deprecated
from processor.topics import DEFAULT_PREFIX, EVENTS, topic_names, validate_prefix
from schemas.events import MAX_RECORD_BYTES

__all__ = ["OPTIONS", "Option", "WorkerConfig", "add_arguments", "parse_duration_ms", "settings_table"]
DEFAULT_STATE_DIR = f"{OUT_DIR}/worker-state"
_RULES = Settings()  # the counting rules' defaults live in processor/core/model.py only


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text!r} must be at least 1")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise ValueError(f"{text!r} is not a TCP port")
    return value


def _store(text: str) -> str:
    if not (text.startswith("memory://") or text.startswith("rocksdb://")):
        raise ValueError(f"{text!r}: the store is memory:// or rocksdb://")
    return text


def _guarantee(text: str) -> str:
    if text not in ("auto", "exactly_once", "at_least_once"):
        raise ValueError(f"{text!r}: the processing guarantee is auto, exactly_once or at_least_once")
    return text


def _topic(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", text):
        raise ValueError(f"{text!r} is not a Kafka topic name (letters, digits, '.', '_', '-')")
    return text


def _broker(text: str) -> str:
    text = text.removeprefix("kafka://")
    if not all(re.fullmatch(r"[^\s:,]+:\d+", part) for part in text.split(",")):
        raise ValueError(f"{text!r} is not HOST:PORT[,HOST:PORT...]")
    return text


def _log_level(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not a log level ({', '.join(LOG_LEVELS)})")
    return value


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"{text!r} is not a yes/no value (1, true, yes, on / 0, false, no, off)")
    return value in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Option:
    """One worker setting: attribute name, flag, environment variable, parser, default and help text."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    metavar: str = ""
    switch: bool = False  # a flag without a value (`--web-insecure-no-auth`); its variable takes 1/true/yes
    choices: tuple[str, ...] | None = None  # the values argparse accepts (after `parse`)
    old_name: str | None = None  # the name this option had before a rename: a deprecated flag and variable

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "CCMETER_" + self.name.upper()

    @property
    def old_flag(self) -> str | None:
        return None if self.old_name is None else "--" + self.old_name.replace("_", "-")

    @property
    def old_env(self) -> str | None:
        return None if self.old_name is None else "CCMETER_" + self.old_name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("broker", _broker, "127.0.0.1:9092", "Kafka bootstrap servers", "HOST:PORT"),
    Option("prefix", validate_prefix, DEFAULT_PREFIX, "topic name prefix", "PREFIX"),
    Option(
        "events_topic",
        _topic,
        None,
        "read events from this topic instead of PREFIX + events (a rebuilt version reading the live log)",
        "TOPIC",
    ),
    Option("app_id", str, "ccmeter-worker", "Faust app id: consumer group and changelog topic names", "ID"),
    Option("web_host", str, "127.0.0.1", "host name other workers use to reach this worker's HTTP port", "HOST"),
    Option(
        "web_bind",
        str,
        "127.0.0.1",
        "address the HTTP server listens on (0.0.0.0: every interface; see docs/security.md)",
        "ADDR",
    ),
    Option("web_port", _port, 6066, "HTTP port of live queries and /health", "PORT"),
    Option("web_tokens_file", str, None, "file of API token hashes, one per line (docs/security.md)", "FILE"),
    Option("web_tokens", str, None, "API token hash lines, separated by ';' (as in --web-tokens-file)", "LINES"),
    Option(
        "web_insecure_no_auth",
        _switch,
        False,
        "serve every account without tokens (local development only; logged at startup)",
        switch=True,
    ),
    Option("web_tls_cert", str, None, "PEM certificate (chain) of the HTTPS server; with --web-tls-key", "FILE"),
    Option("web_tls_key", str, None, "PEM private key of the HTTPS server", "FILE"),
    Option("store", _store, "memory://", "table store: memory:// or rocksdb:// (needs rocksdict)", "URL"),
    Option(
        "state_dir",
        str,
        DEFAULT_STATE_DIR,
        "directory of the worker's local state (RocksDB files; was --data-dir)",
        "DIR",
        old_name="data_dir",
    ),
    Option(
        "processing_guarantee",
        _guarantee,
        "auto",
        "exactly_once (Kafka transactions fence a worker that lost its partitions), at_least_once, or auto: "
        "exactly_once where the broker has transactions",
        "MODE",
    ),
    Option("batch_size", _positive_int, 100_000, "events per processing batch (at most)", "N"),
    Option(
        "max_record_bytes",
        _positive_int,
        MAX_RECORD_BYTES,
        "a larger events record is a too_large dead letter, by reference (docs/running.md, Dead letters)",
        "BYTES",
    ),
    Option("batch_within", parse_duration_ms, 200, "wait at most this long to fill a batch", "DURATION"),
    Option("partitions", _positive_int, 4, "partitions of the topics when the worker has to create them", "N"),
    Option("replication", _positive_int, 1, "replication factor of topics the worker creates", "N"),
    Option("standby_replicas", int, 1, "no effect (state recovers from the changelog); kept for old scripts", "N"),
    Option("session_timeout", parse_duration_ms, 30_000, "Kafka consumer session timeout", "DURATION"),
    Option("heartbeat_interval", parse_duration_ms, 3_000, "Kafka consumer heartbeat interval", "DURATION"),
    Option("rebalance_timeout", parse_duration_ms, 60_000, "Kafka consumer rebalance timeout", "DURATION"),
    Option("commit_interval", parse_duration_ms, 2_000, "how often consumed offsets are committed", "DURATION"),
    Option(
        "shutdown_timeout",
        parse_duration_ms,
        30_000,
        "on SIGTERM/SIGINT, a stop that takes longer (say the broker is gone, so the last checkpoint cannot be "
        "written) ends the process at once with exit status 1; the next start resumes from the last checkpoint",
        "DURATION",
    ),
    Option("near_capacity", parse_share, DEFAULT_SHARE, "share of licenses that raises near_capacity", "SHARE"),
    Option("device_timeout", parse_duration_ms, _RULES.device_timeout_ms, "desktop liveness timeout", "DURATION"),
    Option("portal_idle_timeout", parse_duration_ms, _RULES.portal_idle_timeout_ms, "portal idle timeout", "DURATION"),
    Option("api_activity_window", parse_duration_ms, _RULES.api_activity_window_ms, "API activity window", "DURATION"),
    Option(
        "allowed_lateness",
        parse_duration_ms,
        _RULES.allowed_lateness_ms,
        "an account's events older than its own watermark - this are too late",
        "DURATION",
    ),
    Option(
        "account_idle_lateness",
        parse_duration_ms,
        _RULES.account_idle_lateness_ms,
        "how far an account may lag the busiest account of its partition before its events are too late",
        "DURATION",
    ),
    Option(
        "max_future_skew",
        parse_duration_ms,
        _RULES.max_future_skew_ms,
        "newer than watermark + this: rejected",
        "DURATION",
    ),
    Option("log_level", _log_level, "info", "log level: " + ", ".join(LOG_LEVELS), "LEVEL", choices=LOG_LEVELS),
)
_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs; build it with `from_args` or `from_mapping`."""

    broker: str = "127.0.0.1:9092"
    prefix: str = DEFAULT_PREFIX
    events_topic: str | None = None
    app_id: str = "ccmeter-worker"
    web_host: str = "127.0.0.1"
    web_bind: str = "127.0.0.1"
    web_port: int = 6066
    web_tokens_file: str | None = None
    web_tokens: str | None = None
    web_insecure_no_auth: bool = False
    web_tls_cert: str | None = None
    web_tls_key: str | None = None
    store: str = "memory://"
    state_dir: str = DEFAULT_STATE_DIR
    processing_guarantee: str = "auto"
    batch_size: int = 100_000
    max_record_bytes: int = MAX_RECORD_BYTES
    batch_within: int = 200
    partitions: int = 4
    replication: int = 1
    standby_replicas: int = 1
    session_timeout: int = 30_000
    heartbeat_interval: int = 3_000
    rebalance_timeout: int = 60_000
    commit_interval: int = 2_000
    shutdown_timeout: int = 30_000
    near_capacity: Fraction = DEFAULT_SHARE
    device_timeout: int = _RULES.device_timeout_ms
    portal_idle_timeout: int = _RULES.portal_idle_timeout_ms
    api_activity_window: int = _RULES.api_activity_window_ms
    allowed_lateness: int = _RULES.allowed_lateness_ms
    account_idle_lateness: int = _RULES.account_idle_lateness_ms
    max_future_skew: int = _RULES.max_future_skew_ms
    log_level: str = "info"

    @property
    def settings(self) -> Settings:
        """The counting rules of the fold."""
        return Settings(
            device_timeout_ms=self.device_timeout,
            portal_idle_timeout_ms=self.portal_idle_timeout,
            api_activity_window_ms=self.api_activity_window,
            allowed_lateness_ms=self.allowed_lateness,
            account_idle_lateness_ms=self.account_idle_lateness,
            max_future_skew_ms=self.max_future_skew,
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], env: Mapping[str, str] | None = None) -> WorkerConfig:
        """Values given (already parsed; None = not given) win over `CCMETER_*` variables of `env`, then defaults."""
        env = os.environ if env is None else env
        resolved: dict[str, Any] = {}
        for option in OPTIONS:
            value = values.get(option.name)
            for name in (option.env, option.old_env):
                if value is None and name and env.get(name, "") != "":
                    if name == option.old_env:
                        print(f"ccmeter: warning: ${name} is deprecated, use ${option.env}", file=sys.stderr)
                    try:
                        value = option.parse(env[name])
                    except ValueError as exc:
                        raise ValueError(f"${name}: {exc}") from exc
            resolved[option.name] = option.default if value is None else value
        return cls(**resolved)

    @property
    def events(self) -> str:
        """The events topic this worker reads."""
        return self.events_topic or topic_names(self.prefix)[EVENTS]

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> WorkerConfig:
        """From parsed `add_arguments` flags plus the environment."""
        return cls.from_mapping({name: getattr(args, name, None) for name in _BY_NAME}, env)


def _argparse_type(option: Option) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    parse.__name__ = option.name
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option (default None, so that environment variables can fill in)."""
    for option in OPTIONS:
        if option.switch:
            help_text = f"{option.help} (${option.env}=1)"
            action = parser.add_argument(
                option.flag, dest=option.name, action="store_const", const=True, help=help_text
            )
        else:
            shown = _shown(option)
            action = parser.add_argument(
                option.flag,
                dest=option.name,
                type=_argparse_type(option),
                default=None,
                choices=option.choices,
                metavar=option.metavar or None,
                help=f"{option.help} (${option.env}" + ("" if shown == "none" else f"; default {shown}") + ")",
            )
        action.ccmeter_env = option.env  # type: ignore[attr-defined]  # see processor.options.env_of
        if option.old_flag:
            deprecated(parser, option.old_flag, action)


def _shown(option: Option) -> str:
    default = option.default
    if option.switch:
        return "off"
    if isinstance(default, Fraction):
        return f"{float(default):g}"
    if option.parse is parse_duration_ms:
        return show_ms(default)
    return "none" if default is None else str(default)


def settings_table() -> str:
    """The options as a Markdown table (flag, environment variable, default, meaning)."""
    rows = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for option in OPTIONS:
        rows.append(f"| `{option.flag}` | `{option.env}` | `{_shown(option)}` | {option.help} |")
    return "\n".join(rows)
