"""The console and its API served live by a worker (`ccmeter worker`), from what the worker holds in memory.

A worker holds, per account of the partitions it owns, the fold's state: the plan in effect, the users counted now
and today's open peak window, not the account's history. So it serves live:

- `GET /api/accounts/{id}/usage`: the live query's numbers (provisional up to `as_of`, as `GET /accounts/{id}/usage`)
  in the console's `Usage` shape (with `today`, `plan`, `billable_rule`); routed to the worker that owns the account
  as live queries are (processor/worker/peers.py): 404 only when every partition was checked, else 503;
- `GET /api/accounts`: the accounts the caller's token may read (operator: all), merged from every worker of the
  group; the current period's dates are given, its peak and billable overage are null (no period history). 503 when
  some partition was not covered (a rebalance, a peer that did not answer);
- `/`, `/static/...` and `/openapi.json` without a token (they show no account data; the page asks for a token).

The report, changes, minutes, users and dead-letters endpoints need the account's history or the dead-letters topic:
501 with a line naming the snapshot console (`ccmeter snapshot`, then `ccmeter console --snapshot FILE`). Every
`/api` endpoint checks the bearer token first (processor/web/auth.py): 401 without a valid one, 403 for an account
the token may not read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from processor.console.answers import grace_rule, plan_json
from processor.console.api import API, STATIC_DIR, error_response
from processor.console.openapi import openapi_document
from processor.core.periods import local_date
from processor.reports.render import local_time
from processor.snapshots.history import resolve_period
from processor.web.auth import AUTHORIZATION, Access, Denial, header
from processor.worker.peers import (
    FORWARDED_HEADER,
    REBALANCING,
    RETRY_AFTER_S,
    Answer,
    Local,
    PeerRouter,
)
from processor.worker.state import account_header, is_clock_key
from schemas.events import format_ms

if TYPE_CHECKING:
    from processor.core.fold import LiveView
    from processor.worker.runner import StreamProcessor

YIELD_EVERY = 200  # accounts read between two turns of the event loop (the pump shares it)
NOT_LIVE = (
    "{what} is not served live: a worker holds no account history (nor dead letters); use the snapshot console "
    "(`ccmeter snapshot`, then `ccmeter console --snapshot FILE`)"
)
NOT_LIVE_PATHS = {
    "report": f"{API}/accounts/{{account_id}}/report",
    "changes": f"{API}/accounts/{{account_id}}/changes",
    "minutes": f"{API}/accounts/{{account_id}}/days/{{date}}/minutes",
    "users": f"{API}/accounts/{{account_id}}/users",
    "dead letters": f"{API}/accounts/{{account_id}}/dead-letters",
}


class WorkerLike(Protocol):
    """What the live console reads of the worker (processor/app.py `Worker`)."""

    access: Access
    router: PeerRouter
    processor: StreamProcessor

    def ready(self) -> bool: ...
    def assigned(self) -> set[int]: ...
    def peer_urls(self) -> list[str]: ...
    def all_partitions(self) -> range: ...


def _ts(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)


def live_usage(view: LiveView) -> dict[str, Any]:
    """The console's `Usage` body from a worker's live view: usage, headroom and today's peak as of `as_of`
    (provisional: events still inside the lateness window count), `data_through` what is final."""
    plan = view.plan
    as_of, through = _ts(view.as_of_ms), _ts(view.data_through_ms)
    return {
        "account_id": view.account_id,
        "usage": view.usage,
        "licenses": view.licenses,
        "overage_allowance": view.overage_allowance,
        "headroom": view.headroom,
        "today": None if view.as_of_ms is None else local_date(view.as_of_ms, plan.timezone).isoformat(),
        "today_peak": view.today_peak,
        "today_peak_at": _ts(view.today_peak_at_ms),
        "as_of": as_of,
        "data_through": through,
        "data_through_local": local_time(through, plan.timezone),
        "plan": plan_json(plan),
        "billable_rule": grace_rule(plan),
    }


def live_row(view: LiveView) -> dict[str, Any]:
    """One line of the accounts overview from a live view: usage now and the current period's dates; the period's
    peak, billable overage and over-allowance are null (a worker holds no period history)."""
    usage = live_usage(view)
    row = {key: usage[key] for key in ("account_id", "usage", "licenses", "overage_allowance", "headroom")}
    row["data_through"] = usage["data_through"]
    row["timezone"] = view.plan.timezone
    period = None if view.data_through_ms is None else resolve_period("current", view.plan, view.data_through_ms)
    row.update(
        {
            "period_from": period[0].isoformat() if period else None,
            "period_to": period[1].isoformat() if period else None,
            "peak_usage": None,
            "peak_at": None,
            "billable_overage": None,
            "over_allowance": None,
            "complete": False,
        }
    )
    return row


def live_source(name: str, partitions: Iterable[int], workers: int) -> dict[str, Any]:
    """The overview's `source` when served live: the app id, the partitions covered and how many workers answered."""
    return {"kind": "live", "name": name, "partitions": sorted(set(partitions)), "workers": workers}


def merge_overviews(
    name: str,
    own: Sequence[dict[str, Any]],
    mine: Iterable[int],
    peers: Sequence[tuple[str, int, Any]],
    total: Iterable[int],
) -> Answer:
    """The accounts overview from this worker's rows (`own`, of partitions `mine`) and the peers' forwarded replies
    `(url, status, body)`: 200 with every row once, sorted, when all `total` partitions were covered, else 503."""
    rows = {row["account_id"]: row for row in own}
    covered = set(mine)
    failures = []
    for url, status, body in peers:
        source = body.get("source") if isinstance(body, dict) else None
        if status != 200 or not isinstance(source, dict) or not isinstance(body.get("accounts"), list):
            reason = body.get("reason") if isinstance(body, dict) else None
            failures.append(f"{url} answered {status}" + (f": {reason}" if isinstance(reason, str) else ""))
            continue
        covered.update(source.get("partitions") or ())
        for row in body["accounts"]:
            rows.setdefault(row["account_id"], row)
    missing = sorted(set(total) - covered)
    if failures or missing:
        reason = "; ".join(failures) or f"partitions {missing} are not owned by any worker (rebalance in progress)"
        return Answer(503, {"error": "live answer unavailable, try again", "reason": reason})
    accounts = [rows[account] for account in sorted(rows)]
    return Answer(200, {"source": live_source(name, covered, 1 + len(peers)), "accounts": accounts})


def _deny(denied: Denial) -> web.Response:
    return web.json_response(denied.body, status=denied.status, headers=denied.headers or None)


def _answer(answer: Answer) -> web.Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if answer.status == 503 else None
    return web.json_response(answer.body, status=answer.status, headers=headers)


class LiveConsole:
    """The console API's handlers on a worker (see the module docstring)."""

    def __init__(self, worker: WorkerLike, name: str) -> None:
        self.worker = worker
        self.name = name  # the app id, shown as the source's name

    # -- access ----------------------------------------------------------------------------------------------------

    def reader(self, headers: Mapping[str, str]) -> Denial | Callable[[str], bool]:
        """Which accounts the request's token may read (a predicate), or the 401 to answer."""
        access = self.worker.access
        denied = access.check(headers, None)
        if denied is None:  # an operator token, or --web-insecure-no-auth
            return lambda account: True
        if denied.status != 403:
            return denied
        entry = access.identify(header(headers, AUTHORIZATION))
        assert entry is not None  # 403 comes only after a valid token
        return entry.may_read

    # -- what this worker holds ------------------------------------------------------------------------------------

    def _view(self, account_id: str, mine: frozenset[int]) -> LiveView | None:
        from processor.app import own_view

        return own_view(self.worker.processor, account_id, mine)

    def local_usage(self, account_id: str) -> Local:
        """This worker's part of a live usage query (as `Worker.local_live`, in the console's shape)."""
        if not self.worker.ready():
            return Local(False, frozenset())
        mine = frozenset(self.worker.assigned())
        view = self._view(account_id, mine)
        return Local(True, mine, live_usage(view) if view is not None else None)

    async def local_rows(self, may_read: Callable[[str], bool]) -> tuple[frozenset[int], list[dict[str, Any]]]:
        """The overview rows of the accounts of this worker's partitions that the token may read."""
        mine = frozenset(self.worker.assigned())
        store = self.worker.processor.store
        accounts = []
        for key, value in list(store.items()):
            if is_clock_key(key) or value is None:
                continue
            try:
                account, partition = key.decode(), account_header(value)[0]
            except (UnicodeError, ValueError, TypeError):
                continue
            if partition in mine and may_read(account):
                accounts.append(account)
        rows = []
        for index, account in enumerate(sorted(accounts)):
            if index and index % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            view = self._view(account, mine)
            if view is not None:
                rows.append(live_row(view))
        return mine, rows

    # -- handlers --------------------------------------------------------------------------------------------------

    async def usage(self, request: web.Request) -> web.Response:
        """GET /api/accounts/{account_id}/usage, answered here or by the owning worker."""
        account = request.match_info["account_id"]
        denied = self.worker.access.check(request.headers, account)
        if denied is not None:
            return _deny(denied)
        forwarded = FORWARDED_HEADER in request.headers
        local = self.local_usage(account)
        peers = [] if forwarded or local.body is not None else self.worker.peer_urls()
        authorization = request.headers.get(AUTHORIZATION)
        answer = await self.worker.router.answer(
            account, str(request.rel_url), forwarded, local, peers, self.worker.all_partitions(), authorization
        )
        return _answer(answer)

    async def accounts(self, request: web.Request) -> web.Response:
        """GET /api/accounts: the accounts the token may read, from every worker of the group."""
        may_read = self.reader(request.headers)
        if isinstance(may_read, Denial):
            return _deny(may_read)
        if not self.worker.ready():
            return _answer(Answer(503, {"error": "live answer unavailable, try again", "reason": REBALANCING}))
        mine, rows = await self.local_rows(may_read)
        if FORWARDED_HEADER in request.headers:
            return _answer(Answer(200, {"source": live_source(self.name, mine, 1), "accounts": rows}))
        authorization = request.headers.get(AUTHORIZATION)
        peers = self.worker.peer_urls()
        replies = await asyncio.gather(*(self._ask(url, str(request.rel_url), authorization) for url in peers))
        return _answer(merge_overviews(self.name, rows, mine, replies, self.worker.all_partitions()))

    async def _ask(self, base_url: str, path: str, authorization: str | None) -> tuple[str, int, Any]:
        """(url, status, JSON body) of a forwarded GET to one peer; never raises (status 0 when unreachable)."""
        reply = await self.worker.router.ask(base_url, path, authorization)
        if reply.body is not None:
            return base_url, 200, reply.body
        return base_url, 0, {"reason": reply.failure or "no overview"}

    def not_live(self, what: str) -> Callable[[web.Request], Any]:
        """A handler answering 501 for an endpoint that needs history, after the token check."""

        async def handler(request: web.Request) -> web.Response:
            denied = self.worker.access.check(request.headers, request.match_info["account_id"])
            if denied is not None:
                return _deny(denied)
            return error_response(501, NOT_LIVE.format(what=what.capitalize()))

        return handler

    async def openapi(self, request: web.Request) -> web.Response:
        """GET /openapi.json (no token: it describes the API, no account data)."""
        return web.json_response(openapi_document())

    async def index(self, request: web.Request) -> web.FileResponse:
        """GET /: the web app (it asks for a token and sends it with every API request)."""
        return web.FileResponse(STATIC_DIR / "index.html")

    def routes(self) -> list[tuple[str, Callable[[web.Request], Any]]]:
        """(path, GET handler) of every page and endpoint (the static files are added by `mount`)."""
        routes: list[tuple[str, Callable[[web.Request], Any]]] = [
            ("/", self.index),
            ("/openapi.json", self.openapi),
            (f"{API}/accounts", self.accounts),
            (f"{API}/accounts/{{account_id}}/usage", self.usage),
        ]
        routes.extend((path, self.not_live(what)) for what, path in NOT_LIVE_PATHS.items())
        return routes


def mount(app: Any, worker: WorkerLike, name: str) -> LiveConsole:
    """Serve the console on a Faust app's web server: a view per route, and the static files under /static/."""
    import faust

    console = LiveConsole(worker, name)
    for index, (path, handler) in enumerate(console.routes()):

        async def get(view: faust.web.View, request: web.Request, _handler: Any = handler, **_: Any) -> Any:
            return await _handler(request)

        view = type(f"Console{index}", (faust.web.View,), {"get": get, "__doc__": handler.__doc__})
        app.page(path, name=f"console-{index}")(view)
    app.web.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    return console
