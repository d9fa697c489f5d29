"""The console's HTTP API (aiohttp handlers, described by `processor/console/openapi.py`) and its web app.

The handlers hold no global state: `ConsoleApi(source)` binds them to one `ConsoleSource`, and `add_routes` puts them
on any aiohttp router, so middleware such as authentication can wrap them. A worker serves the same paths and shapes
from its live state with its tokens (processor/console/live.py). Work that reads or computes runs in a thread, so a
large snapshot does not stall the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

from aiohttp import web

from processor.cli import CliError
from processor.console import answers
from processor.console.openapi import openapi_document
from processor.console.source import ConsoleSource
from processor.snapshots.history import AccountHistory
from schemas.events import parse_timestamp, to_ms

STATIC_DIR = Path(__file__).parent / "static"
API = "/api"
DEFAULT_LETTERS, MAX_LETTERS = 20, 1000
JSON_TYPE = "application/json"


class HttpError(Exception):
    """An answer other than 200: status and one line (served as `{"error": line}`)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str) -> web.Response:
    """`{"error": message}` with `status`."""
    return web.json_response({"error": message}, status=status)


def _instant(request: web.Request, name: str) -> int:
    text = request.query.get(name)
    if text is None:
        raise HttpError(400, f"query parameter {name!r} is required (an RFC 3339 instant like 2026-11-02T09:00:00Z)")
    try:
        return to_ms(parse_timestamp(text))
    except ValueError:
        raise HttpError(400, f"{name} must be an RFC 3339 instant like 2026-11-02T09:00:00Z, not {text!r}") from None


def _date(text: str, name: str) -> date:
    try:
        value = date.fromisoformat(text)
    except ValueError:
        raise HttpError(400, f"{name} must be a date like 2026-11-02, not {text!r}") from None
    if not date(1970, 1, 2) <= value <= date(9998, 12, 30):
        raise HttpError(400, f"{name} must be between 1970-01-02 and 9998-12-30, not {text}")
    return value


def _limit(request: web.Request) -> int:
    text = request.query.get("limit", str(DEFAULT_LETTERS))
    if not text.isdigit() or not 1 <= int(text) <= MAX_LETTERS:
        raise HttpError(400, f"limit must be a whole number from 1 to {MAX_LETTERS}, not {text!r}")
    return int(text)


class ConsoleApi:
    """The API's handlers over one source."""

    def __init__(self, source: ConsoleSource) -> None:
        self.source = source

    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Any]]]:
        """(method, path, handler) of every API endpoint (paths as in the OpenAPI document)."""
        return [
            ("GET", "/openapi.json", self.openapi),
            ("GET", f"{API}/accounts", self.accounts),
            ("GET", f"{API}/accounts/{{account_id}}/usage", self.usage),
            ("GET", f"{API}/accounts/{{account_id}}/report", self.report),
            ("GET", f"{API}/accounts/{{account_id}}/changes", self.changes),
            ("GET", f"{API}/accounts/{{account_id}}/days/{{date}}/minutes", self.minutes),
            ("GET", f"{API}/accounts/{{account_id}}/users", self.users),
            ("GET", f"{API}/accounts/{{account_id}}/dead-letters", self.dead_letters),
        ]

    async def _run(self, fn: Callable[..., Any], *args: Any) -> web.StreamResponse:
        try:
            result = await asyncio.to_thread(fn, *args)
        except HttpError as exc:
            return error_response(exc.status, str(exc))
        except (answers.AnswerError, CliError) as exc:
            return error_response(400, str(exc))
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result)

    def _history(self, request: web.Request) -> AccountHistory:
        account = request.match_info["account_id"]
        history = self.source.history(account)
        if history is None:
            raise HttpError(404, f"account {account!r} not found")
        return history

    async def openapi(self, request: web.Request) -> web.Response:
        """GET /openapi.json."""
        return web.json_response(openapi_document())

    async def accounts(self, request: web.Request) -> web.StreamResponse:
        """GET /api/accounts: every account's line of the overview."""

        def row(history: AccountHistory) -> dict[str, Any]:
            dates = answers.period_dates(history, "current")
            report = self.source.report(history, *dates)[0] if dates is not None else None
            return answers.account_row(history, report)

        def answer() -> dict[str, Any]:
            rows = [row(history) for history in self.source.histories().values()]
            return {"source": self.source.describe(), "accounts": rows}

        return await self._run(answer)

    async def usage(self, request: web.Request) -> web.StreamResponse:
        """GET /api/accounts/{account_id}/usage: usage now (as of data_through)."""
        return await self._run(lambda: answers.usage_now(self._history(request)))

    async def report(self, request: web.Request) -> web.StreamResponse:
        """GET /api/accounts/{account_id}/report: the licenses usage report, as `ccmeter report --snapshot`."""
        return await self._run(self._report, request)

    def _report(self, request: web.Request) -> web.Response:
        from processor.cli.report import account_dates, check_range_flags
        from processor.reports.render import render_report

        query = request.query
        fmt = query.get("format", "json")
        if fmt not in ("json", "csv"):
            raise HttpError(400, f"format must be json or csv, not {fmt!r}")
        args = argparse.Namespace(period=query.get("period"), from_date=query.get("from"), to_date=query.get("to"))
        if args.period is None and args.from_date is None and args.to_date is None:
            args.period = "current"
        check_range_flags(args)
        history = self._history(request)
        report, restatement = self.source.report(history, *account_dates(args, history))
        text = render_report(report, fmt, restatement)
        if fmt == "json":
            return web.Response(text=text, content_type=JSON_TYPE)
        name = f"{report.account_id}-{report.from_}-{report.to}.csv".replace('"', "_")
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return web.Response(text=text, content_type="text/csv", headers=headers)

    async def changes(self, request: web.Request) -> web.StreamResponse:
        """GET /api/accounts/{account_id}/changes?from=&to=: usage change points (for charts)."""

        def answer() -> dict[str, Any]:
            start, end = _instant(request, "from"), _instant(request, "to")
            return answers.changes_between(self._history(request), start, end)

        return await self._run(answer)

    async def minutes(self, request: web.Request) -> web.StreamResponse:
        """GET /api/accounts/{account_id}/days/{date}/minutes: one local day at minute resolution."""

        def answer() -> dict[str, Any]:
            day = _date(request.match_info["date"], "date")
            return answers.day_minutes(self._history(request), day)

        return await self._run(answer)

    async def users(self, request: web.Request) -> web.StreamResponse:
        """GET /api/accounts/{account_id}/users?at=: the users counted at an instant."""

        def answer() -> dict[str, Any]:
            at = _instant(request, "at")
            return answers.users_at(self._history(request), at)

        return await self._run(answer)

    async def dead_letters(self, request: web.Request) -> web.StreamResponse:
        """GET /api/accounts/{account_id}/dead-letters?limit=: the account's last dead letters."""

        def answer() -> dict[str, Any]:
            limit = _limit(request)
            account = request.match_info["account_id"]
            found = self.source.dead_letters(account, limit)
            if found is None:
                raise HttpError(404, f"account {account!r} not found")
            total, letters = found
            return {"account_id": account, "total": total, "letters": letters}

        return await self._run(answer)


def add_routes(router: web.UrlDispatcher, source: ConsoleSource) -> ConsoleApi:
    """Put the API's endpoints for `source` on `router`; returns the bound handlers."""
    api = ConsoleApi(source)
    for method, path, handler in api.routes():
        router.add_route(method, path, handler)
    return api


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


def build_app(source: ConsoleSource, middlewares: Iterable[Any] = ()) -> web.Application:
    """The console: the API over `source`, and the web app (index page and static files)."""
    app = web.Application(middlewares=list(middlewares))
    add_routes(app.router, source)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return app
