"""`ccmeter console`: serve the web console and its HTTP API over a snapshot."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from processor.cli import CliError, RuntimeFailure
from processor.errors import snapshot_error

if TYPE_CHECKING:
    from processor.console.source import ConsoleSource

DEFAULT_BIND, DEFAULT_PORT = "127.0.0.1", 8088


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `console` subcommand."""
    console = subparsers.add_parser(
        "console",
        help="read-only web console and HTTP API over a snapshot",
        description="Serve a read-only web console over a DuckDB snapshot from `ccmeter snapshot`: an accounts "
        "overview (usage, licenses, headroom, the current period's peak and billable overage so far), and per "
        "account its usage, the current period's daily peaks against licenses and allowance, a day at minute "
        "resolution, the users counted at the peak, its dead letters and report exports (CSV, JSON: the same as "
        "`ccmeter report --snapshot`). The same numbers are an HTTP API described by /openapi.json "
        "(docs/openapi.json). Everything covers each account up to its data_through. No authentication: it binds to "
        "the loopback address unless --bind says otherwise. Ctrl-C stops it. Every `ccmeter worker` also serves this "
        "console live, with its API tokens: usage now and the accounts list (docs/running.md).",
        epilog="Example: ccmeter console --snapshot demo-output/ccmeter.duckdb  (then open http://127.0.0.1:8088/)",
    )
    console.add_argument("--snapshot", required=True, metavar="FILE", help="a DuckDB snapshot from `ccmeter snapshot`")
    console.add_argument(
        "--bind", default=DEFAULT_BIND, metavar="ADDRESS", help=f"address to listen on (default {DEFAULT_BIND})"
    )
    console.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT}; 0: any free)"
    )
    console.set_defaults(func=run_console)


def run_console(args: argparse.Namespace) -> int:
    """Open the snapshot, serve until interrupted."""
    from processor.console.source import SnapshotSource, SourceError

    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be from 0 to 65535, not {args.port}")
    try:
        source = SnapshotSource(args.snapshot)
    except SourceError as exc:
        raise snapshot_error(str(exc)) from None
    try:
        asyncio.run(_serve(source, args.bind, args.port))
    finally:
        source.close()
    return 0


async def _serve(source: ConsoleSource, bind: str, port: int) -> None:
    from aiohttp import web

    from processor.console.api import build_app

    runner = web.AppRunner(build_app(source), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, bind, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise RuntimeFailure(f"cannot listen on {bind}:{port}: {exc.strerror or exc}") from None
    host, bound_port = runner.addresses[0][:2]
    shown = f"[{host}]" if ":" in host else host
    name = source.describe()["name"]
    print(f"ccmeter console: serving {name} on http://{shown}:{bound_port}/", flush=True)
    print("  API: /api/accounts, description: /openapi.json; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
