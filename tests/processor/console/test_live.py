"""The live console's pure parts (processor/console/live.py), without a broker: the Usage and AccountRow bodies from
a worker's live view, the merge of the workers' overviews, and which accounts a token may list."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from processor.console.live import LiveConsole, live_row, live_usage, merge_overviews
from processor.console.openapi import openapi_document
from processor.core.fold import LiveView
from processor.core.model import Plan
from processor.web.auth import Access, Denial
from processor.web.tokens import TokenEntry, digest
from schemas.events import parse_timestamp, to_ms

PLAN = Plan(to_ms(parse_timestamp("2026-10-31T12:59:00Z")), 2, 1, 20, "Australia/Sydney", 60, "cumulative")


def ms(text: str) -> int:
    return to_ms(parse_timestamp(text))


def check_shape(body: object, schema_name: str) -> None:
    document = openapi_document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, f"{schema_name}: {errors[0].message} at {list(errors[0].absolute_path)}"


def view(account: str = "acct-1", usage: int = 3, plan: Plan = PLAN, through: str | None = None) -> LiveView:
    return LiveView(
        account_id=account,
        usage=usage,
        licenses=plan.licenses,
        overage_allowance=plan.overage_allowance,
        headroom=plan.licenses - usage,
        today_peak=4,
        today_peak_at_ms=ms("2026-11-01T13:30:00Z"),
        as_of_ms=ms("2026-11-01T14:05:00Z"),  # 01:05 on 2 November in Sydney
        data_through_ms=ms(through or "2026-11-01T13:55:00Z"),
        plan=plan,
    )


def test_live_usage_is_the_consoles_usage_shape_with_the_live_numbers() -> None:
    body = live_usage(view())
    check_shape(body, "Usage")
    assert body["usage"] == 3 and body["headroom"] == -1 and body["today_peak"] == 4
    assert body["today"] == "2026-11-02"  # the account-local date of as_of
    assert body["as_of"] == "2026-11-01T14:05:00.000Z" and body["data_through"] == "2026-11-01T13:55:00.000Z"
    assert body["data_through_local"] == "2026-11-02T00:55:00.000+11:00"
    assert body["plan"] == {
        "since": "2026-10-31T12:59:00.000Z",
        "licenses": 2,
        "overage_allowance": 1,
        "billing_anchor_day": 20,
        "timezone": "Australia/Sydney",
        "grace_minutes": 60,
        "grace_mode": "cumulative",
    }
    assert "60 minutes in total" in body["billable_rule"]


def test_a_live_row_has_the_period_dates_and_no_period_numbers() -> None:
    row = live_row(view())
    check_shape(row, "AccountRow")
    assert (row["period_from"], row["period_to"]) == ("2026-10-20", "2026-11-19")  # anchor day 20, Sydney
    assert row["peak_usage"] is row["billable_overage"] is row["over_allowance"] is row["peak_at"] is None
    assert row["complete"] is False and row["usage"] == 3 and row["timezone"] == "Australia/Sydney"


def rows(*accounts: str) -> list[dict[str, Any]]:
    return [live_row(view(account)) for account in accounts]


def overview(partitions: list[int], *accounts: str) -> dict[str, Any]:
    return {
        "source": {"kind": "live", "name": "app", "partitions": partitions, "workers": 1},
        "accounts": rows(*accounts),
    }


def test_overviews_merge_into_every_account_once_sorted() -> None:
    peers = [("http://b", 200, overview([2, 3], "acct-0", "acct-2"))]
    answer = merge_overviews("app", rows("acct-3", "acct-2"), {0, 1}, peers, range(4))
    assert answer.status == 200
    check_shape(answer.body["source"], "Source")
    assert answer.body["source"] == {"kind": "live", "name": "app", "partitions": [0, 1, 2, 3], "workers": 2}
    assert [row["account_id"] for row in answer.body["accounts"]] == ["acct-0", "acct-2", "acct-3"]


@pytest.mark.parametrize(
    ("peers", "reason"),
    [
        ([("http://b", 200, overview([2], "acct-0"))], "partitions [3] are not owned by any worker"),
        ([("http://b", 503, {"error": "x", "reason": "rebalance in progress"})], "http://b answered 503: rebalance"),
        ([("http://b", 0, {"reason": "http://b did not answer within 2s"})], "did not answer within 2s"),
    ],
)
def test_an_overview_that_misses_partitions_is_a_503_with_the_reason(peers: list, reason: str) -> None:
    answer = merge_overviews("app", rows("acct-1"), {0, 1}, peers, range(4))
    assert answer.status == 503 and reason in answer.body["reason"], answer
    check_shape(answer.body, "Error")


class FakeWorker:
    def __init__(self, access: Access) -> None:
        self.access = access


def reader(access: Access, headers: dict[str, str]) -> Denial | Any:
    return LiveConsole(FakeWorker(access), "app").reader(headers)  # type: ignore[arg-type]


def test_a_token_lists_only_the_accounts_it_may_read() -> None:
    access = Access([TokenEntry(digest("op"), True), TokenEntry(digest("t1"), False, frozenset({"acct-1"}))])
    everything = reader(access, {"Authorization": "Bearer op"})
    assert everything("acct-1") and everything("acct-9")
    scoped = reader(access, {"Authorization": "Bearer t1"})
    assert scoped("acct-1") and not scoped("acct-2")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eA=="}):
        denied = reader(access, headers)
        assert isinstance(denied, Denial) and denied.status == 401, headers
    assert reader(Access([], insecure_no_auth=True), {})("acct-2")
    assert isinstance(reader(Access([]), {"Authorization": "Bearer op"}), Denial)  # nothing configured: 401
