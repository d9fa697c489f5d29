"""The `ccmeter` console command: this package holds every command group, one module each (`simulate`, `worker`,
`brokers`, `topics`, `snapshots`, `alerts`, `console`, `web`, `replay`), each registering its own parser.

Exit status: 0 success, 1 runtime failure (broker unreachable, topic missing, refused access, a failed step),
2 usage error (unknown flag, bad flag or variable value, unreadable input), 130 interrupted. Errors are one line on
stderr: `ccmeter: error: ...`; the types are in processor/errors.py. Every option also reads a `CCMETER_*` variable
(processor/options.py, `add_variables` and `EnvParser`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import sys
from collections.abc import Iterator, Sequence

from processor.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_USAGE, CcmeterError, CliError, RuntimeFailure
from processor.options import EnvParser, add_variables

__all__ = ["COMMAND_MODULES", "CliError", "RuntimeFailure", "build_parser", "main", "version"]

# Modules that expose `register(subparsers)`; each adds its subcommands and sets `func` on them.
COMMAND_MODULES: tuple[str, ...] = (
    "processor.cli.simulate",
    "processor.cli.report",
    "processor.cli.worker",
    "processor.cli.brokers",
    "processor.cli.snapshots",
    "processor.cli.alerts",
    "processor.cli.console",
    "processor.cli.web",
    "processor.cli.replay",
)
# Commands that configure their own logging of the Kafka client (the worker's log is Faust's).
OWN_KAFKA_LOGGING = frozenset({"worker"})


def version() -> str:
    """The installed ccmeter version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("ccmeter")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


EPILOG = """\
variables:
  Every option can also be set by a CCMETER_* variable named after its flag: --max-record-bytes is
  $CCMETER_MAX_RECORD_BYTES; a switch takes 1/true/yes/on or 0/false/no/off; an empty one is unset.
  The flag wins over the variable, the variable over the default. `ccmeter COMMAND --help` names
  each option's variable; docs/running.md lists them and the few options without one.

exit status:
  0    success
  1    runtime failure: broker unreachable, topic missing, access refused, a busy or fenced
       consumer group, state or a file an earlier step writes missing, a failed step or write
  2    usage error: unknown flag, bad flag or variable value, unreadable or invalid input file,
       conflicting options
  130  interrupted
"""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered subcommand, each option with its `CCMETER_*` variable."""
    parser = EnvParser(
        prog="ccmeter",
        description="Meter concurrent license usage of contact-center accounts from session events.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")  # EnvParsers too
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    add_variables(parser)
    return parser


class _DropUnclosedClients(logging.Filter):
    """Drops asyncio's "Unclosed AIOKafka..." reports of clients a failed start left behind."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Unclosed AIOKafka" not in record.getMessage()


def quiet_kafka_client() -> None:
    """Silence aiokafka's connection-retry logging: the commands report an unreachable broker in one line."""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _DropUnclosedClients) for f in asyncio_log.filters):
        asyncio_log.addFilter(_DropUnclosedClients())


@contextlib.contextmanager
def kafka_client_quieted() -> Iterator[None]:
    """`quiet_kafka_client` for a block only: the worker's checks before it runs (its log shows the client's
    warnings once it runs)."""
    kafka_log = logging.getLogger("aiokafka")
    level = kafka_log.level
    quiet_kafka_client()
    try:
        yield
    finally:
        kafka_log.setLevel(level)


def _fail(message: object, status: int) -> int:
    print(f"ccmeter: error: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    if args.command not in OWN_KAFKA_LOGGING:
        quiet_kafka_client()
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
        return _fail(exc, EXIT_FAILURE)
    except ks.SecurityConfigError as exc:
        return _fail(exc, EXIT_USAGE)
    except CcmeterError as exc:
        refused = ks.access_error(exc, broker, security)
        return _fail(refused, EXIT_FAILURE) if refused else _fail(exc, exc.exit_code)
    except KeyboardInterrupt:
        print("ccmeter: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        refused = ks.access_error(exc, broker, security)
        if refused is not None:
            return _fail(refused, EXIT_FAILURE)
        if _operational(exc):  # a broker or file-system failure a command did not wrap: still one line
            return _fail(_describe(exc), EXIT_FAILURE)
        raise


def _operational(exc: BaseException) -> bool:
    from aiokafka.errors import KafkaError

    from processor.worker.errors import CheckpointError

    return isinstance(exc, KafkaError | OSError | TimeoutError | CheckpointError)


def _describe(exc: BaseException) -> str:
    text = exc.line() if hasattr(exc, "line") else str(exc)
    name = type(exc).__name__
    return text if text and name in text else f"{name}: {text}" if text else name
