"""A naive reference written from docs/semantics.md (batch rules, no timers, no buffers), for the property tests.

It reads a history in one pass of arrival order (watermarks, horizons, too-late events, duplicates), then works on
each account's admitted events sorted by `(occurred_at, arrival)`: presence intervals per device, portal and api
with the batch form of the timers ("a sign-out mark at e + timeout if the next event is at or after it"), unions
per user, then usage by counting, usage changes and peak windows (account-local days with `zoneinfo`). Quadratic
and slow on purpose: nothing in it is shared with the implementations beyond the schema and the value types.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

from processor.core.model import PeakWindow, Plan, PresenceInterval, Settings, UsageChange, UserInterval
from schemas.events import CONTACT_CENTER_PAGES, Event, fingerprint
from tests.contract.implementations import History, Implementation, Outputs, Reading, reports_of

FIXED = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000}
NO_TIME = -(2**62)


@cache
def local_day(zone: str, at_ms: int) -> tuple[int, int]:
    """`[local midnight, next local midnight)` of the day holding `at_ms` in `zone`, in epoch ms."""
    tz = ZoneInfo(zone)
    day = datetime.fromtimestamp(at_ms / 1000, UTC).astimezone(tz).date()

    def midnight(d: Any) -> int:
        return int(datetime.combine(d, time(), tz).timestamp() * 1000)

    return midnight(day), midnight(day + timedelta(days=1))


class Oracle(Implementation):
    """The reference of the property tests (not one of the three implementations)."""

    name = "oracle"

    def run(self, history: History, reading: Reading) -> Outputs:
        s = history.settings
        own: dict[str, int] = {}  # W_a
        partition = NO_TIME  # W_p
        seen: dict[tuple[str, str], str] = {}
        admitted: dict[str, list[tuple[int, Event]]] = defaultdict(list)
        too_late: list[int] = []
        copies = [0, 0]
        for arrival, event in enumerate(history.decoded()):
            account, at = event.account_id, event.at_ms
            if reading == "stream":
                horizon = max(own.get(account, NO_TIME) - s.allowed_lateness_ms, partition - s.account_idle_lateness_ms)
                if at < horizon:
                    too_late.append(arrival)
                    continue
            own[account] = max(own.get(account, at), at)
            partition = max(partition, at)
            key = (account, event.event_id)
            if key in seen:
                copies[0 if seen[key] == fingerprint(event) else 1] += 1
                continue
            seen[key] = fingerprint(event)
            admitted[account].append((arrival, event))
        # Every account of the partition is known up to its horizon, one whose records were all too late too (its
        # horizon is then the idle floor, which its too_late dead letters name).
        horizons = {
            a: max(own.get(a, NO_TIME) - s.allowed_lateness_ms, partition - s.account_idle_lateness_ms)
            for a in {event.account_id for event in history.decoded()}
        }
        parts = [
            _account(account, [e for _, e in sorted(events, key=lambda item: (item[1].at_ms, item[0]))], s)
            for account, events in admitted.items()
        ]
        outputs = Outputs(
            [c for p in parts for c in p["changes"]],
            [w for p in parts for w in p["windows"]],
            [i for p in parts for i in p["intervals"]],
            [x for p in parts for x in p["presences"]],
            {p["account"]: p["plans"] for p in parts if p["plans"]},
            horizons,
            too_late,
            (copies[0], copies[1]),
            sum(p["orphans"] for p in parts),
        )
        outputs.reports = reports_of(outputs, history.report_ranges())
        return outputs


def _account(account: str, events: list[Event], s: Settings) -> dict[str, Any]:
    """Changes, intervals, presences, windows, plans and orphans of one account's time-sorted events."""
    spans: list[tuple[str, str, str | None, int, int]] = []  # (user, kind, device, start, end)
    orphans = 0
    devices: dict[tuple[str, str], list[Event]] = defaultdict(list)
    portal: dict[str, list[Event]] = defaultdict(list)
    api: dict[str, list[Event]] = defaultdict(list)
    plans: list[Plan] = []
    for e in events:
        kind = e.type
        if kind.startswith(("desktop.", "work_session.")):
            devices[(e.user_id, e.device_id)].append(e)  # type: ignore[union-attr]
        elif kind.startswith("portal."):
            portal[e.user_id].append(e)  # type: ignore[union-attr]
        elif kind == "api.request":
            api[e.user_id].append(e)  # type: ignore[union-attr]
        else:
            plans.append(Plan(e.at_ms, e.licenses, e.overage_allowance, e.billing_anchor_day, e.timezone,  # type: ignore[union-attr]
                              e.grace_minutes, e.grace_mode))  # type: ignore[union-attr]  # fmt: skip

    for (user, device), evs in devices.items():
        signed_in = session = False
        since = last = 0
        for i, e in enumerate(evs):
            if i and signed_in and e.at_ms >= last + s.device_timeout_ms:  # sign-out mark
                if session:
                    spans.append((user, "desktop", device, since, last + s.device_timeout_ms))
                signed_in = session = False
            if e.type == "desktop.signed_in":
                signed_in = True
            elif e.type == "desktop.signed_out":
                if not signed_in:
                    orphans += 1
                elif session:
                    spans.append((user, "desktop", device, since, e.at_ms))
                signed_in = session = False
            elif e.type == "work_session.started":
                if not signed_in:
                    orphans += 1
                elif not session:
                    session, since = True, e.at_ms
            elif e.type == "work_session.ended":
                if not session:
                    orphans += 1
                else:
                    spans.append((user, "desktop", device, since, e.at_ms))
                    session = False
            last = e.at_ms
        if signed_in and session:
            spans.append((user, "desktop", device, since, last + s.device_timeout_ms))

    for user, evs in portal.items():
        on, since, last = False, 0, 0
        for e in evs:
            if on and e.at_ms >= last + s.portal_idle_timeout_ms:
                spans.append((user, "portal", None, since, last + s.portal_idle_timeout_ms))
                on = False
            if e.type == "portal.page_viewed" and e.page in CONTACT_CENTER_PAGES:  # type: ignore[union-attr]
                if not on:
                    on, since = True, e.at_ms
                last = e.at_ms
            elif on:
                spans.append((user, "portal", None, since, e.at_ms))
                on = False
            elif e.type == "portal.signed_out":
                orphans += 1
        if on:
            spans.append((user, "portal", None, since, last + s.portal_idle_timeout_ms))

    for user, evs in api.items():
        on, since, last = False, 0, 0
        for e in evs:
            if on and e.at_ms >= last + s.api_activity_window_ms:
                spans.append((user, "api", None, since, last + s.api_activity_window_ms))
                on = False
            if not on:
                on, since = True, e.at_ms
            last = e.at_ms
        if on:
            spans.append((user, "api", None, since, last + s.api_activity_window_ms))

    spans = [span for span in spans if span[3] < span[4]]  # a zero-length presence counts nothing
    counted: list[tuple[str, int, int]] = []
    for user in sorted({span[0] for span in spans}):
        merged: list[list[int]] = []
        for a, b in sorted((a, b) for u, _, _, a, b in spans if u == user):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        counted += [(user, a, b) for a, b in merged]

    def usage(t: int) -> int:
        return sum(1 for _, a, b in counted if a <= t < b)

    def before(t: int) -> int:
        return sum(1 for _, a, b in counted if a < t <= b)

    def plan(t: int) -> Plan:
        return ([p for p in plans if p.at_ms <= t] or [Plan(NO_TIME)])[-1]

    points = sorted({a for _, a, _ in counted} | {b for _, _, b in counted} | {p.at_ms for p in plans})
    changes = [UsageChange(account, t, usage(t), plan(t).licenses) for t in points if usage(t) != before(t)]
    windows: dict[tuple[str, int, int], list[int]] = {}  # max, max_at, over, license
    for t, nxt in zip(points, points[1:], strict=False):
        u, terms = usage(t), plan(t)
        if u == 0:
            continue
        for size in ("1m", "15m", "1h", "1d"):
            x = t
            while x < nxt:
                if size == "1d":
                    start, end = local_day(terms.timezone, x)
                else:
                    start = x - x % FIXED[size]
                    end = start + FIXED[size]
                y = min(nxt, end)
                acc = windows.setdefault((size, start, end), [0, start, 0, 0])
                if u > acc[0]:
                    acc[0], acc[1] = u, x
                acc[2] += (y - x) if u > terms.licenses else 0
                acc[3] += u * (y - x)
                x = y
    # SPEC 5: a 1m window only for a minute in which usage changed or a plan took effect.
    marked = {t - t % FIXED["1m"] for t in [c.at_ms for c in changes] + [p.at_ms for p in plans]}
    return {
        "account": account,
        "changes": changes,
        "intervals": [UserInterval(account, user, a, b) for user, a, b in counted],
        "presences": [PresenceInterval(account, u, k, d, a, b) for u, k, d, a, b in spans],  # type: ignore[arg-type]
        "windows": [
            PeakWindow(account, kind, start, end, *acc)  # type: ignore[arg-type]
            for (kind, start, end), acc in windows.items()
            if acc[3] > 0 and (kind != "1m" or start in marked)
        ],
        "plans": plans,
        "orphans": orphans,
    }
