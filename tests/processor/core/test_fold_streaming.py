"""Streaming side of the fold: clock verdicts, reorder buffer, batches and ticks, live view, serialisation.

Arrival order, lateness, lagging tenants and the file reading, as every implementation must handle them, are the
contract scenarios of tests/contract/test_scenarios.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from processor.core.fold import AccountFold, PartitionClock
from processor.core.model import NEVER, FoldOutput, Settings
from processor.core.partition import PartitionDriver, fold_batch, fold_history, tick
from tests.processor.core.test_fold import (
    ACCOUNT,
    LOOSE,
    api,
    changes,
    end,
    hb,
    page,
    plan,
    portal_out,
    s,
    signin,
    signout,
    start,
)


def test_partition_clock_skew_verdicts_and_idle_floor() -> None:
    clock = PartitionClock(Settings())  # future skew 300 s, account idle lateness 2 h
    assert clock.watermark is None and clock.idle_floor == -NEVER
    assert clock.admit(s(0)) == "ok"
    assert clock.admit(s(300.001)) == "future_skew" and clock.watermark == s(0)
    assert clock.admit(s(300)) == "ok" and clock.watermark == s(300)
    assert clock.admit(s(-9000)) == "ok" and clock.watermark == s(300)  # lateness is the account's business
    assert clock.idle_floor == s(300 - 7200)


def test_account_horizon_is_its_own_watermark_or_the_partition_idle_floor() -> None:
    settings = Settings()  # lateness 600 s, idle lateness 7200 s
    clock = PartitionClock(settings, s(10_000))
    fold = AccountFold(ACCOUNT)
    assert clock.horizon_of(fold) == s(10_000 - 7200)  # no own events yet: the idle floor
    fold.offer(api(s(9000), "u1"), 0, clock.horizon_of(fold))
    assert fold.watermark == s(9000) and clock.horizon_of(fold) == s(9000 - 600)
    clock.observe(s(20_000))
    assert clock.horizon_of(fold) == s(20_000 - 7200)


def run_stream(events: list, record_ms: list[int], settings: Settings = Settings()) -> tuple[FoldOutput, list, dict]:
    """Fold one partition in one batch with record (arrival) timestamps, then flush everything."""
    states: dict[str, AccountFold] = {}
    out, rejected = fold_batch(states, PartitionDriver(settings), list(enumerate(events)), record_ms=record_ms)
    for fold in states.values():
        out.extend(fold.advance(NEVER, settings))
    return out, rejected, {account: fold.metrics for account, fold in states.items()}


def test_too_late_and_future_skew_events_are_not_applied() -> None:
    events = [api(s(0), "u1"), hb(s(200), "u9"), hb(s(400), "u9"), hb(s(600), "u9"), hb(s(800), "u9")]
    events += [api(s(199.999), "u2")]  # watermark 800 s: horizon 200 s -> too late
    events += [api(s(200), "u3")]  # at the horizon: accepted
    events += [api(s(1100.001), "u4")]  # more than 300 s ahead of the watermark and of its arrival time (800 s)
    events += [api(s(1100), "u5")]
    out, rejected, metrics = run_stream(events, record_ms=[s(0), s(200), s(400), s(600)] + [s(800)] * 5)
    assert [(arrival, verdict) for arrival, _, verdict in rejected] == [(5, "too_late"), (7, "future_skew")]
    assert (metrics[ACCOUNT].too_late, metrics[ACCOUNT].future_skew, metrics[ACCOUNT].applied) == (1, 1, 7)
    # u1 [0, 300), u3 [200, 500), u5 [1100, 1400).
    assert changes(out) == [(s(0), 1), (s(200), 2), (s(300), 1), (s(500), 0), (s(1100), 1), (s(1400), 0)]


def test_future_skew_is_measured_against_arrival_time_after_a_quiet_stretch() -> None:
    """Eight quiet hours: the watermark alone would reject the morning's events; their arrival time admits them."""
    events = [api(s(0), "u1"), api(s(8 * 3600), "u2"), api(s(8 * 3600 + 400), "u3")]
    out, rejected, _ = run_stream(events, record_ms=[s(0), s(8 * 3600), s(8 * 3600)])
    assert [(arrival, verdict) for arrival, _, verdict in rejected] == [(2, "future_skew")]
    assert changes(out) == [(s(0), 1), (s(300), 0), (s(8 * 3600), 1), (s(8 * 3600 + 300), 0)]


def test_fold_batch_advances_touched_accounts_and_the_idle_ones_whose_work_is_due() -> None:
    settings = Settings()  # lateness 600 s, idle lateness 7200 s
    states: dict[str, AccountFold] = {}
    driver = PartitionDriver(settings)
    clock = driver.clock
    out, rejected = fold_batch(states, driver, [(0, api(s(0), account="a"))])
    assert out.usage_changes == [] and rejected == [] and out.horizons == {"a": s(-600)}
    assert states["a"].pending_until() == s(0)  # buffered, not applied (its horizon is -600 s)
    assert driver.wakes == {"a": s(0)}
    batch = [(i + 1, api(s(t), account="b")) for i, t in enumerate((250, 500, 750, 901))]
    out, _ = fold_batch(states, driver, batch)
    assert clock.horizon_of(states["b"]) == s(301)
    assert clock.horizon_of(states["a"]) == s(-600)  # "a" may still be catching up: its own watermark rules
    assert [(c.account_id, c.at_ms, c.usage) for c in out.usage_changes] == [("b", s(250), 1)]
    assert set(out.horizons) == {"b"}  # "a" is not due: the idle floor (901 - 7200 s) is below its work at 0 s
    assert tick(states, driver) == FoldOutput()
    out, _ = fold_batch(states, driver, [(5, api(s(7501), account="b"))], record_ms=[s(7501)])  # idle floor: 301 s
    # Account "a" is due in the same batch: request at 0 s, window ends at 300 s < its horizon 301 s.
    mine = [(c.at_ms, c.usage) for c in out.usage_changes if c.account_id == "a"]
    assert mine == [(s(0), 1), (s(300), 0)]
    assert out.horizons["a"] == s(301)
    # Only the minute of the change at 0 s has a 1m window; at 300 s usage drops to 0 (nothing to emit).
    assert [(w.kind, w.start_ms) for w in out.windows if w.account_id == "a"] == [("1m", s(0))]
    # What is left of "a": its 15 m window [0, 900 s), which closes once its horizon reaches 900 s.
    assert states["a"].pending_until() == s(900) - 1 and driver.wakes["a"] == s(900) - 1
    assert tick(states, driver) == FoldOutput()  # nothing new below the horizon
    clock.observe(s(8101))  # the idle floor passes 900 s: a tick between batches closes the window
    ticked = tick(states, driver)
    assert [(w.account_id, w.kind, w.start_ms) for w in ticked.windows] == [("a", "15m", s(0))]
    assert driver.wakes["a"] > s(8101 - 7200)  # its longer windows are still open


def test_pending_until_follows_buffer_timers_and_open_windows() -> None:
    fold = AccountFold(ACCOUNT)
    assert fold.pending_until() == NEVER
    assert fold.offer(api(s(10)), 0, -NEVER) == "accepted"
    assert fold.pending_until() == s(10)
    fold.advance(s(11), LOOSE)
    # Usage 1 from 10 s: the 1 m window [0, 60 s) of that change is the next thing to close.
    assert fold.pending_until() == s(60) - 1
    out = fold.advance(s(200), LOOSE)
    assert [(w.kind, w.start_ms, w.license_ms) for w in out.windows] == [("1m", s(0), 50_000)]
    # Quiet minutes have no window (SPEC 5): next is the api timer at 310 s, before the 15 m window's end.
    assert fold.pending_until() == s(310)
    out = fold.advance(s(311), LOOSE)
    assert changes(out) == [(s(310), 0)]
    assert fold.pending_until() == s(360) - 1  # the 1 m window [300 s, 360 s) of that change
    out = fold.advance(s(360), LOOSE)  # a window ending at the horizon is closed
    assert [(w.kind, w.start_ms, w.end_ms, w.license_ms) for w in out.windows] == [("1m", s(300), s(360), 10_000)]
    assert fold.pending_until() == s(900) - 1
    fold.advance(NEVER, LOOSE)
    assert fold.pending_until() == NEVER


def test_offer_verdicts_of_an_account() -> None:
    fold = AccountFold(ACCOUNT)
    assert fold.offer(api(s(10), event_id="x"), 0, s(5)) == "accepted"
    assert fold.offer(api(s(10), event_id="x"), 1, s(5)) == "duplicate"
    assert fold.offer(api(s(10), "u2", event_id="x"), 2, s(5)) == "duplicate_conflict"
    assert fold.offer(api(s(4.999)), 3, s(5)) == "too_late"
    fold.advance(s(20), LOOSE)
    assert fold.offer(api(s(19)), 4, -NEVER) == "too_late"  # already applied up to 20 s
    m = fold.metrics
    assert (m.applied, m.duplicate, m.duplicate_conflict, m.too_late) == (1, 1, 1, 2)
    with pytest.raises(ValueError):
        fold.offer(api(s(30), account="other"), 5, -NEVER)


def test_live_view_is_provisional_and_does_not_change_the_fold() -> None:
    fold = AccountFold(ACCOUNT)
    for arrival, event in enumerate([plan(s(0), 1, 4), api(s(0), "u1"), api(s(30), "u2")]):
        fold.offer(event, arrival, -NEVER)
    view = fold.live_view(LOOSE)
    assert (view.usage, view.licenses, view.overage_allowance, view.headroom) == (2, 1, 4, -1)
    assert (view.today_peak, view.today_peak_at_ms, view.as_of_ms) == (2, s(30), s(30))
    assert fold.live_view(LOOSE) == view
    assert fold.pending_until() == s(0) and fold.usage == 0  # untouched
    fold.offer(api(s(900), "u3"), 3, -NEVER)
    fold.advance(s(1000), LOOSE)  # u1 ends at 300 s, u2 at 330 s, u3 on from 900 s
    view = fold.live_view(LOOSE)
    got = (view.usage, view.headroom, view.today_peak, view.today_peak_at_ms, view.as_of_ms)
    assert got == (1, 0, 2, s(30), s(900))


def test_live_view_of_an_empty_account() -> None:
    view = AccountFold("nobody").live_view(Settings())
    got = (view.usage, view.licenses, view.headroom, view.today_peak, view.today_peak_at_ms, view.as_of_ms)
    assert got == (0, 0, 0, 0, None, None)


def test_serialisation_round_trip_mid_history_gives_identical_outputs() -> None:
    events = [plan(s(0), 2, tz="Europe/Berlin"), signin(s(0)), start(s(1)), page(s(5), "u2"), api(s(5), "u3")]
    events += [hb(s(100)), api(s(200), "u3"), end(s(250)), portal_out(s(260), "u2"), start(s(270))]
    events += [api(s(900), "u4"), signin(s(950), "u5"), start(s(951), "u5")]
    settings = LOOSE

    def drive(round_trip: bool) -> tuple[FoldOutput, AccountFold]:
        fold = AccountFold(ACCOUNT)
        out = FoldOutput()
        for arrival, event in enumerate(events):
            fold.offer(event, arrival, -NEVER)
            fold.advance_into(event.at_ms - 60_000, settings, out)
            if round_trip:
                data = fold.to_bytes()
                fold = AccountFold.from_bytes(data)
                assert fold.to_bytes() == data
        fold.advance_into(NEVER, settings, out)
        return out, fold

    plain, plain_fold = drive(False)
    trip, trip_fold = drive(True)
    assert trip == plain
    assert trip_fold.metrics == plain_fold.metrics
    assert len(plain.usage_changes) > 4 and plain.windows and plain.intervals


def test_from_bytes_rejects_unknown_versions() -> None:
    import msgpack

    with pytest.raises(ValueError):
        AccountFold.from_bytes(msgpack.packb([99, "acme"]))


def test_batch_sizes_do_not_change_results() -> None:
    events = [api(s(10 * i), f"u{i % 7}") for i in range(100)] + [page(s(5 * i), f"u{i % 5}") for i in range(50)]
    events.sort(key=lambda e: e.at_ms)
    one, metrics_one, _ = fold_history(events, Settings(), batch_size=1)
    many, metrics_many, _ = fold_history(events, Settings(), batch_size=1000)
    assert one == many and metrics_one == metrics_many


def test_live_view_today_is_the_account_local_day() -> None:
    # Europe/Berlin: 2026-10-25 starts at 2026-10-24T22:00Z. Two users until 21:55Z (the previous local day),
    # one from 22:01Z: today's peak is 1, not 2.
    day = s(0) - 8 * 86_400_000 - 2 * 3_600_000  # 2026-10-24T22:00Z
    events = [plan(day - 4 * 3_600_000, 5, tz="Europe/Berlin"), api(day - 600_000, "u1"), api(day - 600_000, "u2")]
    events += [api(day + 60_000, "u3")]
    fold = AccountFold(ACCOUNT)
    for arrival, event in enumerate(events):
        fold.offer(event, arrival, -NEVER)
    view = fold.live_view(LOOSE)
    got = (view.usage, view.headroom, view.today_peak, view.today_peak_at_ms, view.as_of_ms)
    assert got == (1, 4, 1, day + 60_000, day + 60_000)


def test_zero_timeouts_make_zero_length_presences() -> None:
    zero = Settings(device_timeout_ms=0, api_activity_window_ms=0, max_future_skew_ms=10**12)
    out, metrics, _ = fold_history([api(s(0)), signin(s(10)), start(s(10)), api(s(20))], zero)
    # Each presence ends at the instant it starts: timers due during an instant fire at its end (the start at
    # 10 s still finds the device signed in, so it is no orphan).
    assert replace(out, horizons={}) == FoldOutput() and metrics[ACCOUNT].orphan == 0


def test_presence_intervals_open_and_close_per_device_portal_and_api() -> None:
    from processor.core.model import PresenceInterval

    events = [signin(s(0), "u1", "d1"), start(s(0), "u1", "d1"), signin(s(10), "u1", "d2"), start(s(20), "u1", "d2")]
    events += [page(s(30), "u1"), api(s(40), "u1"), end(s(50), "u1", "d1"), start(s(50), "u1", "d1")]
    events += [portal_out(s(60), "u1"), signout(s(70), "u1", "d2")]
    out, _, _ = fold_history(events, Settings())

    def p(kind: str, device: str | None, a: float, b: float | None) -> PresenceInterval:
        return PresenceInterval(ACCOUNT, "u1", kind, device, s(a), NEVER if b is None else s(b))

    # Opened, then closed (same start); d1's session ended and started again at 50 s: two touching intervals.
    assert out.presences == [
        p("desktop", "d1", 0, None),
        p("desktop", "d2", 20, None),
        p("portal", None, 30, None),
        p("api", None, 40, None),
        p("desktop", "d1", 0, 50),
        p("desktop", "d1", 50, None),
        p("portal", None, 30, 60),
        p("desktop", "d2", 20, 70),
        p("desktop", "d1", 50, 230),  # liveness: last seen at 50 s, device timeout 180 s
        p("api", None, 40, 340),  # activity window 300 s
    ]
    assert changes(out) == [(s(0), 1), (s(340), 0)]  # one user, however many presences
