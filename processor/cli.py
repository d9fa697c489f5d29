"""The `ccmeter` console command: one subcommand per module, each registering its own parser."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that expose `register(subparsers)`; each adds its subcommands and sets `func` on them.
COMMAND_MODULES: tuple[str, ...] = (
    "processor.simulate",
    "processor.commands.report",
    "processor.worker_commands",
    "processor.brokers.commands",
    "processor.snapshots.commands",
    "processor.alerts.commands",
    "replay.commands",
)


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="ccmeter",
        description="Meter concurrent license usage of contact-center accounts from session events.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"ccmeter: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ccmeter: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
