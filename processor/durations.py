"""Duration flags of the long-running commands (sink, alert delivery): one parser, one meaning of `never`."""

from __future__ import annotations

from processor.cli import CliError

ONCE_GIVE_UP = "60s"  # how long a `--once` run waits for what it needs (broker, receiver) by default


def flag_seconds(text: str, flag: str) -> float:
    """A positive duration flag (`500ms`, `30s`, `2m`, ...) in seconds, or a CliError naming the flag."""
    from processor.worker.config import parse_duration_ms

    try:
        seconds = parse_duration_ms(text) / 1000
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
