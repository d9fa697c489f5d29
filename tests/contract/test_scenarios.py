"""Scenario contract: the hand-worked SPEC scenarios (docs/semantics.md sections 1-7), one abstract test case run
against every implementation (one subclass each). Expected numbers are worked out by hand.

A scenario's history is settled: one event of another account (`~settle`) ten days after the last one moves the
partition on, so that by the idle rule every instant of the scenario is final, also for the worker's partition
driver, which never flushes; that account is left out of the outputs. Scenarios about `data_through` run unsettled
and look at what is final. Times: T0 is 2026-11-02T00:00:00Z (a Monday); `s(x)` is T0 + x seconds.
"""

from __future__ import annotations

from datetime import date
from hashlib import sha256
from typing import Any, ClassVar

from processor.core.model import Plan, PresenceInterval, Settings, UsageChange
from schemas.events import EVENT_ADAPTER
from schemas.outputs import PeakUser, Report
from tests.contract.implementations import (
    Driver,
    Engine,
    Fold,
    History,
    Implementation,
    Outputs,
    Reading,
    ReportKey,
)
from tests.contract.strategies import utc
from tests.processor.batch.helpers import ACCOUNT, DAY, HOUR, MINUTE, T0, ev, plan, portal_span, session

SETTLE = "~settle"
H = HOUR


def s(seconds: float) -> int:
    """T0 + seconds, in epoch ms."""
    return T0 + round(seconds * 1000)


def signin(at: int, user: str = "u1", device: str = "d1", **kw: Any) -> dict:
    return ev("desktop.signed_in", at, user_id=user, device_id=device, **kw)


def signout(at: int, user: str = "u1", device: str = "d1", **kw: Any) -> dict:
    return ev("desktop.signed_out", at, user_id=user, device_id=device, **kw)


def hb(at: int, user: str = "u1", device: str = "d1", **kw: Any) -> dict:
    return ev("desktop.heartbeat", at, user_id=user, device_id=device, **kw)


def start(at: int, user: str = "u1", device: str = "d1", **kw: Any) -> dict:
    return ev("work_session.started", at, user_id=user, device_id=device, **kw)


def end(at: int, user: str = "u1", device: str = "d1", **kw: Any) -> dict:
    return ev("work_session.ended", at, user_id=user, device_id=device, **kw)


def page(at: int, user: str = "u1", name: str = "cc.inbox", **kw: Any) -> dict:
    return ev("portal.page_viewed", at, user_id=user, page=name, **kw)


def portal_out(at: int, user: str = "u1", **kw: Any) -> dict:
    return ev("portal.signed_out", at, user_id=user, **kw)


def api(at: int, user: str = "u1", **kw: Any) -> dict:
    return ev("api.request", at, user_id=user, **kw)


def work(user: str, begin: int, finish: int, device: str = "d1") -> list[dict]:
    """Sign in and work from `begin` to `finish` without heartbeats (for settings with a long device timeout)."""
    return [signin(begin, user, device), start(begin, user, device), end(finish, user, device)]


# Settings with desktop sessions that last for days without heartbeats.
LONG = Settings(device_timeout_ms=3 * DAY)


def changes(out: Outputs, account: str = ACCOUNT) -> list[tuple[int, int]]:
    """(at, usage) of the account's usage changes."""
    return [(c.at_ms, c.usage) for c in out.changes if c.account_id == account]


def intervals(out: Outputs, account: str = ACCOUNT) -> list[tuple[str, int, int]]:
    """(user, start, end) of the account's counted intervals."""
    return [(i.user_id, i.start_ms, i.end_ms) for i in out.intervals if i.account_id == account]


def windows(out: Outputs, kind: str, account: str = ACCOUNT) -> list[tuple[int, int, int, int, int, int]]:
    """(start, end, max_usage, max_at, over_licenses_ms, license_ms) of the account's windows of one kind."""
    return [
        (w.start_ms, w.end_ms, w.max_usage, w.max_at_ms, w.over_licenses_ms, w.license_ms)
        for w in out.windows
        if w.kind == kind and w.account_id == account
    ]


NOV1, NOV2, NOV3, NOV4 = (date(2026, 11, d) for d in (1, 2, 3, 4))


def running_day() -> list[dict]:
    """2026-11-02 (UTC), licenses 1, grace 15 min contiguous; the account's last events are at 15:00.

    u1: desktop laptop-1 09:00-15:00, desktop phone-1 09:30-11:30, portal 10:00-11:00; u2: API 10:00-10:09 (requests
    at 10:00 and 10:04, window 5 min); u3: portal 10:00-10:30; u4 and u5: portal 14:40-15:00. Usage: 1 from 09:00,
    3 from 10:00 (a tie: three users reach it at once), 2 from 10:09, 1 from 10:30, 3 again from 14:40, 0 from 15:00.
    From tests/processor/batch/test_report.py, where the SQL engine's reports were checked against core billing.
    """
    peak = T0 + 10 * H
    stories = [
        plan(T0 - DAY, licenses=1, grace=15),
        *session("u1", "laptop-1", T0 + 9 * H, T0 + 15 * H),
        *session("u1", "phone-1", T0 + 9 * H + 30 * MINUTE, T0 + 11 * H + 30 * MINUTE),
        *portal_span("u1", peak, peak + H),
        api(peak, "u2"),
        api(peak + 4 * MINUTE, "u2"),
        *portal_span("u3", peak, peak + 30 * MINUTE),
        *portal_span("u4", T0 + 14 * H + 40 * MINUTE, T0 + 15 * H),
        *portal_span("u5", T0 + 14 * H + 40 * MINUTE, T0 + 15 * H),
    ]
    return sorted(stories, key=lambda event: event["occurred_at"])  # arriving in time order, as a stream would


# Histories that more than one contract class uses.
SIGN_IN_NEEDED = [start(s(0)), signin(s(10)), start(s(20)), end(s(50)), signout(s(60)), start(s(61)), signin(s(70)),
                  start(s(70.5)), signout(s(80))]  # fmt: skip
PORTAL = [
    page(s(0)),  # on
    page(s(60), name="meetings.list"),  # non-CC page: off
    page(s(100), name="reports.contact_center"),  # on
    portal_out(s(200)),  # off
    portal_out(s(210)),  # orphan
    page(s(300)),  # on
    page(s(400), name="cc.admin"),  # refresh: idle timer now 400 + 900 = 1300 s
    page(s(1400), name="meetings.list"),  # off already: no effect, not an orphan
    # u3: a CC view at exactly last view + 15 min comes after the idle timer: end and restart touch
    page(s(3600), "u3", "cc.admin"),
    page(s(4500), "u3", "activity_reports.sign_in_out"),
    portal_out(s(4800), "u3"),
]


class ScenarioContract:
    """The scenarios every implementation passes in the stream reading (abstract: subclasses set `implementation`)."""

    implementation: ClassVar[Implementation]

    def run(
        self,
        events: list[dict],
        settings: Settings = Settings(),
        reading: Reading = "stream",
        settle: bool = True,
        reports: tuple[ReportKey, ...] = (),
    ) -> Outputs:
        """The implementation's outputs of `events` (arrival order): settled, or else what is final; with `reports`."""
        if settle:
            last = max(EVENT_ADAPTER.validate_python(event).at_ms for event in events)
            events = [*events, ev("api.request", last + 10 * DAY, account=SETTLE, event_id="settle", user_id="x")]
        history = History(tuple(events), batch_size=3, settings=settings, reports=reports)
        out = self.implementation.run(history, reading)
        return out.without(SETTLE) if settle else out.final()

    def report(self, events: list[dict], start: date, end: date, account: str = ACCOUNT) -> Report:
        """The implementation's report of the unsettled history for `start`..`end`."""
        return self.run(events, settle=False, reports=((account, start, end),)).reports[(account, start, end)]

    # -- desktop ----------------------------------------------------------------------------------------------------

    def test_a_work_session_needs_a_signed_in_device(self) -> None:
        out = self.run(SIGN_IN_NEEDED)
        # The start at 0 s has no sign-in; the one at 61 s follows a sign-out: orphans. Counted [20, 50), [70.5, 80).
        assert intervals(out) == [("u1", s(20), s(50)), ("u1", s(70.5), s(80))]
        assert changes(out) == [(s(20), 1), (s(50), 0), (s(70.5), 1), (s(80), 0)]

    def test_work_session_ended_ends_the_presence_but_keeps_the_sign_in(self) -> None:
        out = self.run([signin(s(0)), start(s(10)), end(s(150)), start(s(300)), end(s(330))])
        # The end at 150 s moves last_seen, so the device is still signed in at 300 s (< 150 + 180 s).
        assert intervals(out) == [("u1", s(10), s(150)), ("u1", s(300), s(330))]

    def test_a_sign_out_ends_the_session_and_a_second_start_changes_nothing(self) -> None:
        events = [signin(s(0)), start(s(0)), start(s(60)), signout(s(120)), end(s(120.001)), start(s(130))]
        # The second start keeps the session's start; after the sign-out, the end and the start are orphans.
        assert intervals(self.run(events)) == [("u1", s(0), s(120))]

    def test_liveness_expires_at_last_seen_plus_the_device_timeout(self) -> None:
        events = [signin(s(0)), start(s(0)), hb(s(60)), hb(s(120)), hb(s(300)), hb(s(310)), start(s(320))]
        events += [signin(s(400)), start(s(401))]
        out = self.run(events)
        # last_seen 120 s -> expiry at 300 s. The heartbeat at exactly 300 s comes after the timer and does not save
        # the device; the one at 310 s does not bring it back; the start at 320 s is an orphan (signed out).
        # A new sign-in + start at 400/401 s counts again until 401 + 180 = 581 s.
        assert changes(out) == [(s(0), 1), (s(300), 0), (s(401), 1), (s(581), 0)]

    def test_a_heartbeat_one_ms_before_expiry_saves_the_device(self) -> None:
        out = self.run([signin(s(0)), start(s(0)), hb(s(60)), hb(s(239.999))])
        assert intervals(out) == [("u1", s(0), s(419.999))]  # last seen 239.999 s, expiry 180 s later

    def test_any_event_of_the_device_keeps_it_alive_and_a_new_sign_in_restores_it(self) -> None:
        events = [signin(s(0)), start(s(0)), signin(s(170))]  # already signed in: refreshes last_seen only
        events += [signin(s(400)), start(s(400)), end(s(450))]  # expired at 350 s; signs in and works again
        assert intervals(self.run(events)) == [("u1", s(0), s(350)), ("u1", s(400), s(450))]

    def test_a_signed_in_device_without_a_session_expires_too(self) -> None:
        # Signed out by the liveness timer at 180 s, before the start at 180 s: an orphan, no usage.
        out = self.run([signin(s(0)), start(s(180))])
        assert changes(out) == [] and intervals(out) == []

    def test_two_devices_of_one_user_count_once_and_device_ids_belong_to_their_user(self) -> None:
        events = [signin(s(0)), start(s(0)), signin(s(30), device="d2"), start(s(30), device="d2")]
        events += [signin(s(40), "u2"), start(s(40), "u2"), signout(s(45), "u2")]  # u2's "d1" is not u1's "d1"
        events += [end(s(60)), end(s(90), device="d2")]
        out = self.run(events)
        assert changes(out) == [(s(0), 1), (s(40), 2), (s(45), 1), (s(90), 0)]
        assert intervals(out) == [("u1", s(0), s(90)), ("u2", s(40), s(45))]

    # -- portal and api ---------------------------------------------------------------------------------------------

    def test_portal_pages_sign_out_and_idle_timeout(self) -> None:
        out = self.run(PORTAL)
        assert changes(out) == [(s(0), 1), (s(60), 0), (s(100), 1), (s(200), 0), (s(300), 1), (s(1300), 0),
                                (s(3600), 1), (s(4800), 0)]  # fmt: skip
        assert intervals(out)[-1] == ("u3", s(3600), s(4800))

    def test_api_activity_window_and_a_request_at_the_expiry_instant(self) -> None:
        out = self.run([api(s(0)), api(s(200)), api(s(500), endpoint="/v1/x"), api(s(2000))])
        # The window ends at 200 + 300 = 500 s; the request at 500 s starts again at the same instant: no dip.
        assert intervals(out) == [("u1", s(0), s(800)), ("u1", s(2000), s(2300))]
        assert changes(out) == [(s(0), 1), (s(800), 0), (s(2000), 1), (s(2300), 0)]

    def test_api_requests_at_one_instant_chain_as_one_request(self) -> None:
        # Two requests at 0 s, two at 300 s (the end of the first window), two at 700 s and one more at 700 s for u2.
        events = [api(s(t), event_id=f"r{n}") for n, t in enumerate((0, 0, 300, 300, 700, 700))]
        out = self.run([*events, api(s(700), "u2", event_id="r9")])
        api_presences = [(p.user_id, p.start_ms, p.end_ms) for p in out.presences if p.kind == "api"]
        assert api_presences == [("u1", s(0), s(300)), ("u1", s(300), s(600)), ("u1", s(700), s(1000)),
                                 ("u2", s(700), s(1000))]  # fmt: skip
        assert intervals(out) == [("u1", s(0), s(600)), ("u1", s(700), s(1000)), ("u2", s(700), s(1000))]

    def test_a_users_presences_make_one_counted_interval_when_they_touch_or_overlap(self) -> None:
        events = [signin(s(0)), start(s(0)), end(s(100))]  # desktop [0, 100)
        events += [api(s(100)), page(s(300))]  # api [100, 400) touches; portal [300, 1200) overlaps
        events += [api(s(2000)), api(s(2000), "u2")]  # a gap: a second interval
        out = self.run(events)
        assert intervals(out) == [("u1", s(0), s(1200)), ("u1", s(2000), s(2300)), ("u2", s(2000), s(2300))]
        assert changes(out) == [(s(0), 1), (s(1200), 0), (s(2000), 2), (s(2300), 0)]

    def test_presence_intervals_per_device_portal_and_api(self) -> None:
        events = [signin(s(0)), start(s(0)), signin(s(10), device="d2"), start(s(20), device="d2")]
        events += [page(s(30)), api(s(40)), end(s(50)), start(s(50))]
        events += [portal_out(s(60)), signout(s(70), device="d2")]

        def p(kind: str, device: str | None, a: float, b: float) -> PresenceInterval:
            return PresenceInterval(ACCOUNT, "u1", kind, device, s(a), s(b))  # type: ignore[arg-type]

        # d1's session ended and started again at 50 s: two touching presences; one counted interval.
        assert self.run(events).presences == [
            p("desktop", "d1", 0, 50),
            p("desktop", "d2", 20, 70),
            p("portal", None, 30, 60),
            p("api", None, 40, 340),  # activity window 300 s
            p("desktop", "d1", 50, 230),  # liveness: last seen at 50 s, device timeout 180 s
        ]

    def test_custom_timeouts(self) -> None:
        settings = Settings(device_timeout_ms=30_000, portal_idle_timeout_ms=60_000, api_activity_window_ms=10_000)
        events = [signin(s(0)), start(s(0)), hb(s(20)), api(s(3600), "u2"), page(s(7200), "u3", "cc.alerts")]
        assert intervals(self.run(events, settings)) == [
            ("u1", s(0), s(50)),
            ("u2", s(3600), s(3610)),
            ("u3", s(7200), s(7260)),
        ]

    # -- one instant, copies ----------------------------------------------------------------------------------------

    def test_a_sign_out_and_a_sign_in_at_the_same_ms_make_no_spike_and_no_dip(self) -> None:
        events = [signin(s(0), "a"), start(s(0), "a"), signin(s(50), "b")]
        # At 100 s: b starts (arrives first: usage would be 2 for an instant), then a signs out.
        events += [start(s(100), "b"), signout(s(100), "a"), end(s(200), "b")]
        # At 150 s: c's session ends and starts again at the same ms on one device: no dip.
        events += [signin(s(140), "c"), start(s(140), "c"), end(s(150), "c"), start(s(150), "c"), end(s(170), "c")]
        out = self.run(events)
        assert changes(out) == [(s(0), 1), (s(140), 2), (s(170), 1), (s(200), 0)]
        assert intervals(out) == [("a", s(0), s(100)), ("b", s(100), s(200)), ("c", s(140), s(170))]
        # Minute [60 s, 120 s) changed nothing (no spike to 2 at 100 s): it has no 1m window, its level is implied.
        assert [w[0] for w in windows(out, "1m")] == [s(0), s(120), s(180)]
        assert [(w[2], w[3]) for w in windows(out, "15m")] == [(2, s(140))]

    def test_same_instant_events_of_a_device_apply_in_arrival_order(self) -> None:
        # Ended then started at one instant: the session restarts (touching intervals merge into one).
        restart = [signin(s(0)), start(s(0)), hb(s(60)), end(s(120)), start(s(120)), end(s(180))]
        # Started then ended at one instant: a zero-length session counts nothing.
        blink = [signin(s(0), "u2"), start(s(1), "u2"), end(s(1), "u2")]
        out = self.run([*restart, *blink])
        assert intervals(out) == [("u1", s(0), s(180))]
        assert [(p.start_ms, p.end_ms) for p in out.presences] == [(s(0), s(120)), (s(120), s(180))]

    def test_copies_first_arrival_wins(self) -> None:
        started = start(s(10), event_id="x")
        events = [
            signin(s(0)),
            started,
            {**started, "schema_version": 2},  # schema_version is not part of the payload: a duplicate
            {**started, "occurred_at": "2026-11-02T01:00:10+01:00"},  # the same instant written otherwise
            start(s(20), event_id="x"),  # same id, other payload: a conflict, ignored
            {**started, "account_id": "other"},  # another account: another event (an orphan there)
            end(s(30)),
        ]
        out = self.run(events)
        assert changes(out) == [(s(10), 1), (s(30), 0)]
        assert out.duplicates == (2, 1)
        assert changes(out, "other") == []

    # -- plans, usage changes ---------------------------------------------------------------------------------------

    def test_plans_and_the_licenses_of_usage_changes(self) -> None:
        events = [
            api(s(0)),  # before any plan: licenses 0
            plan(s(100), 5, overage=2, zone="Europe/Berlin", grace=15, mode="cumulative"),  # alone: no usage change
            api(s(150), "u2"),
            api(s(200), "u3"),
            plan(s(200), 7),  # same instant as u3's request: the change at 200 s has the licenses after the instant
            plan(s(250), 8),
            plan(s(250), 9),  # same ms: the later arrival wins
        ]
        out = self.run(events)
        got = [(c.at_ms, c.usage, c.licenses) for c in out.changes]
        # u1 ends at 300 s, u2 at 450 s, u3 at 500 s.
        assert got == [(s(0), 1, 0), (s(150), 2, 5), (s(200), 3, 7), (s(300), 2, 9), (s(450), 1, 9), (s(500), 0, 9)]
        assert out.plans == {
            ACCOUNT: [
                Plan(s(100), 5, 2, 1, "Europe/Berlin", 15, "cumulative"),
                Plan(s(200), 7),
                Plan(s(250), 8),
                Plan(s(250), 9),
            ]
        }

    def test_change_ids_are_deterministic(self) -> None:
        out = self.run([api(s(0)), api(s(10), "u2"), api(s(0), account="b")])
        first = out.changes[0]
        assert first == UsageChange(ACCOUNT, s(0), 1, 0)
        assert first.change_id == sha256(f"{ACCOUNT}|{s(0)}|1".encode()).hexdigest()[:16]
        assert len({c.change_id for c in out.changes}) == len(out.changes) == 6
        assert UsageChange(ACCOUNT, s(0), 1, 5).change_id == first.change_id  # licenses are not part of the id

    # -- peak windows -----------------------------------------------------------------------------------------------

    def test_fixed_windows_max_at_time_over_licenses_and_license_ms(self) -> None:
        # licenses 1; u1 [30 s, 135 s), u2 [90 s, 150 s), u3 [140 s, 145 s).
        # usage: [30,90) 1, [90,135) 2, [135,140) 1, [140,145) 2, [145,150) 1.
        events = [plan(s(0), 1), *work("u1", s(30), s(135)), *work("u2", s(90), s(150))]
        out = self.run([*events, *work("u3", s(140), s(145))])
        assert windows(out, "1m") == [
            (s(0), s(60), 1, s(30), 0, 30_000),  # 30 s at 1
            (s(60), s(120), 2, s(90), 30_000, 90_000),  # [60,90) 1 + [90,120) 2; max 2 first at 90 s
            (s(120), s(180), 2, s(120), 20_000, 50_000),  # 30 + 5 + 10 + 5 s; over 15 + 5 s; max held at the start
        ]
        whole = (2, s(90), 50_000, 170_000)  # 30 + 90 + 50 s
        assert windows(out, "15m") == [(s(0), s(900), *whole)]
        assert windows(out, "1h") == [(s(0), s(3600), *whole)]
        assert windows(out, "1d") == [(T0, T0 + DAY, *whole)]

    def test_time_over_licenses_follows_plan_changes_inside_a_window(self) -> None:
        # Two users from 0 s to 300 s (usage 2); licenses 1, then 2 from 20 s, then 1 again from 40 s.
        out = self.run([plan(s(0), 1), api(s(0), "u1"), api(s(0), "u2"), plan(s(20), 2), plan(s(40), 1)])
        # Only the minute of the changes has a 1m window; the next four are quiet (implied: 2 users over 1 license).
        assert windows(out, "1m") == [(s(0), s(60), 2, s(0), 40_000, 120_000)]  # over [0,20) and [40,60)
        assert windows(out, "15m") == [(s(0), s(900), 2, s(0), 280_000, 600_000)]

    def test_one_api_presence_cut_into_windows(self) -> None:
        out = self.run([api(s(30))])  # counted [0:30, 5:30)
        m = MINUTE
        # 1m windows only where usage changed (SPEC 5): the minutes of 0:30 and 5:30; the three between are quiet.
        assert windows(out, "1m") == [(T0, T0 + m, 1, s(30), 30_000, 30_000), (T0 + 5 * m, T0 + 6 * m, 1, T0 + 5 * m,
                                                                               30_000, 30_000)]  # fmt: skip
        assert windows(out, "15m") == [(T0, T0 + 15 * m, 1, s(30), 300_000, 300_000)]
        assert windows(out, "1h") == [(T0, T0 + H, 1, s(30), 300_000, 300_000)]

    def test_day_windows_are_utc_days_before_any_plan(self) -> None:
        # 300 s of api activity from 23:59 UTC: 60 s on the first day, 240 s on the next.
        out = self.run([api(T0 + DAY - MINUTE)])
        assert windows(out, "1d") == [
            (T0, T0 + DAY, 1, T0 + DAY - MINUTE, 60_000, 60_000),
            (T0 + DAY, T0 + 2 * DAY, 1, T0 + DAY, 240_000, 240_000),
        ]

    def test_local_day_windows_across_25_hour_dst_days(self) -> None:
        # Berlin leaves summer time on 2026-10-25: that local day is [2026-10-24T22:00Z, 2026-10-25T23:00Z).
        begin, finish = utc(2026, 10, 24, 21), utc(2026, 10, 25, 23, 30)
        events = [plan(utc(2026, 10, 24, 20), 0, zone="Europe/Berlin"), *work("u1", begin, finish)]
        # New York on 2026-11-01: [04:00Z, 2026-11-02T05:00Z); a portal presence 23:30-00:30 local on either side.
        nov1 = T0 - DAY
        spans = [*portal_span("u1", nov1 + 3 * H + 30 * MINUTE, nov1 + 4 * H + 30 * MINUTE),
                 *portal_span("u2", T0 + 4 * H + 30 * MINUTE, T0 + 5 * H + 30 * MINUTE)]  # fmt: skip
        ny = [{**event, "account_id": "ny"} for event in spans]
        out = self.run([plan(T0 - 30 * DAY, 5, zone="America/New_York", account="ny"), *events, *ny], LONG)
        assert windows(out, "1d") == [
            (utc(2026, 10, 23, 22), utc(2026, 10, 24, 22), 1, begin, H, H),  # 23:00-24:00 CEST
            (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23), 1, utc(2026, 10, 24, 22), 25 * H, 25 * H),
            (utc(2026, 10, 25, 23), utc(2026, 10, 26, 23), 1, utc(2026, 10, 25, 23), H // 2, H // 2),  # 00:00-00:30
        ]
        hours = windows(out, "1h")
        assert len(hours) == 27  # 21:00Z .. 23:30Z the next day: 26 full hours and a half
        assert hours[-1] == (utc(2026, 10, 25, 23), utc(2026, 10, 26), 1, utc(2026, 10, 25, 23), H // 2, H // 2)
        assert len(windows(out, "15m")) == 106
        assert windows(out, "1m") == [(begin, begin + MINUTE, 1, begin, MINUTE, MINUTE)]  # only where usage changed
        assert windows(out, "1d", "ny") == [
            (nov1 - 20 * H, nov1 + 4 * H, 1, nov1 + 3 * H + 30 * MINUTE, 0, 30 * MINUTE),
            (nov1 + 4 * H, T0 + 5 * H, 1, nov1 + 4 * H, 0, H),  # 25 hours long
            (T0 + 5 * H, T0 + DAY + 5 * H, 1, T0 + 5 * H, 0, 30 * MINUTE),
        ]

    def test_a_timezone_change_mid_day_leaves_two_overlapping_day_windows(self) -> None:
        # UTC until 12:00Z, then Asia/Tokyo (+9): 12:00Z is 21:00 on 2026-11-02 in Tokyo, whose day is
        # [2026-11-01T15:00Z, 2026-11-02T15:00Z). Session 10:00Z-14:00Z.
        events = [plan(utc(2026, 11, 2, 9), 0), *work("u1", utc(2026, 11, 2, 10), utc(2026, 11, 2, 14))]
        events.insert(3, plan(utc(2026, 11, 2, 12), 0, zone="Asia/Tokyo"))
        out = self.run(events, LONG)
        assert windows(out, "1d") == [
            (utc(2026, 11, 1, 15), utc(2026, 11, 2, 15), 1, utc(2026, 11, 2, 12), 2 * H, 2 * H),
            (utc(2026, 11, 2), utc(2026, 11, 3), 1, utc(2026, 11, 2, 10), 2 * H, 2 * H),
        ]
        assert [w[0] for w in windows(out, "1h")] == [utc(2026, 11, 2, hour) for hour in (10, 11, 12, 13)]

    def test_windows_without_usage_are_not_emitted(self) -> None:
        out = self.run([plan(s(0), 3), api(s(0)), api(s(7200)), portal_out(s(9000), "u2")])
        # Two api presences of 300 s each: a 1m window where each starts (where each ends, usage is 0), one 15 m and
        # one 1 h window each, one day; nothing for the hours without usage.
        assert [w[0] for w in windows(out, "1m")] == [s(0), s(7200)]
        assert windows(out, "15m") == [(s(0), s(900), 1, s(0), 0, 300_000), (s(7200), s(8100), 1, s(7200), 0, 300_000)]
        assert [w[5] for w in windows(out, "1h")] == [300_000, 300_000]
        assert windows(out, "1d") == [(T0, T0 + DAY, 1, s(0), 0, 600_000)]

    # -- arrival order, lateness, data_through (SPEC 2, 4) ----------------------------------------------------------

    def test_out_of_order_arrival_within_the_lateness_gives_the_sorted_result(self) -> None:
        ordered = [page(s(0), "u1"), signin(s(50), "u3"), start(s(60), "u3"), api(s(100), "u2"), hb(s(200), "u3"),
                   signout(s(300), "u3"), api(s(350), "u2"), page(s(400), "u1", "cc.alerts"), portal_out(s(700), "u1"),
                   api(s(700), "u4")]  # fmt: skip
        # Every event arrives less than 600 s behind the largest time seen before it.
        out = self.run([ordered[i] for i in (3, 6, 0, 1, 7, 2, 9, 5, 4, 8)])
        assert out.too_late == []
        # u1 portal [0, 700), u3 desktop [60, 300), u2 api [100, 650), u4 api [700, 1000).
        assert changes(out) == [(s(0), 1), (s(60), 2), (s(100), 3), (s(300), 2), (s(650), 1), (s(1000), 0)]

    def test_a_tenant_behind_the_others_loses_nothing_within_the_idle_lateness(self) -> None:
        """Two accounts on one partition; "late" publishes 30 minutes behind "live": nothing of it is too late."""
        history = []
        for minute in range(0, 120, 5):
            history.append(api(s(minute * 60), account="live"))
            if minute >= 30:
                history.append(api(s((minute - 30) * 60), "u2", account="late"))
        out = self.run(history)
        assert out.too_late == []
        assert changes(out, "late") == [(s(0), 1), (s(85 * 60 + 300), 0)]

    def test_an_event_hours_behind_its_partition_is_too_late_on_a_stream(self) -> None:
        events = [api(s(0), account="live"), api(s(3 * 3600), account="live"), api(s(0), "u2", account="late")]
        out = self.run(events)
        assert out.too_late == [2]  # below the idle floor W_p - 2 h; only that account's event
        assert changes(out, "late") == []
        late = self.run([api(s(3600)), api(s(0), "u2")])  # an hour behind its own account's watermark
        assert late.too_late == [1] and changes(late) == [(s(3600), 1), (s(3900), 0)]

    def test_an_account_whose_every_event_was_too_late_is_known_up_to_the_idle_floor(self) -> None:
        """SPEC 2 and 4: `H_a = max(W_a - allowed_lateness, W_p - account_idle_lateness)` for every account of the
        partition: without an admitted event of its own, the idle floor (its too_late dead letters name it)."""
        events = [api(s(0), account="live"), api(s(3 * 3600), account="live"), api(s(0), account="late")]
        out = self.run(events, settle=False)
        assert out.too_late == [2]
        assert out.horizons == {"live": s(3 * 3600 - 600), "late": s(3600)}

    def test_data_through_is_the_account_horizon_or_the_partition_idle_floor(self) -> None:
        events = [plan(s(0), 1), api(s(0)), api(s(600), "u2"), api(s(2 * 3600), "u3"), api(s(6 * 3600), account="b")]
        out = self.run(events, settle=False)
        # "b" at 6 h: its own horizon 6 h - 10 min; the partition's idle floor 4 h is above ACCOUNT's own 2 h - 10 min.
        assert out.horizons == {ACCOUNT: s(4 * 3600), "b": s(6 * 3600 - 600)}
        assert changes(out) == [(s(0), 1), (s(300), 0), (s(600), 1), (s(900), 0), (s(7200), 1), (s(7500), 0)]
        assert changes(out, "b") == []  # its presence from 6 h is not final yet
        stream_end = self.run([api(s(0)), api(s(1000))], settle=False)
        assert stream_end.horizons == {ACCOUNT: s(400)}
        assert intervals(stream_end) == [("u1", s(0), s(300))]

    def test_a_later_copy_of_an_event_counts_in_data_through(self) -> None:
        """docs/semantics.md 6 and 7: every admitted record moves the watermarks, a later copy of an event too."""
        events = [api(s(0), event_id="x"), api(s(1), event_id="x")]  # the conflicting copy is a second later
        assert self.run(events, settle=False).horizons == {ACCOUNT: s(1 - 600)}

    # -- reports, data_through, complete, peak_users (SPEC 4, docs/semantics.md 6) ---------------------------------

    def test_a_period_running_past_data_through(self) -> None:
        report = self.report(running_day(), NOV2, NOV4)
        assert (report.data_through, report.complete) == ("2026-11-02T14:50:00.000Z", False)  # W_a 15:00 - 10 min
        assert (report.peak_usage, report.peak_at) == (3, "2026-11-02T10:00:00.000Z")
        # 60 + 3 * 9 + 2 * 21 + 250 + 3 * 10 (14:40-14:50; nothing after data_through) = 409 user-minutes
        assert report.license_hours == 409 * MINUTE / HOUR
        assert report.seconds_over_licenses == 40 * 60.0  # 10:00-10:30 and 14:40-14:50
        assert report.distinct_users == 5
        # excess >= 1 for 30 min from 10:00 (billable 1); excess 2 from 14:40 lasts 20 min, but only 10 are known
        assert (report.billable_overage, report.over_allowance) == (1, 1)
        partial, *later = report.days
        assert (partial.complete, partial.license_hours, partial.max_excess, partial.distinct_users) == (
            False, report.license_hours, 2, 5
        )  # fmt: skip
        for day in later:
            assert (day.peak_usage, day.peak_at, day.seconds_over_licenses, day.max_excess) == (None, None, None, None)
            assert (day.license_hours, day.distinct_users, day.complete, day.licenses) == (None, None, False, 1)

    def test_peak_users_on_two_devices_and_the_portal_with_ties(self) -> None:
        assert self.report(running_day(), NOV2, NOV2).peak_users == [
            PeakUser(user_id="u1", devices=["laptop-1", "phone-1"], portal=True, api=False),
            PeakUser(user_id="u2", devices=[], portal=False, api=True),
            PeakUser(user_id="u3", devices=[], portal=True, api=False),
        ]

    def test_a_period_entirely_before_or_after_data_through(self) -> None:
        before = self.report(running_day(), NOV1, NOV1)
        assert before.complete and before.days[0].complete
        assert (before.peak_usage, before.peak_at, before.peak_users, before.days[0].peak_usage) == (0, None, [], 0)
        after = self.report(running_day(), NOV3, NOV4)
        assert not after.complete and after.data_through == "2026-11-02T14:50:00.000Z"
        assert (after.peak_usage, after.peak_at, after.peak_users, after.license_hours) == (0, None, [], 0.0)
        assert all(d.peak_usage is None and not d.complete for d in after.days)

    def test_data_through_exactly_at_a_day_boundary(self) -> None:
        # another account on the partition, last seen at Nov 3 02:00: the idle rule gives data through Nov 3 00:00
        events = [*running_day(), api(T0 + DAY + 2 * H, "z", account="other")]
        report = self.report(events, NOV2, NOV3)
        assert report.data_through == "2026-11-03T00:00:00.000Z"
        first, second = report.days
        assert (first.complete, second.complete, report.complete) == (True, False, False)
        assert first.license_hours == report.license_hours == 439 * MINUTE / HOUR  # 409 + 3 * 10 after 14:50
        assert (second.peak_usage, second.license_hours, second.distinct_users) == (None, None, None)
        whole = self.report(events, NOV2, NOV2)
        assert whole.complete and whole.days[0].complete
        assert whole.billable_overage == 2  # excess 2 for the 20 minutes from 14:40, now all known

    def test_an_account_without_data(self) -> None:
        report = self.report(running_day(), NOV2, NOV2, account="nobody")
        assert (report.data_through, report.complete, report.peak_users, report.peak_usage) == (None, False, [], 0)
        assert report.days[0].peak_usage is None and report.days[0].distinct_users is None

    def test_the_presences_of_the_running_day(self) -> None:
        out = self.run(running_day())
        spans = [
            ("u1", "desktop", "laptop-1", 9 * H, 15 * H),
            ("u1", "desktop", "phone-1", 9 * H + 30 * MINUTE, 11 * H + 30 * MINUTE),
            ("u1", "portal", None, 10 * H, 11 * H),
            ("u2", "api", None, 10 * H, 10 * H + 9 * MINUTE),
            ("u3", "portal", None, 10 * H, 10 * H + 30 * MINUTE),
            ("u4", "portal", None, 14 * H + 40 * MINUTE, 15 * H),
            ("u5", "portal", None, 14 * H + 40 * MINUTE, 15 * H),
        ]
        assert out.presences == [PresenceInterval(ACCOUNT, u, k, d, T0 + a, T0 + b) for u, k, d, a, b in spans]  # type: ignore[arg-type]
        assert changes(out) == [(T0 + t * MINUTE, u) for t, u in ((540, 1), (600, 3), (609, 2), (630, 1), (880, 3),
                                                                  (900, 0))]  # fmt: skip


class FileReadingScenarios:
    """Scenarios of the file reading (the restated view), for the implementations that read files."""

    run: Any

    def test_a_file_counts_every_event_however_late_it_arrived(self) -> None:
        events = [api(s(3600)), api(s(0), "u2"), api(s(8 * 3600), "u3")]  # u2 an hour behind: too late on a stream
        out = self.run(events, reading="file", settle=False)
        assert out.too_late == []
        # What is final below data_through: not u3's request, 8 h later (a file has no arrival times, no future skew)
        assert changes(out) == [(s(0), 1), (s(300), 0), (s(3600), 1), (s(3900), 0)]
        assert out.horizons == {ACCOUNT: s(8 * 3600 - 600)}

    def test_a_later_copy_of_an_event_counts_in_the_data_through_of_a_file(self) -> None:
        """docs/semantics.md 6: `W_a` of a file is its largest valid occurred_at, later copies of an event too."""
        events = [api(s(0), event_id="x"), api(s(1), event_id="x")]  # the conflicting copy is a second later
        out = self.run(events, reading="file", settle=False)
        assert out.duplicates == (0, 1)
        assert out.horizons == {ACCOUNT: s(1 - 600)}


class OrphanScenarios:
    """Orphan counts (SPEC 1), for the implementations that count them (the fold and the worker)."""

    run: Any

    def test_orphans_are_counted(self) -> None:
        events = [
            signout(s(0)),  # not signed in
            end(s(1)),  # not signed in
            start(s(2)),  # not signed in
            portal_out(s(3)),  # portal off
            signin(s(4)),
            signin(s(5)),  # already signed in: not an orphan
            end(s(6)),  # signed in, no session
            hb(s(7), device="d9"),  # heartbeat of a signed-out device: not an orphan
            page(s(8), name="home"),  # non-CC page while off: not an orphan
        ]
        out = self.run(events)
        assert out.orphans == 5 and changes(out) == []

    def test_orphans_of_sessions_and_the_portal(self) -> None:
        assert self.run(SIGN_IN_NEEDED).orphans == 2
        assert self.run(PORTAL).orphans == 1
        assert self.run([signin(s(0)), start(s(180))]).orphans == 1  # the start comes after the liveness expiry


class TestFold(FileReadingScenarios, OrphanScenarios, ScenarioContract):
    implementation = Fold()


class TestDriver(OrphanScenarios, ScenarioContract):
    implementation = Driver()


class TestEngine(FileReadingScenarios, ScenarioContract):
    implementation = Engine()
