"""What people do during one account-day, as compact event tuples.

An event tuple is `(occurred_at_ms, type_code, user, device, page, endpoint, plan, tail)` with -1 for "absent"
(indices into the `Catalog`). Heartbeats are not listed one by one: a signed-in stretch of a device is a span
`(from_ms, to_ms, user, device, tail)` and the engine expands it with numpy.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple

from processor.simulation.accounts import Account, Agent, Catalog, roster, supervisor_roster
from processor.simulation.accounts import rng as keyed_rng
from processor.simulation.config import (
    API_REQUEST,
    CC_PAGES,
    ENDPOINTS,
    HOUR_MS,
    MINUTE_MS,
    OTHER_PAGES,
    PAGE_VIEWED,
    PLAN_CHANGED,
    PORTAL_SIGNED_OUT,
    SIGNED_IN,
    SIGNED_OUT,
    WS_ENDED,
    WS_STARTED,
    SimConfig,
)

EventTuple = tuple[int, int, int, int, int, int, int, int]
Span = tuple[int, int, int, int, int]

_PAUSE, _RECONNECT, _CRASH = 0, 1, 2
POLL_AFTER_LAST_DAY_MS = 10 * HOUR_MS  # night shifts started on the last day end by about 08:30 local


class Action(NamedTuple):
    """A planned event of a shift: a break (`arg` = when work resumes, `flag` = signs out for lunch), a reconnect
    (`arg` = moves to the other device) or a crash. Sorts by time first, as a plain tuple."""

    at: int
    kind: int
    arg: int
    flag: int


def plan_actions(rr: random.Random, agent: Agent, start: int, end: int) -> list[Action]:
    """The breaks of a shift (three from 8 h, one from 3 h, else none) and maybe one incident, in time order."""
    randint = rr.randint
    length = end - start
    actions: list[Action] = []
    if length >= 8 * HOUR_MS:
        for centre, low, high, lunch in (
            (start + 2 * HOUR_MS, 10, 15, False),
            (start + length // 2, 30, 60, True),
            (end - 2 * HOUR_MS, 10, 15, False),
        ):
            ps = centre + randint(-20, 20) * MINUTE_MS + rr.randrange(MINUTE_MS)
            pe = ps + randint(low, high) * MINUTE_MS + rr.randrange(MINUTE_MS)
            actions.append(Action(ps, _PAUSE, pe, int(lunch and rr.random() < 0.3)))
    elif length >= 3 * HOUR_MS:
        ps = start + length // 2 + randint(-15, 15) * MINUTE_MS + rr.randrange(MINUTE_MS)
        actions.append(Action(ps, _PAUSE, ps + randint(10, 15) * MINUTE_MS + rr.randrange(MINUTE_MS), 0))
    incident = _incident(rr, agent, start, end, actions)
    if incident is not None:
        actions.append(incident)
    actions.sort()
    return actions


def _incident(rr: random.Random, agent: Agent, start: int, end: int, breaks: list[Action]) -> Action | None:
    """Sometimes (14% of shifts over an hour) a reconnect or a crash, at least 3 minutes away from every break."""
    roll = rr.random()
    if roll >= 0.14 or end - start <= 60 * MINUTE_MS:
        return None
    x = rr.randint(start + 20 * MINUTE_MS, end - 20 * MINUTE_MS)
    if any(ps - 3 * MINUTE_MS <= x <= pe + 3 * MINUTE_MS for ps, _, pe, _ in breaks):
        return None
    if roll < 0.10:
        return Action(x, _RECONNECT, int(agent.has_second and rr.random() < 0.35), 0)
    return Action(x, _CRASH, 0, 0)


@dataclass(slots=True)
class _Shift:
    """An agent's shift in progress: the device in use (`k`), when each device's signed-in span and the current
    work session began. Writes events to `out`, closed signed-in spans to `spans` and sessions to `track`."""

    rr: random.Random
    out: list[EventTuple]
    spans: list[Span]
    track: list[tuple[int, int]] | None
    user: int
    devs: tuple[int, int, int]
    tails: tuple[int, int, int]
    k: int
    span_from: list[int] = field(default_factory=lambda: [0, 0])
    sess_start: int = 0

    def emit(self, at: int, code: int, k: int) -> None:
        """An event of the agent on device `k`."""
        self.out.append((at, code, self.user, self.devs[k], -1, -1, -1, self.tails[k]))

    def sign_in(self, at: int, k: int) -> None:
        """Signs in on device `k`: its signed-in span starts."""
        self.emit(at, SIGNED_IN, k)
        self.span_from[k] = at

    def close_span(self, at: int, k: int) -> None:
        """Device `k`'s signed-in span (its heartbeats) ends at `at`."""
        self.spans.append((self.span_from[k], at, self.user, self.devs[k], self.tails[k]))

    def sign_out(self, at: int, k: int) -> None:
        """Signs out of device `k`: its signed-in span ends."""
        self.emit(at, SIGNED_OUT, k)
        self.close_span(at, k)

    def start_session(self, at: int) -> None:
        """A work session starts on the device in use."""
        self.emit(at, WS_STARTED, self.k)
        self.sess_start = at

    def session_over(self, at: int) -> None:
        """The current session ends at `at` (recorded in `track`, no event)."""
        if self.track is not None:
            self.track.append((self.sess_start, at))

    def pause(self, at: int, resume_at: int, lunch_sign_out: bool) -> None:
        """A break: ends the session, maybe signs out and back in around lunch, starts a new session."""
        k = self.k
        self.emit(at, WS_ENDED, k)
        self.session_over(at)
        if lunch_sign_out:
            self.sign_out(at + self.rr.randint(2_000, 20_000), k)
            self.sign_in(resume_at - self.rr.randint(30_000, 120_000), k)
        self.start_session(resume_at)

    def reconnect(self, at: int, switch_device: bool) -> None:
        """The client reconnects (sign-out, sign-in, new session), or the agent moves to the other device and then
        signs out of the first."""
        randint = self.rr.randint
        self.session_over(at)
        k = self.k
        if switch_device:
            self.k = 1 - k
            self.sign_in(at, self.k)
            resumed = at + randint(3_000, 20_000)
            self.emit(resumed, WS_STARTED, self.k)
            self.sign_out(resumed + randint(5_000, 60_000), k)
        else:
            self.sign_out(at, k)
            back = at + randint(5_000, 60_000)
            self.sign_in(back, k)
            resumed = back + randint(2_000, 10_000)
            self.emit(resumed, WS_STARTED, k)
        self.sess_start = resumed

    def crash(self, at: int, next_at: int) -> bool:
        """Heartbeats stop, no sign-out; maybe back on the same device a few minutes later (False: the shift ends
        here, also when the comeback would come within 2 minutes of the next action `next_at`)."""
        rr = self.rr
        self.close_span(at, self.k)
        self.session_over(at)
        back = at + rr.randint(4, 15) * MINUTE_MS + rr.randrange(MINUTE_MS)
        if rr.random() < 0.3 or back + 2 * MINUTE_MS >= next_at:
            return False
        self.sign_in(back, self.k)
        self.start_session(back + rr.randint(5_000, 60_000))
        return True

    def finish(self, end: int) -> None:
        """End of the shift: ends the session (7% sign out without ending it first) and signs out."""
        if self.rr.random() < 0.93:
            self.emit(end, WS_ENDED, self.k)
            signed_out = end + self.rr.randint(2_000, 30_000)
        else:
            signed_out = end
        self.sign_out(signed_out, self.k)
        self.session_over(end)


def agent_day(
    rr: random.Random,
    out: list[EventTuple],
    spans: list[Span],
    agent: Agent,
    start: int,
    end: int,
    track: list[tuple[int, int]] | None = None,
) -> None:
    """One agent's shift: sign in, work sessions around breaks and lunch, incidents, sign out.

    Session intervals go to `track` (when given) as a lower bound of the agent's real desktop presence.
    """
    k = 1 if agent.has_second and rr.random() < 0.1 else 0  # starts on the second device
    shift = _Shift(rr, out, spans, track, agent.user, agent.devs, agent.tails, k)
    shift.sign_in(start, shift.k)
    shift.start_session(start + rr.randint(5_000, 90_000))
    actions = plan_actions(rr, agent, start, end)
    for number, (at, kind, arg, flag) in enumerate(actions):
        if kind == _PAUSE:
            shift.pause(at, resume_at=arg, lunch_sign_out=bool(flag))
        elif kind == _RECONNECT:
            shift.reconnect(at, switch_device=bool(arg))
        else:
            next_at = actions[number + 1].at if number + 1 < len(actions) else end
            if not shift.crash(at, next_at):
                return
    shift.finish(end)


def supervisor_day(
    rr: random.Random, out: list[EventTuple], user: int, user_tail: int, page_base: int, start: int, end: int
) -> None:
    """A supervisor browsing the portal: mostly Contact Center pages, some others, idle gaps, sign-out."""
    append = out.append
    randint = rr.randint
    random_ = rr.random
    n_cc = len(CC_PAGES)
    n_other = len(OTHER_PAGES)
    t = start
    last = start
    while t < end:
        page = rr.randrange(n_cc) if random_() < 0.8 else n_cc + rr.randrange(n_other)
        append((t, PAGE_VIEWED, user, -1, page, -1, -1, page_base + page))
        last = t
        roll = random_()
        if roll < 0.85:
            t += randint(20_000, 300_000)
        elif roll < 0.97:
            t += randint(360_000, 840_000)
        else:
            t += randint(960_000, 2_400_000)  # long enough for the portal idle timeout
    if random_() < 0.7:
        append((last + randint(1_000, 60_000), PORTAL_SIGNED_OUT, user, -1, -1, -1, -1, user_tail))


def integration_day(
    rr: random.Random,
    out: list[EventTuple],
    user: int,
    user_tail: int,
    endpoint_base: int,
    poller: bool,
    midnight: int,
    next_midnight: int,
    weekend: bool,
    poll_until: int,
) -> None:
    """API requests: a poller every 1-2 minutes around the clock (until `poll_until`), or business-hours bursts on
    weekdays.

    The pollers keep every account's stream free of silences: consecutive poll times are less than 4 minutes
    apart (midnight included) and polls are never delayed, so no event is ever more than `max_future_skew`
    (5 min) ahead of the watermark, which would make the processor reject it.
    """
    append = out.append
    randint = rr.randint
    n_ep = len(ENDPOINTS)

    def request(at: int) -> None:
        if rr.random() < 0.1:
            append((at, API_REQUEST, user, -1, -1, -1, -1, user_tail))
        else:
            ep = rr.randrange(n_ep)
            append((at, API_REQUEST, user, -1, -1, ep, -1, endpoint_base + ep))

    if poller:
        t = midnight + rr.randrange(120_000)
        while t < poll_until:
            request(t)
            t += randint(60_000, 120_000)
        return
    if weekend:
        return
    t = midnight + 8 * HOUR_MS + rr.randrange(HOUR_MS)
    stop = min(midnight + 18 * HOUR_MS, next_midnight)
    while t < stop:
        for _ in range(randint(3, 30)):
            request(t)
            t += randint(5_000, 60_000)
        t += randint(10, 60) * MINUTE_MS


def temps_spike(
    rr: random.Random,
    out: list[EventTuple],
    spans: list[Span],
    account: Account,
    catalog: Catalog,
    midnight: int,
    sessions: list[tuple[int, int]],
) -> None:
    """A short crowd of temporary agents that takes usage over the licenses for 5-12 minutes."""
    x = midnight + 10 * HOUR_MS + rr.randint(0, 90) * MINUTE_MS + rr.randrange(MINUTE_MS)
    at = x + 20_000  # every temp is in session at this instant
    active = sum(1 for s, e in sessions if s <= at < e)
    licenses = account.licenses_at(at, catalog)
    count = min(len(account.temps), max(1, licenses - active + max(2, licenses // 10)))
    length = rr.randint(5, 12) * MINUTE_MS
    append = out.append
    for temp in account.temps[:count]:
        u, dev, tail = temp.user, temp.dev, temp.tail
        si = x - rr.randint(30_000, 120_000)
        append((si, SIGNED_IN, u, dev, -1, -1, -1, tail))
        append((x + rr.randrange(20_000), WS_STARTED, u, dev, -1, -1, -1, tail))
        se = x + length + rr.randrange(20_000)
        append((se, WS_ENDED, u, dev, -1, -1, -1, tail))
        so = se + rr.randint(3_000, 30_000)
        append((so, SIGNED_OUT, u, dev, -1, -1, -1, tail))
        spans.append((si, so, u, dev, tail))


def account_day(config: SimConfig, catalog: Catalog, account: Account, d: int) -> tuple[list[EventTuple], list[Span]]:
    """Every event of account-day `d` except heartbeats (returned as spans) and delivery faults."""
    out: list[EventTuple] = []
    spans: list[Span] = []
    for at, plan, day in account.plans:
        if day == d:
            out.append((at, PLAN_CHANGED, -1, -1, -1, -1, plan, catalog.plan_tails[plan]))
    rr = keyed_rng(config, "day", account.index, d)
    spike = d in account.spike_days
    sessions: list[tuple[int, int]] | None = [] if spike else None
    agents = account.agents
    for number, start, end in roster(config, account, d):
        agent_day(rr, out, spans, agents[number], start, end, sessions)
    for number, start, end in supervisor_roster(config, account, d):
        sup = account.supervisors[number]
        supervisor_day(rr, out, sup.user, sup.user_tail, sup.page_tail_base, start, end)
    weekend = (config.start + timedelta(days=d)).weekday() >= 5
    midnight, next_midnight = account.midnights[d], account.midnights[d + 1]
    # On the last day the pollers go on until the night shift's stragglers are done.
    poll_until = next_midnight + (POLL_AFTER_LAST_DAY_MS if d + 1 == config.days else 0)
    for api in account.integrations:
        integration_day(
            rr,
            out,
            api.user,
            api.user_tail,
            api.endpoint_tail_base,
            api.poller,
            midnight,
            next_midnight,
            weekend,
            poll_until,
        )
    if sessions is not None:
        temps_spike(rr, out, spans, account, catalog, midnight, sessions)
    return out, spans


def orphans(rr: random.Random, account: Account, count: int, midnight: int, next_midnight: int) -> list[EventTuple]:
    """Events that end something never started: sign-outs and session ends of a never-used device id, and portal
    sign-outs of agents (who never use the portal)."""
    out: list[EventTuple] = []
    agents = account.agents
    for _ in range(count):
        agent = agents[rr.randrange(len(agents))]
        at = rr.randrange(midnight, next_midnight)
        kind = rr.randrange(3)
        if kind == 2:
            out.append((at, PORTAL_SIGNED_OUT, agent.user, -1, -1, -1, -1, agent.user_tail))
        else:
            out.append(
                (at, SIGNED_OUT if kind == 0 else WS_ENDED, agent.user, agent.devs[2], -1, -1, -1, agent.tails[2])
            )
    return out
