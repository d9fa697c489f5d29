"""Error types of the `ccmeter` console command: one line on stderr, exit 2 for usage, 1 for runtime failures.

`processor.cli.main` prints any `CcmeterError` as `ccmeter: error: <message>` and exits with its `exit_code`.
`CliError` is the historical name of the usage error; `RuntimeFailure` subclasses it so handlers that only know
`CliError` still print a runtime failure as one line (but it exits 1).

Which is which: a usage error (2) means the command line must change: a bad flag or variable value, flags that do
not go together, an input file the user named that is missing, unreadable or not what the flag takes, a request the
data cannot answer (an unknown account, an empty period). A runtime failure (1) means the command was right and the
world must change: the broker is unreachable or refuses access, a topic is missing, a consumer group is busy, fenced
or holds another app's state, state or a file that an earlier step writes is missing (a sink data directory before
the sink ran), a file is locked or cannot be written, a port is taken, a package is missing, a step failed.
"""

from __future__ import annotations

from processor.worker.errors import CheckpointError, FencedError

EXIT_OK = 0
EXIT_FAILURE = 1  # the command was right but the work failed (broker down, topic missing, bad state, ...)
EXIT_USAGE = 2  # the command line or its input was wrong (unknown flag, bad duration, unreadable file, ...)
EXIT_INTERRUPTED = 130


class CcmeterError(Exception):
    """Base of every user-facing error: printed as one line, exits with `exit_code`."""

    exit_code = EXIT_FAILURE


class CliError(CcmeterError):
    """A usage error (bad flag value, a missing input file the user named, conflicting options): exit status 2."""

    exit_code = EXIT_USAGE


UsageError = CliError


class InputError(CliError):
    """An input the user named cannot be used (unreadable file, malformed document): exit status 2."""


class RuntimeFailure(CliError):
    """A user-facing runtime failure (broker unreachable, topic missing, busy group, failed step, ...): exit 1.

    A `CliError` subclass, so handlers that only know `CliError` still print it as one line."""

    exit_code = EXIT_FAILURE


OperationalError = RuntimeFailure


class StateFormatError(RuntimeFailure, ValueError):
    """Stored state (a data directory, a snapshot, a changelog record) is not in a format this version reads.

    Also a ValueError, so that readers which skip unreadable entries (`except ValueError`) still do."""


def snapshot_error(message: str) -> CliError:
    """The error of a snapshot file that cannot be opened: locked by a writer is a runtime failure (exit 1: the same
    command works once the writer is done); missing, corrupt or not a ccmeter snapshot is a usage error (exit 2)."""
    busy = "Could not set lock" in message or "locked by another process" in message  # DuckDB's words, or ours
    return RuntimeFailure(message) if busy else CliError(message)


def exit_code_of(exc: BaseException) -> int:
    """The exit status for `exc`: its `exit_code` if it is a ccmeter error, else 1 (a runtime failure)."""
    if isinstance(exc, CcmeterError):
        return exc.exit_code
    return EXIT_FAILURE


__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CcmeterError",
    "CheckpointError",
    "CliError",
    "FencedError",
    "InputError",
    "OperationalError",
    "RuntimeFailure",
    "StateFormatError",
    "UsageError",
    "exit_code_of",
    "snapshot_error",
]
