"""Shared pieces of the replay commands: flag resolution, instants, fold settings, plans and progress bars."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from processor.cli import CliError
from processor.core.model import Settings
from processor.errors import RuntimeFailure
from processor.kafka_security import KafkaAccessError, access_error, add_security_options, current_security
from processor.topics import DEFAULT_PREFIX, validate_prefix
from schemas.events import format_ms, parse_timestamp, to_ms

T = TypeVar("T")
DEFAULT_BROKER = "127.0.0.1:9092"
DEFAULT_GROUP = "ccmeter-worker"
BEGINNING = ("beginning", "earliest")
VERSION_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")
SETTING_FLAGS = (
    "device_timeout",
    "portal_idle_timeout",
    "api_activity_window",
    "allowed_lateness",
    "account_idle_lateness",
    "max_future_skew",
)


def broker_of(value: str | None) -> str:
    """--broker, else $CCMETER_BROKER, else 127.0.0.1:9092."""
    return value or os.environ.get("CCMETER_BROKER") or DEFAULT_BROKER


def prefix_of(value: str | None) -> str:
    """--prefix, else $CCMETER_PREFIX, else "ccmeter." (validated)."""
    try:
        return validate_prefix(value or os.environ.get("CCMETER_PREFIX") or DEFAULT_PREFIX)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def parse_instant(text: str, flag: str = "--from") -> int:
    """Milliseconds of an RFC 3339 timestamp with offset, or of a date `YYYY-MM-DD` (00:00 UTC)."""
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise CliError(f"{flag} {text!r} is not a date") from None
        return to_ms(datetime(day.year, day.month, day.day, tzinfo=UTC))
    try:
        return to_ms(parse_timestamp(value))
    except ValueError:
        raise CliError(
            f"{flag} must be a timestamp like 2026-11-02T09:00:00Z or a date like 2026-11-02, not {text!r}"
        ) from None


def show_ms(ms: int | None) -> str:
    """RFC 3339 text of an instant, "-" for None."""
    return "-" if ms is None else format_ms(ms)


def add_broker_arguments(parser: argparse.ArgumentParser, *, required_broker: bool = False) -> None:
    """--broker and --prefix."""
    parser.add_argument(
        "--broker",
        required=required_broker,
        default=None,
        metavar="HOST:PORT",
        help="Kafka bootstrap servers ($CCMETER_BROKER; default 127.0.0.1:9092)",
    )
    parser.add_argument("--prefix", default=None, help="topic name prefix ($CCMETER_PREFIX; default ccmeter.)")
    add_security_options(parser)


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    """The counting rules that recomputation must share with the live worker (same flags and variables)."""
    from processor.durations import show_ms
    from processor.worker.config import OPTIONS

    by_name = {option.name: option for option in OPTIONS}
    for name in SETTING_FLAGS:
        option = by_name[name]
        parser.add_argument(
            option.flag,
            dest=name,
            default=None,
            metavar="DURATION",
            help=f"{option.help} (${option.env}; default {show_ms(option.default)}, as the live worker)",
        )


def settings_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    """Fold settings from the flags of `add_settings_arguments`, then $CCMETER_* variables, then defaults."""
    from processor.worker.config import OPTIONS, WorkerConfig

    by_name = {option.name: option for option in OPTIONS}
    values: dict[str, Any] = {}
    for name in SETTING_FLAGS:
        text = getattr(args, name, None)
        if text is None:
            continue
        try:
            values[name] = by_name[name].parse(text)
        except ValueError as exc:
            raise CliError(f"{by_name[name].flag}: {exc}") from None
    try:
        return WorkerConfig.from_mapping(values, env).settings
    except ValueError as exc:
        raise CliError(str(exc)) from None


def run_async(coro: Coroutine[Any, Any, T], broker: str) -> T:
    """Run a coroutine; Kafka and network errors become one-line runtime failures (exit 1), with aiokafka's own
    logging of them (e.g. "Unable connect to ...") kept off the terminal."""
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

    try:
        with quiet_kafka_logging():
            return asyncio.run(coro)
    except (KafkaError, OSError) as exc:
        refused = access_error(exc, broker, current_security())
        if refused is not None:
            raise KafkaAccessError(refused) from None
        if isinstance(exc, KafkaConnectionError | ConnectionError):
            raise RuntimeFailure(f"cannot connect to Kafka at {broker} (is it running? check --broker)") from None
        if isinstance(exc, KafkaTimeoutError | TimeoutError):
            raise RuntimeFailure(f"Kafka at {broker} did not answer in time") from None
        detail = str(exc).strip()
        name = type(exc).__name__
        raise RuntimeFailure(
            f"Kafka at {broker}: {name}" + (f": {detail}" if detail and detail != name else "")
        ) from None


@contextmanager
def quiet_kafka_logging() -> Iterator[None]:
    """Keep aiokafka's log records below CRITICAL off the terminal (the command reports the error itself)."""
    log = logging.getLogger("aiokafka")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def print_plan(title: str, lines: Iterable[str], *, to_stderr: bool = False) -> None:
    """Print what a command is about to do (standard output, or standard error when standard output carries JSON),
    before it acts."""
    stream = sys.stderr if to_stderr else sys.stdout
    print(f"plan: {title}", file=stream)
    for line in lines:
        print(f"  {line}", file=stream)
    stream.flush()


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """--format text|json."""
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text (default) or json: one JSON object on standard output (keys in docs/operators.md); the plan "
        "lines then go to standard error",
    )


def table(headers: list[str], rows: list[list[object]]) -> list[str]:
    """Right-aligned text table lines."""
    cells = [[str("-" if value is None else value) for value in row] for row in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return lines


def lag_text(lag: Mapping[int, int], limit: int = 8) -> str:
    """`lag p0=12 p1=0 ...` for a tqdm postfix (the first `limit` partitions with lag, then a total)."""
    busy = [(p, n) for p, n in sorted(lag.items()) if n > 0]
    shown = " ".join(f"p{p}={n}" for p, n in busy[:limit])
    more = f" +{len(busy) - limit} more" if len(busy) > limit else ""
    return f"lag {shown or 'none'}{more}"


def progress(total: int, desc: str, unit: str = "records", enabled: bool = True) -> Any:
    """A tqdm bar on standard error (rate and ETA included); a no-op bar when disabled."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr, disable=not enabled, leave=True)


def atomic_target(out: Path) -> Path:
    """The hidden temporary name beside `out` that a command writes before renaming it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def install(tmp: Path, out: Path) -> None:
    """fsync `tmp`, rename it to `out` and fsync the directory (readers see the old or the new file)."""
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    tmp.replace(out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_version(version: str, prefix: str) -> str:
    """The new version's topic prefix, `PREFIX + VERSION + "."` (e.g. ccmeter.v2.)."""
    if not VERSION_RE.fullmatch(version):
        raise CliError(f"--into must be letters, digits, '_' or '-' (e.g. v2), not {version!r}")
    return prefix_of(f"{prefix}{version}.")
