"""`ccmeter simulate`: write a realistic, deterministic stream of session events to a `.jsonl` or `.parquet` file.

The generator lives in `processor.simulation`; this module is the command line and re-exports its API.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any

from processor.errors import CliError, RuntimeFailure
from processor.options import add_duration, add_quiet, deprecated
from processor.simulation import (
    PROFILE_CHOICES,
    SimConfig,
    SimRecord,
    SimStats,
    iter_lines,
    iter_records,
    output_format,
    simulate,
    write_events,
)

__all__ = ["SimConfig", "SimRecord", "SimStats", "iter_lines", "iter_records", "register", "simulate", "write_events"]


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a rate between 0 and 1, not {text}")
    return value


def _day(text: str) -> date:
    try:
        value = date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from exc
    return value


def register(subparsers: Any) -> None:
    """Add the `simulate` subcommand."""
    parser = subparsers.add_parser(
        "simulate",
        help="write simulated session events to a .jsonl or .parquet file",
        description=(
            "Simulate contact-center traffic (agents on shifts with heartbeats, breaks, reconnects and crashes; "
            "supervisors in the portal; API integrations; plans) and write it in arrival order. "
            "The same arguments always give the same bytes."
        ),
    )
    parser.add_argument("--accounts", type=int, metavar="N", default=3, help="number of accounts (default 3)")
    parser.add_argument("--agents", type=int, metavar="N", default=20, help="agents per account (default 20)")
    parser.add_argument(
        "--days", type=int, metavar="N", default=7, help="local days to simulate per account (default 7)"
    )
    parser.add_argument("--seed", type=int, metavar="N", default=0, help="random seed (default 0)")
    parser.add_argument("--out", required=True, metavar="FILE", help="output file, .jsonl or .parquet")
    parser.add_argument(
        "--start",
        type=_day,
        metavar="YYYY-MM-DD",
        default=date(2026, 11, 1),
        help="first local day (default 2026-11-01)",
    )
    parser.add_argument(
        "--duplicates",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="share of events re-sent later as identical copies",
    )
    parser.add_argument(
        "--out-of-order",
        type=_rate,
        default=0.0,
        metavar="RATE",
        help="share of events that arrive late (by at most 5 minutes of event time)",
    )
    parser.add_argument(
        "--orphans", type=_rate, default=0.0, metavar="RATE", help="orphan sign-outs / session ends per event"
    )
    parser.add_argument(
        "--malformed", type=_rate, default=0.0, metavar="RATE", help="malformed lines per event (.jsonl only)"
    )
    heartbeat = add_duration(
        parser, "--desktop-heartbeat", default="60s", help="desktop heartbeat period, whole seconds"
    )
    deprecated(parser, "--heartbeat-seconds", heartbeat)
    parser.add_argument(
        "--profile",
        choices=PROFILE_CHOICES,
        default="mixed",
        help="account shape: within, spike, overage, or mixed (account i gets profile i mod 3)",
    )
    add_quiet(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `ccmeter simulate`."""
    if args.desktop_heartbeat != int(args.desktop_heartbeat):
        raise CliError(f"--desktop-heartbeat must be whole seconds, not {args.desktop_heartbeat:g}s")
    config = SimConfig(
        accounts=args.accounts,
        agents=args.agents,
        days=args.days,
        seed=args.seed,
        start=args.start,
        duplicates=args.duplicates,
        out_of_order=args.out_of_order,
        orphans=args.orphans,
        malformed=args.malformed,
        heartbeat_seconds=int(args.desktop_heartbeat),
        profile=args.profile,
    )
    try:
        config.validate()
        if output_format(args.out) == ".parquet" and config.malformed > 0:
            raise ValueError("--malformed applies to .jsonl output only (a Parquet file has no malformed rows)")
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    from tqdm import tqdm

    with tqdm(
        total=config.accounts * config.days,
        unit="account-day",
        desc="simulate",
        disable=args.quiet or not sys.stderr.isatty(),
        file=sys.stderr,
        leave=False,
    ) as bar:
        try:
            stats = write_events(args.out, config, progress=bar.update)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        except OSError as exc:
            raise RuntimeFailure(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    print(f"ccmeter simulate: {stats.summary()}")
    return 0
