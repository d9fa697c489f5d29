"""The simulated population: accounts, their users and devices, plans and the daily shift roster.

Everything is derived from the seed with `random.Random` instances keyed by text, so any (account, day) can be
generated on its own and always the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from processor.simulation.config import ENDPOINTS, MINUTE_MS, PAGES, TIMEZONES, SimConfig

# Shift groups: (weight, local start times in minutes after midnight).
SHIFT_GROUPS: tuple[tuple[float, tuple[int, ...]], ...] = (
    (0.50, (360, 390, 420, 450, 480, 510, 540)),  # morning 06:00-09:00 starts
    (0.33, (780, 810, 840, 870, 900, 930, 960)),  # evening 13:00-16:00 starts
    (0.17, (1290, 1320, 1350, 1380)),  # night 21:30-23:00 starts
)
FULL_SHIFT_MIN = 510  # 8.5 h including lunch
PLANNED_TAIL_MS = 5 * MINUTE_MS  # an agent's presence ends at most this long after the planned shift end


def rng(config: SimConfig, *key: object) -> random.Random:
    """A generator keyed by the seed and `key`, independent of every other key."""
    return random.Random("/".join([str(config.seed), *map(str, key)]))


@dataclass(frozen=True, slots=True)
class PlanSpec:
    """The fields of one `account.plan_changed`."""

    licenses: int
    overage_allowance: int
    billing_anchor_day: int
    timezone: str
    grace_minutes: int
    grace_mode: str

    def tail(self) -> str:
        """The JSON text after the common fields (see encode.py)."""
        return (
            f'","licenses":{self.licenses},"overage_allowance":{self.overage_allowance},'
            f'"billing_anchor_day":{self.billing_anchor_day},"timezone":"{self.timezone}",'
            f'"grace_minutes":{self.grace_minutes},"grace_mode":"{self.grace_mode}"}}\n'
        )


@dataclass(slots=True)
class Agent:
    """A contact-center agent with a desktop (and maybe a second device) and a ghost device id for orphans."""

    user: int
    devs: tuple[int, int, int]
    tails: tuple[int, int, int]
    user_tail: int
    group: int
    start_min: int
    duration_min: int
    weekend: bool
    has_second: bool


@dataclass(slots=True)
class Supervisor:
    """A supervisor who works in the web portal."""

    user: int
    user_tail: int
    page_tail_base: int
    start_min: int
    weekend: bool


@dataclass(slots=True)
class Integration:
    """An API client: a 24/7 poller or a business-hours integration."""

    user: int
    user_tail: int
    endpoint_tail_base: int
    poller: bool


@dataclass(slots=True)
class Temp:
    """A temporary agent who only shows up for a usage spike."""

    user: int
    dev: int
    tail: int


@dataclass(slots=True)
class Account:
    """One simulated account with everything needed to generate any of its days."""

    index: int
    account_id: str
    profile: str
    zone: ZoneInfo
    midnights: list[int]
    agents: list[Agent] = field(default_factory=list)
    supervisors: list[Supervisor] = field(default_factory=list)
    integrations: list[Integration] = field(default_factory=list)
    temps: list[Temp] = field(default_factory=list)
    # (occurred_at ms, global plan index, day index); the first one precedes every other event of the account.
    plans: list[tuple[int, int, int]] = field(default_factory=list)
    spike_days: frozenset[int] = frozenset()
    planned_peak: int = 0

    def licenses_at(self, at_ms: int, catalog: Catalog) -> int:
        """Licenses of the plan in effect at `at_ms`."""
        licenses = 0
        for when, plan, _ in self.plans:
            if when <= at_ms:
                licenses = catalog.plans[plan].licenses
        return licenses


@dataclass(slots=True)
class Catalog:
    """Global name tables: every row refers to users, devices, plans and JSON tails by index."""

    account_ids: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    device_users: list[int] = field(default_factory=list)
    plans: list[PlanSpec] = field(default_factory=list)
    plan_tails: list[int] = field(default_factory=list)
    tails: list[str] = field(default_factory=list)

    def add_user(self, name: str) -> tuple[int, int]:
        """Register a user; returns (user index, tail index of its user-only tail)."""
        self.users.append(name)
        self.tails.append(f'","user_id":"{name}"}}\n')
        return len(self.users) - 1, len(self.tails) - 1

    def add_device(self, user: int, name: str) -> tuple[int, int]:
        """Register a device of `user`; returns (device index, tail index)."""
        self.devices.append(name)
        self.device_users.append(user)
        self.tails.append(f'","user_id":"{self.users[user]}","device_id":"{name}"}}\n')
        return len(self.devices) - 1, len(self.tails) - 1

    def add_pages(self, user: int) -> int:
        """Tails of every page for `user`; returns the tail index of page 0."""
        base = len(self.tails)
        self.tails.extend(f'","user_id":"{self.users[user]}","page":"{page}"}}\n' for page in PAGES)
        return base

    def add_endpoints(self, user: int) -> int:
        """Tails of every endpoint for `user`; returns the tail index of endpoint 0."""
        base = len(self.tails)
        self.tails.extend(f'","user_id":"{self.users[user]}","endpoint":"{ep}"}}\n' for ep in ENDPOINTS)
        return base

    def add_plan(self, plan: PlanSpec) -> int:
        """Register a plan; returns its index."""
        self.plans.append(plan)
        self.tails.append(plan.tail())
        self.plan_tails.append(len(self.tails) - 1)
        return len(self.plans) - 1


def local_midnights(config: SimConfig, zone: ZoneInfo) -> list[int]:
    """UTC ms of local midnight of each simulated day, plus the day after the last."""
    out = []
    for d in range(config.days + 1):
        day = config.start + timedelta(days=d)
        out.append(int(datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()) * 1000)
    return out


def roster(config: SimConfig, account: Account, d: int) -> list[tuple[int, int, int]]:
    """Who works on day `d`: (agent number, shift start ms, shift end ms), in agent order."""
    rr = rng(config, "roster", account.index, d)
    weekend = (config.start + timedelta(days=d)).weekday() >= 5
    midnight = account.midnights[d]
    out = []
    random_ = rr.random
    randint = rr.randint
    randrange = rr.randrange
    for number, agent in enumerate(account.agents):
        if weekend:
            works = random_() < (0.85 if agent.weekend else 0.03)
        else:
            works = random_() < 0.92
        if not works:
            continue
        start = midnight + (agent.start_min + randint(-10, 10)) * MINUTE_MS + randrange(MINUTE_MS)
        end = start + (agent.duration_min + randint(-10, 20)) * MINUTE_MS + randrange(MINUTE_MS)
        out.append((number, start, end))
    return out


def supervisor_roster(config: SimConfig, account: Account, d: int) -> list[tuple[int, int, int]]:
    """Which supervisors work on day `d`: (supervisor number, start ms, end ms)."""
    rr = rng(config, "supervisors", account.index, d)
    weekend = (config.start + timedelta(days=d)).weekday() >= 5
    midnight = account.midnights[d]
    out = []
    for number, sup in enumerate(account.supervisors):
        works = rr.random() < ((0.8 if sup.weekend else 0.05) if weekend else 0.9)
        if works:
            start = midnight + (sup.start_min + rr.randint(-15, 15)) * MINUTE_MS + rr.randrange(MINUTE_MS)
            out.append((number, start, start + (FULL_SHIFT_MIN + rr.randint(-15, 30)) * MINUTE_MS))
    return out


def _planned_peak(config: SimConfig, account: Account) -> int:
    """Most agents whose planned shifts (plus the presence tail) overlap at any instant, over the whole run."""
    marks: list[tuple[int, int]] = []
    for d in range(config.days):
        for _, start, end in roster(config, account, d):
            marks.append((start, 1))
            marks.append((end + PLANNED_TAIL_MS, -1))
    marks.sort()  # at equal times -1 sorts first: half-open intervals
    peak = level = 0
    for _, step in marks:
        level += step
        peak = max(peak, level)
    return peak


def spike_days(config: SimConfig) -> frozenset[int]:
    """Days of the spike profile's spikes: at most two in any 31 days, moved off weekends."""
    if config.days < 5:
        return frozenset({config.days // 2})
    days = set()
    for d in range(4, config.days, 18):
        while (config.start + timedelta(days=d)).weekday() >= 5 and d + 1 < config.days:
            d += 1
        days.add(d)
    return frozenset(days)


def build_accounts(config: SimConfig) -> tuple[Catalog, list[Account]]:
    """Create every account, its users, devices and plans."""
    catalog = Catalog()
    accounts: list[Account] = []
    n_sup = max(1, config.agents // 12)
    n_api = max(1, config.agents // 100)
    width = max(4, len(str(config.agents)))
    for index in range(config.accounts):
        rr = rng(config, "account", index)
        account_id = f"acct-{index}"
        catalog.account_ids.append(account_id)
        tz_name = rr.choice(TIMEZONES)
        zone = ZoneInfo(tz_name)
        account = Account(
            index=index,
            account_id=account_id,
            profile=config.profile_of(index),
            zone=zone,
            midnights=local_midnights(config, zone),
        )
        for n in range(config.agents):
            account.agents.append(_new_agent(catalog, rr, f"agent-{n + 1:0{width}d}"))
        for n in range(n_sup):
            account.supervisors.append(_new_supervisor(catalog, rr, f"sup-{n + 1:03d}"))
        for n in range(n_api):
            account.integrations.append(_new_integration(catalog, f"svc-{n + 1:02d}", poller=n % 2 == 0))
        account.planned_peak = _planned_peak(config, account)
        _add_plans(config, catalog, account, rr, tz_name, n_sup + n_api)
        if account.profile == "spike":
            _add_spikes(config, catalog, account)
        accounts.append(account)
    return catalog, accounts


def _new_agent(catalog: Catalog, rr: random.Random, name: str) -> Agent:
    """An agent with a desktop, a second device and a ghost device; a shift group and length, maybe weekends."""
    user, user_tail = catalog.add_user(name)
    d1, t1 = catalog.add_device(user, f"{name}-pc1")
    d2, t2 = catalog.add_device(user, f"{name}-pc2")
    dg, tg = catalog.add_device(user, f"{name}-pc9")
    roll = rr.random()
    group = 0 if roll < SHIFT_GROUPS[0][0] else 1 if roll < SHIFT_GROUPS[0][0] + SHIFT_GROUPS[1][0] else 2
    part_time = rr.random() < 0.15
    return Agent(
        user=user,
        devs=(d1, d2, dg),
        tails=(t1, t2, tg),
        user_tail=user_tail,
        group=group,
        start_min=rr.choice(SHIFT_GROUPS[group][1]),
        duration_min=rr.randint(8, 12) * 30 if part_time else FULL_SHIFT_MIN,
        weekend=rr.random() < 0.3,
        has_second=rr.random() < 0.5,
    )


def _new_supervisor(catalog: Catalog, rr: random.Random, name: str) -> Supervisor:
    """A supervisor with the tails of every portal page, a start time and maybe weekends."""
    user, user_tail = catalog.add_user(name)
    return Supervisor(
        user=user,
        user_tail=user_tail,
        page_tail_base=catalog.add_pages(user),
        start_min=rr.choice((480, 510, 540, 780)),
        weekend=rr.random() < 0.25,
    )


def _new_integration(catalog: Catalog, name: str, poller: bool) -> Integration:
    """An API client with the tails of every endpoint."""
    user, user_tail = catalog.add_user(name)
    return Integration(user=user, user_tail=user_tail, endpoint_tail_base=catalog.add_endpoints(user), poller=poller)


def _add_spikes(config: SimConfig, catalog: Catalog, account: Account) -> None:
    """The spike days and enough temporary agents to exceed the account's largest plan (by 10%, at least 2)."""
    account.spike_days = spike_days(config)
    most = max(catalog.plans[plan].licenses for _, plan, _ in account.plans)
    for n in range(most + max(2, most // 10)):
        user, _ = catalog.add_user(f"temp-{n + 1:03d}")
        dev, tail = catalog.add_device(user, f"temp-{n + 1:03d}-pc1")
        account.temps.append(Temp(user=user, dev=dev, tail=tail))


def _add_plans(
    config: SimConfig, catalog: Catalog, account: Account, rr: random.Random, tz_name: str, others: int
) -> None:
    """The opening plan (before the first event) and sometimes a mid-run change, shaped by the profile."""
    peak = account.planned_peak
    if account.profile == "overage":
        licenses = max(1, peak * 3 // 5)
        allowance = licenses // 20
        grace = rr.choice((15, 30))
    else:
        # Every regular user that could be present at once: usage can never exceed this.
        licenses = peak + others
        allowance = max(1, licenses // (10 if account.profile == "within" else 20))
        grace = rr.choice((15, 30, 60) if account.profile == "within" else (30, 45, 60))
    plan = PlanSpec(
        licenses=licenses,
        overage_allowance=allowance,
        billing_anchor_day=rr.randint(1, 28),
        timezone=tz_name,
        grace_minutes=grace,
        grace_mode=rr.choice(("contiguous", "cumulative")),
    )
    first_at = account.midnights[0] - MINUTE_MS + rr.randrange(1000)
    account.plans.append((first_at, catalog.add_plan(plan), 0))
    if config.days >= 4 and rr.random() < 0.5:
        day = rr.randint(max(1, config.days // 3), max(1, 2 * config.days // 3))
        if account.profile == "overage":
            more = rr.randint(0, max(1, licenses // 20))
        else:
            more = rr.randint(1, max(1, licenses // 10))
        changed = PlanSpec(
            licenses=licenses + more,
            overage_allowance=allowance + rr.randint(0, 1),
            billing_anchor_day=plan.billing_anchor_day,
            timezone=tz_name,
            grace_minutes=plan.grace_minutes,
            grace_mode=plan.grace_mode,
        )
        at = account.midnights[day] + 12 * 60 * MINUTE_MS + rr.randrange(60 * MINUTE_MS)
        account.plans.append((at, catalog.add_plan(changed), day))
