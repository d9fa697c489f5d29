"""The `ccmeter` console command: one subcommand per module, each registering its own parser."""

from __future__ import annotations

import argparse
import asyncio
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
    "processor.console.commands",
    "processor.web.commands",
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
    from processor import kafka_security as ks

    broker, security = ks.broker_of_args(args), ks.KafkaSecurity()
    try:  # the Kafka security options (processor/kafka_security.py) of commands that talk to Kafka
        if ks.takes_security(args):
            security = ks.security_from_args(args)
        with ks.use_security(security):
            if security.protocol != "PLAINTEXT":
                asyncio.run(ks.check_access(broker, security))
            return int(args.func(args) or 0)
    except ks.KafkaAccessError as exc:
        print(f"ccmeter: error: {exc}", file=sys.stderr)
        return 1
    except (CliError, ks.SecurityConfigError) as exc:
        refused = ks.access_error(exc, broker, security) if isinstance(exc, CliError) else None
        print(f"ccmeter: error: {refused or exc}", file=sys.stderr)
        return 1 if refused else 2
    except Exception as exc:
        refused = ks.access_error(exc, broker, security)
        if refused is None:
            raise
        print(f"ccmeter: error: {refused}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ccmeter: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m processor.cli` runs this file as `__main__`; the commands raise `processor.cli.CliError`, a second
    # copy of this module, so run the imported module's `main` for one `CliError` class.
    from processor.cli import main as imported_main

    sys.exit(imported_main())
