"""AccountFold.holdings and without_buffer: what the state holds, and a copy of it without the lateness buffer."""

from __future__ import annotations

from processor.core.fold import AccountFold
from processor.core.model import Settings
from tests.processor.core.test_fold import ACCOUNT, api, page, s, signin, start


def _fold() -> AccountFold:
    fold = AccountFold(ACCOUNT)
    events = [signin(s(0)), start(s(0.5)), page(s(1), "u2"), api(s(2), "u3"), api(s(100), "u4")]
    for arrival, event in enumerate(events):
        assert fold.offer(event, arrival, s(-1)) == "accepted"
    fold.advance(s(50), Settings())  # applies all but the api request at 100 s
    return fold


def test_holdings_counts_presences_users_and_buffered_events() -> None:
    fold = _fold()
    assert fold.usage == 3
    assert fold.holdings() == {"users": 3, "devices": 1, "portal": 1, "api": 1, "buffered": 1}


def test_without_buffer_drops_only_the_buffered_events_of_a_copy() -> None:
    fold = _fold()
    bare = fold.without_buffer()
    assert bare.holdings() == {"users": 3, "devices": 1, "portal": 1, "api": 1, "buffered": 0}
    assert fold.holdings()["buffered"] == 1  # the original keeps its buffer
    assert len(bare.to_bytes()) < len(fold.to_bytes())
    fold.advance(s(200), Settings())
    bare.advance(s(200), Settings())
    assert (fold.holdings()["api"], bare.holdings()["api"]) == (2, 1)  # u4's request reached only the original
