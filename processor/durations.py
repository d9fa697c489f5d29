"""Durations of every `ccmeter` option: one parser, one rule, one way of showing them.

The rule: a duration carries a unit (`500ms`, `30s`, `3m`, `2h`, `1d`); a bare number is seconds, in every command
and every `CCMETER_*` variable. `--help` shows every default with its unit.
"""

from __future__ import annotations

import re

from processor.errors import CliError

ONCE_GIVE_UP = "60s"  # how long a `--once` run waits for what it needs (broker, receiver) by default

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, None: 1000, "m": 60_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
EXAMPLES = "examples: 500ms, 30s, 3m, 2h, 1d; a bare number is seconds"


def parse_duration_ms(text: str | float) -> int:
    """Milliseconds of `500ms`, `30s`, `15m`, `1h`, `2d` or a plain number of seconds."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration ({EXAMPLES})")
    return round(float(match.group(1)) * _UNIT_MS[match.group(2)])


def parse_seconds(text: str | float) -> float:
    """Seconds (a float) of a duration text, same rule as `parse_duration_ms`."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not a duration ({EXAMPLES})")
    return float(match.group(1)) * _UNIT_MS[match.group(2)] / 1000


def show_ms(ms: float) -> str:
    """`ms` in the largest whole unit: 180000 -> `3m`, 500 -> `500ms`, 0 -> `0s`."""
    if ms == 0:
        return "0s"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{int(ms // size)}{unit}"
    return f"{ms:g}ms"


def show_seconds(seconds: float) -> str:
    """`seconds` with a unit: 30.0 -> `30s`, 0.5 -> `500ms`, 300 -> `5m`."""
    return show_ms(round(seconds * 1000, 3))


def flag_seconds(text: str, flag: str) -> float:
    """A positive duration flag (`500ms`, `30s`, `2m`, ...) in seconds, or a CliError naming the flag."""
    try:
        seconds = parse_seconds(text)
    except ValueError as exc:
        raise CliError(f"{flag}: {exc}") from None
    if seconds <= 0:
        raise CliError(f"{flag}: {text!r} must be more than 0")
    return seconds


def give_up_seconds(text: str | None, once: bool) -> float | None:
    """Seconds of `--give-up-after` (None: retry forever); unset, `ONCE_GIVE_UP` with `--once`, else never."""
    if text is None:
        text = ONCE_GIVE_UP if once else "never"
    if text.strip().lower() == "never":
        return None
    return flag_seconds(text, "--give-up-after")
