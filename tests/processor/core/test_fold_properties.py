"""Property tests of the fold against a naive oracle written from docs/semantics.md (batch rules, no timers).

The oracle works on the whole sorted history: presence intervals per device/user with the batch form of the
timers ("a sign-out mark at e + timeout if the next event of the device is at or after it"), unions per user,
then usage, usage changes and peak windows (1d in UTC: the random plans keep UTC).
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.core.fold import AccountFold
from processor.core.model import FIXED_WINDOW_MS, NEVER, FoldOutput, Settings
from processor.core.partition import PartitionDriver, fold_batch, fold_history, tick
from schemas.events import CONTACT_CENTER_PAGES, Event, fingerprint
from tests.processor.core.test_fold import T0, ev

SETTINGS = Settings(max_future_skew_ms=10**12)
DAY = 86_400_000
KINDS = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000, "1d": DAY}
KIND_ORDER = {kind: index for index, kind in enumerate(KINDS)}
assert all(FIXED_WINDOW_MS[kind] == KINDS[kind] for kind in FIXED_WINDOW_MS)

TYPES = [
    "desktop.heartbeat",
    "desktop.heartbeat",
    "desktop.heartbeat",
    "desktop.signed_in",
    "desktop.signed_in",
    "desktop.signed_out",
    "work_session.started",
    "work_session.started",
    "work_session.ended",
    "portal.page_viewed",
    "portal.page_viewed",
    "portal.signed_out",
    "api.request",
    "account.plan_changed",
]

raw_event = st.tuples(
    st.integers(0, 300),  # time in 10 s steps (50 min)
    st.sampled_from([0, 0, 0, 1, 999]),  # ms offset: same-instant collisions and near misses
    st.sampled_from(TYPES),
    st.integers(0, 2),  # user
    st.integers(0, 1),  # device
    st.booleans(),  # CC page?
    st.sampled_from(["acme", "acme", "beta"]),
    st.integers(0, 4),  # licenses of a plan
    st.sampled_from([None, None, None, None, "same", "conflict"]),  # re-sent copy of this event
)


def build(raws: list[tuple[Any, ...]]) -> list[Event]:
    """A history sorted by time (stable), with re-sent copies right after their original."""
    events: list[Event] = []
    for n, (step, offset, kind, user, device, cc, account, licenses, copy) in enumerate(
        sorted(raws, key=lambda r: r[0] * 10_000 + r[1])
    ):
        at = T0 + step * 10_000 + offset
        fields: dict[str, Any] = {}
        if kind.startswith(("desktop.", "work_session.")):
            fields = {"user_id": f"u{user}", "device_id": f"d{device}"}
        elif kind == "portal.page_viewed":
            fields = {"user_id": f"u{user}", "page": "cc.inbox" if cc else "meetings.list"}
        elif kind in ("portal.signed_out", "api.request"):
            fields = {"user_id": f"u{user}"}
        else:
            fields = {"licenses": licenses, "overage_allowance": 0, "billing_anchor_day": 1, "timezone": "UTC"}
        event = ev(kind, at, account=account, event_id=f"x{n}", **fields)
        events.append(event)
        if copy == "same":
            events.append(ev(kind, at, account=account, event_id=f"x{n}", schema_version=2, **fields))
        elif copy == "conflict" and "user_id" in fields:
            events.append(ev(kind, at, account=account, event_id=f"x{n}", **{**fields, "user_id": "u9"}))
    return events


# -- oracle -----------------------------------------------------------------------------------------------------------


def oracle(events: list[Event], s: Settings) -> dict[str, dict[str, Any]]:
    """Expected usage changes, intervals, windows and counters per account of a time-sorted history."""
    by_account: dict[str, list[Event]] = defaultdict(list)
    seen: dict[tuple[str, str], str] = {}
    dups: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for event in events:
        key = (event.account_id, event.event_id)
        if key in seen:
            dups[event.account_id][0 if seen[key] == fingerprint(event) else 1] += 1
            continue
        seen[key] = fingerprint(event)
        by_account[event.account_id].append(event)
    return {
        account: {**account_oracle(account, evs, s), "dups": tuple(dups[account])}
        for account, evs in by_account.items()
    }


def account_oracle(account: str, events: list[Event], s: Settings) -> dict[str, Any]:
    presences: dict[str, list[tuple[int, int]]] = defaultdict(list)
    orphans = 0
    devices: dict[tuple[str, str], list[Event]] = defaultdict(list)
    portal: dict[str, list[Event]] = defaultdict(list)
    api: dict[str, list[Event]] = defaultdict(list)
    plans: list[tuple[int, int]] = []
    for e in events:
        kind = e.type
        if kind.startswith(("desktop.", "work_session.")):
            devices[(e.user_id, e.device_id)].append(e)  # type: ignore[union-attr]
        elif kind.startswith("portal."):
            portal[e.user_id].append(e)  # type: ignore[union-attr]
        elif kind == "api.request":
            api[e.user_id].append(e)  # type: ignore[union-attr]
        else:
            plans.append((e.at_ms, e.licenses))  # type: ignore[union-attr]

    for (user, _), evs in devices.items():
        signed_in = session = False
        since = last = 0
        for i, e in enumerate(evs):
            if i and signed_in and e.at_ms >= last + s.device_timeout_ms:  # sign-out mark
                if session:
                    presences[user].append((since, last + s.device_timeout_ms))
                signed_in = session = False
            if e.type == "desktop.signed_in":
                signed_in = True
            elif e.type == "desktop.signed_out":
                if not signed_in:
                    orphans += 1
                elif session:
                    presences[user].append((since, e.at_ms))
                if signed_in:
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
                    presences[user].append((since, e.at_ms))
                    session = False
            last = e.at_ms
        if signed_in and session:
            presences[user].append((since, last + s.device_timeout_ms))

    for user, evs in portal.items():
        on, since, last = False, 0, 0
        for e in evs:
            if on and e.at_ms >= last + s.portal_idle_timeout_ms:
                presences[user].append((since, last + s.portal_idle_timeout_ms))
                on = False
            if e.type == "portal.page_viewed" and e.page in CONTACT_CENTER_PAGES:  # type: ignore[union-attr]
                if not on:
                    on, since = True, e.at_ms
                last = e.at_ms
            elif on:
                presences[user].append((since, e.at_ms))
                on = False
            elif e.type == "portal.signed_out":
                orphans += 1
        if on:
            presences[user].append((since, last + s.portal_idle_timeout_ms))

    for user, evs in api.items():
        on, since, last = False, 0, 0
        for e in evs:
            if on and e.at_ms >= last + s.api_activity_window_ms:
                presences[user].append((since, last + s.api_activity_window_ms))
                on = False
            if not on:
                on, since = True, e.at_ms
            last = e.at_ms
        if on:
            presences[user].append((since, last + s.api_activity_window_ms))

    counted: list[tuple[str, int, int]] = []
    for user, spans in presences.items():
        merged: list[list[int]] = []
        for a, b in sorted(span for span in spans if span[0] < span[1]):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        counted += [(user, a, b) for a, b in merged]

    def usage(t: int) -> int:
        return sum(1 for _, a, b in counted if a <= t < b)

    def licenses(t: int) -> int:
        return ([lic for at, lic in plans if at <= t] or [0])[-1]

    points = sorted({a for _, a, _ in counted} | {b for _, _, b in counted} | {at for at, _ in plans})
    changes = [(t, usage(t), licenses(t)) for t in points if usage(t) != sum(1 for _, a, b in counted if a < t <= b)]
    windows: dict[tuple[str, int], list[int]] = {}
    for t, nxt in zip(points, points[1:], strict=False):
        u, lic = usage(t), licenses(t)
        if u == 0:
            continue
        for kind, size in KINDS.items():
            x = t
            while x < nxt:
                start = x - x % size
                y = min(nxt, start + size)
                acc = windows.setdefault((kind, start), [0, start, 0, 0])  # max, max_at, over, license
                if u > acc[0]:
                    acc[0], acc[1] = u, x
                acc[2] += (y - x) if u > lic else 0
                acc[3] += u * (y - x)
                x = y
    # SPEC 5: a 1m window only for a minute in which usage changed or a plan took effect.
    marked = {t - t % KINDS["1m"] for t in [c[0] for c in changes] + [at for at, _ in plans]}
    window_rows = sorted(
        (start + KINDS[kind], list(KINDS).index(kind), start, *acc)
        for (kind, start), acc in windows.items()
        if kind != "1m" or start in marked
    )
    return {
        "changes": changes,
        "intervals": sorted((b, user, a) for user, a, b in counted),
        "windows": window_rows,
        "orphans": orphans,
        "applied": len(events),
    }


def observed(out: FoldOutput, account: str) -> dict[str, Any]:
    return {
        "changes": [(c.at_ms, c.usage, c.licenses) for c in out.usage_changes if c.account_id == account],
        "intervals": sorted((i.end_ms, i.user_id, i.start_ms) for i in out.intervals if i.account_id == account),
        "windows": [
            (w.end_ms, KIND_ORDER[w.kind], w.start_ms, w.max_usage, w.max_at_ms, w.over_licenses_ms, w.license_ms)
            for w in out.windows
            if w.account_id == account
        ],
    }


def per_account(out: FoldOutput) -> dict[str, FoldOutput]:
    split: dict[str, FoldOutput] = defaultdict(FoldOutput)
    for c in out.usage_changes:
        split[c.account_id].usage_changes.append(c)
    for w in out.windows:
        split[w.account_id].windows.append(w)
    for i in out.intervals:
        split[i.account_id].intervals.append(i)
    for account, p in out.plans:
        split[account].plans.append((account, p))
    return dict(split)


# -- properties -------------------------------------------------------------------------------------------------------


def structured(rnd: random.Random) -> list[Event]:
    """A busier history: users that sign in, work, heartbeat with gaps around the timeout, browse and call the api."""
    raws: list[tuple[Any, ...]] = []

    def add(step: int, kind: str, user: int, device: int = 0, cc: bool = True, licenses: int = 0) -> None:
        copy = rnd.choice([None] * 12 + ["same", "conflict"])
        raws.append((step, rnd.choice([0, 0, 1]), kind, user, device, cc, rnd.choice(["acme", "beta"]), licenses, copy))

    for user in range(rnd.randint(1, 4)):
        for device in range(rnd.randint(1, 2)):
            step = rnd.randint(0, 60)
            add(step, "desktop.signed_in", user, device)
            add(step + rnd.randint(0, 3), "work_session.started", user, device)
            for _ in range(rnd.randint(0, 12)):
                step += rnd.choice([3, 6, 12, 17, 18, 19, 30])  # 180 s device timeout = 18 steps
                kind = rnd.choice(["desktop.heartbeat"] * 4 + ["work_session.ended", "work_session.started"] * 2)
                add(step, kind, user, device)
            add(step + rnd.randint(0, 20), rnd.choice(["desktop.signed_out", "work_session.ended"]), user, device)
        for _ in range(rnd.randint(0, 6)):
            kind = rnd.choice(["portal.page_viewed"] * 3 + ["portal.signed_out"])
            add(rnd.randint(0, 200), kind, user, cc=rnd.random() < 0.7)
        for _ in range(rnd.randint(0, 4)):
            add(rnd.randint(0, 200), "api.request", user)
    for _ in range(rnd.randint(0, 3)):
        add(rnd.randint(0, 200), "account.plan_changed", 0, licenses=rnd.randint(0, 3))
    return build(raws)


histories = st.one_of(
    st.lists(raw_event, min_size=1, max_size=60).map(build),
    st.randoms(use_true_random=False).map(structured),
)


@settings(max_examples=200, deadline=None)
@given(histories)
def test_fold_matches_the_oracle(events: list[Event]) -> None:
    out, metrics, rejected = fold_history(events, SETTINGS, batch_size=7)
    expected = oracle(events, SETTINGS)
    assert all(verdict in ("duplicate", "duplicate_conflict") for _, _, verdict in rejected)
    for account, want in expected.items():
        got = observed(out, account)
        assert got["changes"] == want["changes"]
        assert got["intervals"] == want["intervals"]
        assert got["windows"] == [
            (end, kind, start, mx, at, over, lic) for end, kind, start, mx, at, over, lic in want["windows"] if lic > 0
        ]
        m = metrics[account]
        assert (m.orphan, m.applied, (m.duplicate, m.duplicate_conflict)) == (
            want["orphans"],
            want["applied"],
            want["dups"],
        )


@settings(max_examples=100, deadline=None)
@given(histories, st.randoms(use_true_random=False))
def test_out_of_order_delivery_within_lateness_equals_sorted(events: list[Event], rnd: random.Random) -> None:
    # Every instant gets one delay in [0, lateness]; events of one instant keep their relative order.
    delay: dict[int, int] = {}
    for event in events:
        delay.setdefault(event.at_ms, rnd.randrange(SETTINGS.allowed_lateness_ms + 1))
    shuffled = sorted(events, key=lambda e: e.at_ms + delay[e.at_ms])
    expected, _, _ = fold_history(events, SETTINGS, batch_size=5)
    got, _, rejected = fold_history(shuffled, SETTINGS, batch_size=rnd.randint(1, 9))
    assert all(verdict in ("duplicate", "duplicate_conflict") for _, _, verdict in rejected)
    assert per_account(got) == per_account(expected)


@settings(max_examples=100, deadline=None)
@given(histories, st.randoms(use_true_random=False))
def test_serialisation_round_trips_do_not_change_outputs(events: list[Event], rnd: random.Random) -> None:
    s = Settings(max_future_skew_ms=10**12, allowed_lateness_ms=rnd.choice([0, 30_000, 600_000]))
    cuts = sorted(rnd.sample(range(len(events) + 1), min(len(events) + 1, 4)))
    batches = [list(enumerate(events))[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)], strict=False)]

    def drive(round_trip: bool) -> tuple[FoldOutput, list[Any], list[Any]]:
        states: dict[str, AccountFold] = {}
        driver = PartitionDriver(s)
        out = FoldOutput()
        views = []
        for batch in batches:
            step, _ = fold_batch(states, driver, batch)
            out.extend(step)
            out.extend(tick(states, driver))
            views.append(sorted((k, f.live_view(s)) for k, f in states.items()))
            if round_trip:
                states = {k: AccountFold.from_bytes(f.to_bytes()) for k, f in states.items()}
                driver = PartitionDriver(s, driver.clock.watermark, driver.wakes)
        for fold in states.values():
            fold.advance_into(NEVER, s, out)
        return out, views, sorted((k, f.metrics) for k, f in states.items())

    plain = drive(False)
    trip = drive(True)
    assert trip[0] == plain[0]
    assert trip[1] == plain[1]
    assert trip[2] == plain[2]
