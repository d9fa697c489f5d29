"""Settings of a simulation run and the fixed vocabularies (pages, endpoints, zones, type codes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from schemas.events import CONTACT_CENTER_PAGES, EVENT_TYPES

PROFILES: tuple[str, ...] = ("within", "spike", "overage")
PROFILE_CHOICES: tuple[str, ...] = ("mixed", *PROFILES)

# Type codes: positions in schemas.events.EVENT_TYPES.
SIGNED_IN, SIGNED_OUT, HEARTBEAT, WS_STARTED, WS_ENDED = 0, 1, 2, 3, 4
PAGE_VIEWED, PORTAL_SIGNED_OUT, API_REQUEST, PLAN_CHANGED = 5, 6, 7, 8
assert EVENT_TYPES[SIGNED_IN] == "desktop.signed_in" and EVENT_TYPES[WS_ENDED] == "work_session.ended"
assert EVENT_TYPES[PAGE_VIEWED] == "portal.page_viewed" and EVENT_TYPES[PLAN_CHANGED] == "account.plan_changed"

TIMEZONES: tuple[str, ...] = (
    "America/New_York",
    "America/Chicago",
    "America/Los_Angeles",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Tokyo",
    "Australia/Sydney",
)
CC_PAGES: tuple[str, ...] = tuple(sorted(CONTACT_CENTER_PAGES))
OTHER_PAGES: tuple[str, ...] = ("home", "settings.profile", "billing.invoices", "directory.users", "help.center")
PAGES: tuple[str, ...] = CC_PAGES + OTHER_PAGES
ENDPOINTS: tuple[str, ...] = (
    "/v2/queues/stats",
    "/v2/agents/status",
    "/v2/interactions",
    "/v2/recordings/search",
    "/v2/reports/realtime",
)

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
MAX_DELAY_MS = 5 * MINUTE_MS  # arrival never trails event time by more than this (allowed lateness is 10 min)
DEVICE_TIMEOUT_MS = 180_000  # the processor's default liveness timeout
MAX_HEARTBEAT_SECONDS = 170  # heartbeats must keep a device alive (timeout 180 s)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What to simulate: `accounts` x `agents` for `days` local days from `start`, plus delivery faults."""

    accounts: int = 3
    agents: int = 20
    days: int = 7
    seed: int = 0
    start: date = date(2026, 11, 1)
    duplicates: float = 0.0
    out_of_order: float = 0.0
    orphans: float = 0.0
    malformed: float = 0.0
    heartbeat_seconds: int = 60
    profile: str = "mixed"

    def validate(self) -> None:
        """Raise ValueError with a user-facing message when a setting is out of range."""
        if self.accounts < 1 or self.accounts > 10_000:
            raise ValueError("--accounts must be between 1 and 10000")
        if self.agents < 1 or self.agents > 100_000:
            raise ValueError("--agents must be between 1 and 100000")
        if self.days < 1 or self.days > 3660:
            raise ValueError("--days must be between 1 and 3660")
        if self.seed < 0:
            raise ValueError("--seed must be >= 0")
        if not date(1970, 1, 1) <= self.start or self.start.toordinal() + self.days > date(9998, 12, 31).toordinal():
            raise ValueError("--start and --days must keep every event between 1970-01-01 and 9998-12-31")
        for name in ("duplicates", "out_of_order", "orphans", "malformed"):
            rate = getattr(self, name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be a rate between 0 and 1")
        if not 1 <= self.heartbeat_seconds <= MAX_HEARTBEAT_SECONDS:
            raise ValueError(
                f"--desktop-heartbeat must be between 1s and {MAX_HEARTBEAT_SECONDS}s "
                f"(a device expires {DEVICE_TIMEOUT_MS // 1000} s after its last event)"
            )
        if self.profile not in PROFILE_CHOICES:
            raise ValueError(f"--profile must be one of {', '.join(PROFILE_CHOICES)}")

    def profile_of(self, account: int) -> str:
        """The profile of account number `account` (0-based): `mixed` cycles within, spike, overage."""
        return PROFILES[account % len(PROFILES)] if self.profile == "mixed" else self.profile
