"""Peak windows of the fold (docs/semantics.md section 5), with expected numbers worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime

from processor.core.days import day_bounds
from processor.core.model import FoldOutput, Settings
from schemas.events import to_ms
from tests.processor.core.test_fold import T0, api, end, plan, run, s, signin, start

H = 3_600_000
# Desktop sessions without heartbeats that last for days; no future-skew rejections over gaps.
LONG = Settings(device_timeout_ms=3 * 24 * H, max_future_skew_ms=10**12)


def utc(*parts: int) -> int:
    return to_ms(datetime(*parts, tzinfo=UTC))  # type: ignore[misc]


def rows(out: FoldOutput, kind: str) -> list[tuple[int, int, int, int, int, int]]:
    return [
        (w.start_ms, w.end_ms, w.max_usage, w.max_at_ms, w.over_licenses_ms, w.license_ms)
        for w in out.windows
        if w.kind == kind
    ]


def session(user: str, begin: int, finish: int) -> list:
    return [signin(begin, user=user), start(begin, user=user), end(finish, user=user)]


def test_fixed_windows_max_at_over_licenses_and_license_ms() -> None:
    # licenses 1; u1 [30 s, 135 s), u2 [90 s, 150 s), u3 [140 s, 145 s).
    # usage: [30,90) 1, [90,135) 2, [135,140) 1, [140,145) 2, [145,150) 1.
    events = [plan(s(0), 1), *session("u1", s(30), s(135)), *session("u2", s(90), s(150))]
    events += session("u3", s(140), s(145))
    out, _, _ = run(events)
    assert rows(out, "1m") == [
        # [0,60): 30 s at 1.
        (s(0), s(60), 1, s(30), 0, 30_000),
        # [60,90) 1 + [90,120) 2 = 30 + 60 = 90 s; over 30 s; max 2 first at 90 s.
        (s(60), s(120), 2, s(90), 30_000, 90_000),
        # [120,135) 2 + [135,140) 1 + [140,145) 2 + [145,150) 1 = 30 + 5 + 10 + 5 = 50 s; over 15 + 5 = 20 s;
        # max 2 already held at the window's start.
        (s(120), s(180), 2, s(120), 20_000, 50_000),
    ]
    whole = (2, s(90), 50_000, 170_000)  # 30 + 90 + 50 s
    assert rows(out, "15m") == [(s(0), s(900), *whole)]
    assert rows(out, "1h") == [(s(0), s(3600), *whole)]
    assert rows(out, "1d") == [(T0, T0 + 24 * H, *whole)]
    # Emitted in order of end, then kind.
    assert [w.kind for w in out.windows] == ["1m", "1m", "1m", "15m", "1h", "1d"]


def test_over_licenses_follows_plan_changes_inside_a_window() -> None:
    # Two users from 0 s to 300 s (usage 2); licenses 1, then 2 from 20 s, then 1 again from 40 s.
    events = [plan(s(0), 1), api(s(0), "u1"), api(s(0), "u2"), plan(s(20), 2), plan(s(40), 1)]
    out, _, _ = run(events)
    # Only the minute of the changes has a 1m window; the next four are quiet (implied: 2 users over 1 license).
    assert rows(out, "1m") == [(s(0), s(60), 2, s(0), 40_000, 120_000)]  # over [0,20) and [40,60)
    assert rows(out, "15m") == [(s(0), s(900), 2, s(0), 280_000, 600_000)]


def test_day_window_defaults_to_utc_before_any_plan() -> None:
    # 300 s of api activity from 23:59 UTC: 60 s on the first day, 240 s on the next.
    out, _, _ = run([api(T0 + 24 * H - 60_000)])
    assert rows(out, "1d") == [
        (T0, T0 + 24 * H, 1, T0 + 24 * H - 60_000, 60_000, 60_000),
        (T0 + 24 * H, T0 + 48 * H, 1, T0 + 24 * H, 240_000, 240_000),
    ]


def test_day_windows_on_a_dst_day_are_25_hours() -> None:
    # Europe/Berlin leaves summer time on 2026-10-25: that local day is [2026-10-24T22:00Z, 2026-10-25T23:00Z).
    begin, finish = utc(2026, 10, 24, 21), utc(2026, 10, 25, 23, 30)
    out, _, _ = run([plan(utc(2026, 10, 24, 20), 0, tz="Europe/Berlin"), *session("u1", begin, finish)], LONG)
    assert rows(out, "1d") == [
        (utc(2026, 10, 23, 22), utc(2026, 10, 24, 22), 1, begin, H, H),  # 23:00-24:00 CEST
        (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23), 1, utc(2026, 10, 24, 22), 25 * H, 25 * H),
        (utc(2026, 10, 25, 23), utc(2026, 10, 26, 23), 1, utc(2026, 10, 25, 23), H // 2, H // 2),  # 00:00-00:30 CET
    ]
    hours = rows(out, "1h")
    assert len(hours) == 27  # 21:00Z .. 23:30Z the next day: 26 full hours and a half
    assert hours[-1] == (utc(2026, 10, 25, 23), utc(2026, 10, 26), 1, utc(2026, 10, 25, 23), H // 2, H // 2)
    assert len(rows(out, "15m")) == 106
    assert rows(out, "1m") == [(begin, begin + 60_000, 1, begin, 60_000, 60_000)]  # only the minute usage changed


def test_day_bounds_of_berlin_dst_days() -> None:
    assert day_bounds("Europe/Berlin", utc(2026, 10, 25, 12)) == (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    assert day_bounds("Europe/Berlin", utc(2026, 3, 29, 12)) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))  # 23 h
    # The last ms of a day and the first of the next.
    assert day_bounds("Europe/Berlin", utc(2026, 10, 25, 23) - 1)[1] == utc(2026, 10, 25, 23)
    assert day_bounds("Europe/Berlin", utc(2026, 10, 25, 23))[0] == utc(2026, 10, 25, 23)


def test_time_zone_change_mid_day_leaves_two_overlapping_day_windows() -> None:
    # UTC until 12:00Z, then Asia/Tokyo (+9): 12:00Z is 21:00 on 2026-11-02 in Tokyo, whose day is
    # [2026-11-01T15:00Z, 2026-11-02T15:00Z). Session 10:00Z-14:00Z.
    events = [plan(utc(2026, 11, 2, 9), 0), *session("u1", utc(2026, 11, 2, 10), utc(2026, 11, 2, 14))]
    events.insert(3, plan(utc(2026, 11, 2, 12), 0, tz="Asia/Tokyo"))
    out, _, _ = run(events, LONG)
    assert rows(out, "1d") == [
        (utc(2026, 11, 1, 15), utc(2026, 11, 2, 15), 1, utc(2026, 11, 2, 12), 2 * H, 2 * H),
        (utc(2026, 11, 2), utc(2026, 11, 3), 1, utc(2026, 11, 2, 10), 2 * H, 2 * H),
    ]
    assert [w[0] for w in rows(out, "1h")] == [utc(2026, 11, 2, hour) for hour in (10, 11, 12, 13)]


def test_windows_without_usage_are_not_emitted() -> None:
    out, _, _ = run([plan(s(0), 3), api(s(0)), api(s(7200))])
    # Two api presences of 300 s each: a 1m window where each starts (where each ends, usage is 0), one 15 m and
    # one 1 h window each, one day.
    assert [w[0] for w in rows(out, "1m")] == [s(0), s(7200)]
    assert rows(out, "15m") == [(s(0), s(900), 1, s(0), 0, 300_000), (s(7200), s(8100), 1, s(7200), 0, 300_000)]
    assert [w[5] for w in rows(out, "1h")] == [300_000, 300_000]
    assert rows(out, "1d") == [(T0, T0 + 24 * H, 1, s(0), 0, 600_000)]
