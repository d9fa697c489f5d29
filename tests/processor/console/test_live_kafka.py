"""The console served live by two workers on a real broker: the same JSON shapes as the snapshot console, the same
numbers as the snapshot console's answers over the batch engine's history for the same events (cut where the live
answer is), routing to the owning worker, token scopes, and the web app in Chromium showing an account's live usage.

Four simulated accounts, the first 55 % of a day (mid-day: usage is open), published with the default partitioner
to a 4-partition topic that two workers share; every worker gets the same tokens file (an operator token and one
token per account).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from playwright.sync_api import sync_playwright

from processor.batch.engine import BatchEngine
from processor.cli.report import engine_history
from processor.cli.simulate import SimConfig, iter_lines
from processor.console import answers
from processor.console.openapi import openapi_document
from processor.snapshots.history import AccountHistory
from processor.topics import EVENTS, create_topics, topic_names
from processor.web.tokens import new_token, token_line
from schemas.events import decode, parse_timestamp, to_ms
from tests.processor.worker.support import (
    SETTINGS,
    WorkerProcess,
    partition_of,
    produce,
    settled,
    start_worker,
    write_jsonl,
)

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(420)]
PARTITIONS = 4
CHROMIUM = Path("/usr/bin/chromium")
CUT_FIELDS = ("as_of", "data_through", "data_through_local")  # where a live answer and a snapshot's are cut
NOT_LIVE = "use the snapshot console (`ccmeter snapshot`, then `ccmeter console --snapshot FILE`)"


@dataclass
class Live:
    """Two settled workers that applied every event, the batch engine over the same events, the tokens."""

    workers: list[WorkerProcess]
    engine: BatchEngine
    accounts: list[str]
    operator: str
    scoped: dict[str, str]  # account -> a token for that account only
    owner: dict[int, int]  # partition -> index of the worker that owns it

    def get(self, index: int, path: str, token: str | None) -> tuple[int, Any]:
        return self.workers[index].get(path, timeout=10.0, token=token)

    def logs(self) -> str:
        return "\n".join(f"--- worker on port {w.port}:\n{w.tail(60)}" for w in self.workers)

    def history(self, account: str, through_ms: int | None) -> AccountHistory:
        """The batch engine's history of `account`, cut at `through_ms` (as a snapshot with that data_through)."""
        return dataclasses.replace(engine_history(self.engine, account), data_through_ms=through_ms)

    def home(self, account: str) -> int:
        """Index of the worker that owns the account's partition (the producer used the default partitioner)."""
        return self.owner[partition_of(account.encode(), PARTITIONS)]


def history_lines() -> list[bytes]:
    config = SimConfig(accounts=4, agents=4, days=1, seed=5, duplicates=0.02)
    lines = [line.encode() for line in iter_lines(config)]
    return lines[: len(lines) * 55 // 100]


def last_events(lines: list[bytes]) -> dict[str, int]:
    latest: dict[str, int] = {}
    for line in lines:
        event = decode(line)
        if not hasattr(event, "reason"):
            latest[event.account_id] = max(latest.get(event.account_id, event.at_ms), event.at_ms)
    return latest


def ms(text: str) -> int:
    return to_ms(parse_timestamp(text))


def check_shape(body: object, schema_name: str) -> None:
    """`body` matches the OpenAPI document's `components/schemas/<schema_name>`."""
    document = openapi_document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, f"{schema_name}: {errors[0].message} at {list(errors[0].absolute_path)}: {body}"


@pytest.fixture(scope="module")
def live(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("live-console")
    prefix = f"t.console-live.{uuid.uuid4().hex[:8]}."
    asyncio.run(create_topics(broker, prefix, PARTITIONS, 1))
    lines = history_lines()
    last = last_events(lines)
    accounts = sorted(last)
    engine = BatchEngine(SETTINGS)
    engine.load(write_jsonl(root / "events.jsonl", lines))
    operator = new_token()
    scoped = {account: new_token() for account in accounts}
    tokens = root / "tokens.txt"
    entries = [token_line(operator)] + [token_line(token, [account]) for account, token in scoped.items()]
    tokens.write_text("\n".join(entries) + "\n")
    app_id = f"app-{uuid.uuid4().hex[:8]}"
    workers = [
        start_worker(broker, prefix, app_id, root / name, "--web-tokens-file", str(tokens)) for name in ("a", "b")
    ]
    try:
        owner = settled(workers, PARTITIONS)
        produce(broker, topic_names(prefix)[EVENTS], lines)
        state = Live(workers, engine, accounts, operator, scoped, owner)
        deadline = time.monotonic() + 150
        waiting = ["not asked yet"]
        while waiting and time.monotonic() < deadline:
            waiting = []
            for account in accounts:
                replies = [state.get(i, f"/api/accounts/{account}/usage", operator) for i in range(2)]
                caught_up = all(
                    s == 200 and body["as_of"] and ms(body["as_of"]) >= last[account] for s, body in replies
                )
                if not caught_up or replies[0] != replies[1]:
                    waiting.append(f"{account}: {replies}")
            if waiting:
                time.sleep(0.5)
        assert not waiting, "\n".join(waiting) + "\n" + state.logs()
        yield state
    finally:
        for worker in workers:
            worker.stop()
        engine.close()


def test_live_usage_is_the_snapshot_answer_at_the_same_cut_from_every_worker(live: Live) -> None:
    """Each account, asked from both workers (one answers itself, the other asks it): equal bodies in the console's
    Usage shape, equal to the snapshot console's answer over the batch engine's history cut just after `as_of`
    (everything the live view applied), and to the worker's own live query in the fields they share."""
    for account in live.accounts:
        replies = [live.get(i, f"/api/accounts/{account}/usage", live.operator) for i in range(2)]
        assert replies[0] == replies[1], f"{account}: {replies}\n{live.logs()}"
        status, body = replies[0]
        assert status == 200, f"{account}: {body}\n{live.logs()}"
        check_shape(body, "Usage")
        expected = answers.usage_now(live.history(account, ms(body["as_of"]) + 1))
        assert {k: v for k, v in body.items() if k not in CUT_FIELDS} == {
            k: v for k, v in expected.items() if k not in CUT_FIELDS
        }, f"{account}: live {body}\nbatch engine {expected}"
        assert body["data_through"] is not None and ms(body["data_through"]) <= ms(body["as_of"]) + 1
        # The plan is also the one in effect at data_through (the simulated plans precede every other event).
        assert body["plan"] == answers.plan_json(answers.current_plan(live.history(account, ms(body["data_through"]))))
        status, query = live.get(live.home(account), f"/accounts/{account}/usage", live.operator)
        assert status == 200 and {k: body[k] for k in query} == query, f"{account}: {query} / {body}"
    assert any(live.get(0, f"/api/accounts/{a}/usage", live.operator)[1]["usage"] > 0 for a in live.accounts)


def test_the_overview_merges_every_workers_accounts(live: Live) -> None:
    """`/api/accounts` from either worker: every account once (both workers' partitions), live rows whose usage is
    the usage endpoint's and whose period is the snapshot console's for the same data_through."""
    for index in range(2):
        status, body = live.get(index, "/api/accounts", live.operator)
        assert status == 200, f"{body}\n{live.logs()}"
        check_shape(body["source"], "Source")
        assert body["source"] == {
            "kind": "live",
            "name": body["source"]["name"],
            "partitions": list(range(PARTITIONS)),
            "workers": 2,
        }
        assert [row["account_id"] for row in body["accounts"]] == live.accounts
        for row in body["accounts"]:
            check_shape(row, "AccountRow")
            account = row["account_id"]
            usage = live.get(index, f"/api/accounts/{account}/usage", live.operator)[1]
            for key in ("usage", "licenses", "overage_allowance", "headroom", "data_through"):
                assert row[key] == usage[key], f"{account} {key}: {row} / {usage}"
            period = answers.period_dates(live.history(account, ms(row["data_through"])), "current")
            assert period is not None and (row["period_from"], row["period_to"]) == tuple(d.isoformat() for d in period)
            assert row["peak_usage"] is None and row["billable_overage"] is None and row["complete"] is False


def test_tokens_scope_every_endpoint(live: Live) -> None:
    account, other = live.accounts[0], live.accounts[1]
    mine = live.scoped[account]
    for index in range(2):
        for path in ("/api/accounts", f"/api/accounts/{account}/usage", f"/api/accounts/{account}/report"):
            for token in (None, "not-a-token"):
                status, body = live.get(index, path, token)
                assert status == 401, f"{path} with {token!r}: {status} {body}"
                check_shape(body, "Error")
        # A scoped token sees its account only, wherever it lives, and nothing of the others.
        status, body = live.get(index, "/api/accounts", mine)
        assert status == 200 and [row["account_id"] for row in body["accounts"]] == [account], body
        status, body = live.get(index, f"/api/accounts/{account}/usage", mine)
        assert status == 200 and body["account_id"] == account, body
        for path in (f"/api/accounts/{other}/usage", f"/api/accounts/{other}/report", "/api/accounts/nope/usage"):
            status, body = live.get(index, path, mine)
            assert (status, body["error"]) == (403, "forbidden"), f"{path}: {status} {body}"
        # What needs the account's history is not served live, and says where to look.
        for path in (
            f"/api/accounts/{account}/report?period=current",
            f"/api/accounts/{account}/changes?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
            f"/api/accounts/{account}/days/2026-11-01/minutes",
            f"/api/accounts/{account}/users?at=2026-11-01T10:00:00Z",
            f"/api/accounts/{account}/dead-letters",
        ):
            status, body = live.get(index, path, mine)
            assert status == 501 and NOT_LIVE in body["error"], f"{path}: {status} {body}"
            check_shape(body, "Error")
        # The page, its files and the API's description need no token (no account data in them).
        status, document = live.get(index, "/openapi.json", None)
        assert status == 200 and document == openapi_document()
        for path in ("/", "/static/app.js", "/static/style.css"):
            with urllib.request.urlopen(live.workers[index].url(path), timeout=10) as response:
                assert response.status == 200 and response.read(), path


def test_an_unknown_account_is_404_once_every_partition_was_checked(live: Live) -> None:
    deadline = time.monotonic() + 30
    replies: list[tuple[int, Any]] = []
    while time.monotonic() < deadline:
        replies = [live.get(i, "/api/accounts/no-such-account/usage", live.operator) for i in range(2)]
        if all(status != 503 for status, _ in replies):
            break
        time.sleep(0.5)
    unknown = (404, {"error": "unknown account", "account_id": "no-such-account"})
    assert replies == [unknown, unknown], f"{replies}\n{live.logs()}"


def test_the_web_app_asks_for_a_token_and_shows_live_usage(live: Live, tmp_path: Path) -> None:
    """In Chromium, on the worker that does not own the account: the page asks for a token, lists only the token's
    account, and the account page shows the live numbers the API gives (answered by the other worker)."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)"
    elsewhere = [a for a in live.accounts if live.home(a) == 1]  # asked from worker 0: it forwards
    account = elsewhere[0] if elsewhere else live.accounts[0]
    token = live.scoped[account]
    usage = live.get(0, f"/api/accounts/{account}/usage", token)[1]
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(60_000)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(live.workers[0].url("/"))
            page.wait_for_selector("main[data-ready=true] #token-form")
            errors.clear()  # the 401 that made the page ask
            page.get_by_label("API token").fill(token)
            page.get_by_role("button", name="Use token").click()
            page.wait_for_selector("#accounts-table")
            rows = page.locator("#accounts-table tbody tr")
            assert rows.count() == 1 and rows.first.get_attribute("data-account") == account
            assert "Live: workers of" in page.locator("#source").inner_text()
            page.locator(f'tr[data-account="{account}"] a').click()
            page.wait_for_selector("main[data-ready=true] #usage-now")
            shown = {
                "usage": page.locator("#usage-now").inner_text(),
                "licenses": page.locator("#licenses").inner_text(),
                "headroom": page.locator("#headroom").inner_text(),
                "today_peak": page.locator("#today-peak").inner_text(),
            }
            assert shown == {key: str(usage[key]) for key in shown}, f"page {shown}, API {usage}"
            assert "not served live" in page.locator("#report-error").inner_text()
            assert "not served live" in page.locator("#letters-count").inner_text()
            page.screenshot(path=str(tmp_path / "live-account.png"), full_page=True)
        finally:
            browser.close()
    unexpected = [e for e in errors if not e.startswith("501 ")]
    assert not unexpected, f"errors in the page: {unexpected}\n{live.logs()}"
