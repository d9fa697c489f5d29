"""The set-based billing run (`BatchEngine.reports`, processor/batch/billing.py) equals the per-account reports
(`BatchEngine.report`) field for field, on simulated files of many accounts and on hand-made edge cases."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from processor.batch.engine import BatchEngine
from processor.simulation import SimConfig, write_events

from .helpers import DAY, HOUR, MINUTE, T0, ev, load, plan, portal_span

NOV1, NOV30 = date(2026, 11, 1), date(2026, 11, 30)


def assert_same(engine: BatchEngine, requests: list[tuple[str, date, date]]) -> None:
    """Every request's set-based report equals its per-account one (and the run is not trivially empty)."""
    many = engine.reports(requests)
    assert len(many) == len(requests)
    for request, report in zip(requests, many, strict=True):
        assert report == engine.report(*request), request


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 accounts of every profile (plans in several zones, both grace modes, mid-run plan changes) over 5 days,
    with duplicates and out-of-order delivery."""
    path = tmp_path_factory.mktemp("billing") / "events.jsonl"
    write_events(path, SimConfig(accounts=40, agents=6, days=5, seed=7, duplicates=0.02, out_of_order=0.05))
    return path


@pytest.mark.parametrize("late", ["count", "drop"])
def test_billing_run_equals_per_account_reports(simulated: Path, late: str) -> None:
    with BatchEngine(late_events=late) as engine:  # type: ignore[arg-type]
        engine.load(simulated)
        accounts = engine.accounts()
        assert len(accounts) == 40
        requests = [(account, NOV1, NOV30) for account in accounts]
        many = engine.reports(requests)
        assert sum(r.peak_usage for r in many) > 0 and any(r.billable_overage for r in many)
        assert len({r.timezone for r in many}) > 2 and any(r.peak_users for r in many)
        assert_same(engine, requests)


def test_mixed_ranges_repeats_and_unknown_accounts(simulated: Path) -> None:
    """Per-account ranges (before the first event, inside, past data_through, one day), an account twice and one
    the file does not know."""
    with BatchEngine() as engine:
        engine.load(simulated)
        accounts = engine.accounts()
        requests = [
            (account, NOV1 + timedelta(days=i % 7), NOV1 + timedelta(days=i % 7 + i % 4))
            for i, account in enumerate(accounts)
        ]
        requests += [
            (accounts[0], date(2026, 10, 1), date(2026, 10, 31)),
            (accounts[0], date(2026, 12, 1), date(2026, 12, 31)),
            (accounts[1], NOV1, NOV1),
            ("nobody", NOV1, NOV30),
        ]
        assert_same(engine, requests)
        assert engine.reports([]) == []
        with pytest.raises(ValueError):
            engine.reports([(accounts[0], NOV30, NOV1)])


def test_grace_modes_zero_grace_and_plans_after_data_through(tmp_path: Path) -> None:
    """Hand-made accounts: each grace mode (and grace 0), a plan change inside the period, a plan in another zone
    that is not known yet, an account without plans."""
    events: list[dict] = []
    for n, (grace, mode) in enumerate([(0, "contiguous"), (15, "contiguous"), (15, "cumulative"), (60, "cumulative")]):
        account = f"a{n}"
        events.append(plan(T0 - DAY, 1, overage=1, zone="Europe/Paris", grace=grace, mode=mode, account=account))
        for u in range(4):
            events += [
                {**e, "account_id": account, "event_id": f"{account}-{u}-{i}"}
                for i, e in enumerate(portal_span(f"u{u}", T0 + 9 * HOUR + u * 7 * MINUTE, T0 + 11 * HOUR - u * MINUTE))
            ]
        events.append(plan(T0 + 10 * HOUR, 2, zone="America/New_York", grace=grace, mode=mode, account=account))
    events += [
        {**e, "account_id": "noplan", "event_id": f"np-{i}"}
        for i, e in enumerate(portal_span("x", T0 + HOUR, T0 + 3 * HOUR))
    ]
    events.append(plan(T0 + 5 * DAY, 9, zone="Asia/Tokyo", account="noplan"))  # beyond data_through
    events.append(ev("api.request", T0 + 3 * DAY, account="later", user_id="x"))
    engine = load(tmp_path, events)
    try:
        requests = [(account, NOV1, NOV30) for account in engine.accounts()]
        requests += [(account, date(2026, 11, 2), date(2026, 11, 3)) for account in engine.accounts()]
        assert_same(engine, requests)
        assert len({r.billable_overage for r in engine.reports(requests[:4])}) > 1
    finally:
        engine.close()
