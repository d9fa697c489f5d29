"""`ccmeter alerts deliver`: POST every alert record of the alerts topic to a webhook."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from processor.durations import ONCE_GIVE_UP, flag_seconds, give_up_seconds
from processor.errors import CliError
from processor.kafka_security import access_error, add_security_options, current_security
from processor.options import add_broker, add_prefix, add_quiet, broker_of, deprecated, prefix_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from processor.alerts.deliver import DeliverConfig

POSITIONS = ("earliest", "latest")
OLD_POSITION_VARIABLE = "CCMETER_START"  # read by `--from-position` when it was `--start`; now `simulate`'s first day


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `alerts` command group and its `deliver` subcommand."""
    alerts = subparsers.add_parser(
        "alerts",
        help="deliver the alerts topic to a webhook",
        description="Alert delivery (docs/operators.md, section Alert delivery).",
    )
    commands = alerts.add_subparsers(dest="alerts_command", metavar="COMMAND")
    alerts.set_defaults(func=lambda _args: _usage(alerts))
    deliver = commands.add_parser(
        "deliver",
        help="POST each alert and its resolution to a webhook, once per (alert_id, state)",
        description="Read PREFIX+alerts with its own consumer group and POST each record as JSON (the record plus "
        "`type` alert.raised or alert.resolved) to URL, with the headers `Idempotency-Key: <alert_id>:<state>` and "
        "`X-Ccmeter-Signature: sha256=<hex HMAC-SHA256 of the body>`. An offset is committed only after its POST "
        "succeeded (2xx) or was rejected for good (a 4xx other than 408/429: logged as dead), so a restart resumes "
        "there. Connection errors, timeouts, 408, 429 and 5xx are retried with capped exponential backoff and "
        "jitter, honouring Retry-After. The secret comes from --secret-file or $CCMETER_WEBHOOK_SECRET. SIGTERM or "
        "Ctrl-C stop after the POST in flight. Exit status: 0 done or stopped, 1 runtime failure (receiver down for "
        "--give-up-after, broker or topic missing), 2 usage error.",
        epilog="Example: CCMETER_WEBHOOK_SECRET=... ccmeter alerts deliver --webhook https://ops.example.com/hooks/cc",
    )
    deliver.add_argument("--webhook", required=True, metavar="URL", help="http(s) URL to POST each alert to")
    add_broker(deliver)
    add_prefix(deliver)
    deliver.add_argument(
        "--group",
        default=None,
        metavar="GROUP",
        help="consumer group that keeps the delivery offsets (default: ccmeter-alerts-<12 hex digits of the URL's "
        "SHA-256>, one per webhook)",
    )
    deliver.add_argument(
        "--secret-file",
        default=None,
        metavar="FILE",
        help="file holding the shared signing secret (default: $CCMETER_WEBHOOK_SECRET; one of them is required)",
    )
    deliver.add_argument("--once", action="store_true", help="deliver up to the end offsets seen at start, then exit")
    from_position = deliver.add_argument(
        "--from-position",
        choices=POSITIONS,
        default=None,
        help="where a group without committed offsets starts: every alert kept (earliest) or new ones only "
        "(latest); was --start (default earliest)",
    )
    deprecated(deliver, "--start", from_position)
    post_timeout = deliver.add_argument(
        "--post-timeout", metavar="DURATION", default="10s", help="time for one POST (default 10s)"
    )
    deprecated(deliver, "--timeout", post_timeout)
    deliver.add_argument(
        "--retry-first", metavar="DURATION", default="500ms", help="first wait before a retry (default 500ms)"
    )
    deliver.add_argument(
        "--retry-max", metavar="DURATION", default="30s", help="longest wait between retries (default 30s)"
    )
    deliver.add_argument(
        "--give-up-after",
        metavar="DURATION",
        default=None,
        help=f"exit with status 1 when the receiver has failed this long, e.g. 90s, 10m or never (default: "
        f"{ONCE_GIVE_UP} with --once, else never)",
    )
    add_quiet(deliver)
    add_security_options(deliver)
    deliver.set_defaults(func=run_deliver_command)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("ccmeter").setLevel(logging.WARNING if quiet else logging.INFO)
    for noisy in ("aiokafka", "aiohttp", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def build_config(args: argparse.Namespace) -> DeliverConfig:
    """The DeliverConfig of the parsed flags; CliError for bad values."""
    from processor.alerts.deliver import DeliverConfig
    from processor.alerts.webhook import RetryPolicy, check_url, default_group, load_secret

    try:
        url = check_url(args.webhook.strip())
        prefix = prefix_of(args)
        secret = load_secret(args.secret_file, os.environ)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    first, cap = flag_seconds(args.retry_first, "--retry-first"), flag_seconds(args.retry_max, "--retry-max")
    if first > cap:
        raise CliError(f"--retry-first ({args.retry_first}) is longer than --retry-max ({args.retry_max})")
    return DeliverConfig(
        broker=broker_of(args),
        prefix=prefix,
        url=url,
        secret=secret,
        group=args.group or default_group(url),
        once=args.once,
        timeout=flag_seconds(args.post_timeout, "--post-timeout"),
        policy=RetryPolicy(first, cap),
        give_up_seconds=give_up_seconds(args.give_up_after, args.once),
        start=from_position_of(args.from_position, os.environ),
    )


def from_position_of(given: str | None, env: Mapping[str, str]) -> str:
    """`--from-position` (or `$CCMETER_FROM_POSITION`), else the deprecated `$CCMETER_START` when it holds a
    position (it is `simulate`'s first day otherwise), else earliest."""
    if given is not None:
        return given
    old = env.get(OLD_POSITION_VARIABLE, "").strip().lower()
    if old in POSITIONS:
        warning = f"${OLD_POSITION_VARIABLE} is deprecated for `alerts deliver`, use $CCMETER_FROM_POSITION"
        print(f"ccmeter: warning: {warning}", file=sys.stderr)
        return old
    return POSITIONS[0]


def run_deliver_command(args: argparse.Namespace) -> int:
    """`ccmeter alerts deliver`."""
    from aiokafka.errors import KafkaError

    from processor.alerts.deliver import DeliveryError, run_deliver

    config = build_config(args)
    _setup_logging(args.quiet)
    try:
        stats = run_deliver(config)
    except DeliveryError as exc:
        print(f"ccmeter alerts: {exc}", file=sys.stderr)
        return 1
    except (KafkaError, OSError) as exc:
        refused = access_error(exc, config.broker, current_security())
        if refused is not None:
            print(f"ccmeter alerts: {refused}", file=sys.stderr)
            return 1
        reason = "cannot connect" if "Unable to bootstrap" in str(exc) else type(exc).__name__
        print(f"ccmeter alerts: broker {config.broker} failed: {reason}", file=sys.stderr)
        return 1
    print(f"ccmeter alerts: {stats.summary()}", file=sys.stderr)
    return 0
