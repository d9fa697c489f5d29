"""Plain value types of the pure core: settings, plans and the records the fold emits.

Times are integers in milliseconds since the Unix epoch (UTC); see docs/semantics.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from hashlib import sha256
from typing import Literal

GraceMode = Literal["contiguous", "cumulative"]
LateEvents = Literal["count", "drop"]  # how a history file treats too-late events: count them, or drop like a stream
WindowKind = Literal["1m", "15m", "1h", "1d"]
WINDOW_KINDS: tuple[WindowKind, ...] = ("1m", "15m", "1h", "1d")
FIXED_WINDOW_MS: dict[str, int] = {"1m": 60_000, "15m": 900_000, "1h": 3_600_000}

NEVER = 2**62  # "+infinity" for horizons and timers


@dataclass(frozen=True, slots=True)
class Settings:
    """Deployment settings of the counting rules (SPEC section 1 and 2 defaults)."""

    device_timeout_ms: int = 180_000
    portal_idle_timeout_ms: int = 15 * 60_000
    api_activity_window_ms: int = 5 * 60_000
    allowed_lateness_ms: int = 10 * 60_000
    account_idle_lateness_ms: int = 2 * 60 * 60_000
    max_future_skew_ms: int = 5 * 60_000

    def horizon(self, account_watermark: int | None, partition_watermark: int | None) -> int:
        """An account's horizon (SPEC 2): `max(W_a - allowed_lateness, W_p - account_idle_lateness)`.

        Every instant below it is final for that account; -NEVER before any event."""
        own = -NEVER if account_watermark is None else account_watermark - self.allowed_lateness_ms
        idle = -NEVER if partition_watermark is None else partition_watermark - self.account_idle_lateness_ms
        return own if own > idle else idle


@dataclass(frozen=True, slots=True)
class Plan:
    """An account's plan from `at_ms` on (until its next plan)."""

    at_ms: int
    licenses: int = 0
    overage_allowance: int = 0
    billing_anchor_day: int = 1
    timezone: str = "UTC"
    grace_minutes: int = 30
    grace_mode: GraceMode = "contiguous"


DEFAULT_PLAN = Plan(at_ms=-NEVER)


def change_id(account_id: str, at_ms: int, usage: int) -> str:
    """Deterministic id of a usage change, so that consumers can drop re-deliveries."""
    return sha256(f"{account_id}|{at_ms}|{usage}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class UsageChange:
    """The account's usage became `usage` at `at_ms` (licenses in effect then)."""

    account_id: str
    at_ms: int
    usage: int
    licenses: int

    @property
    def change_id(self) -> str:
        return change_id(self.account_id, self.at_ms, self.usage)


@dataclass(frozen=True, slots=True)
class PeakWindow:
    """A closed window `[start_ms, end_ms)` of one kind with usage > 0 somewhere inside."""

    account_id: str
    kind: WindowKind
    start_ms: int
    end_ms: int
    max_usage: int
    max_at_ms: int
    over_licenses_ms: int
    license_ms: int

    @property
    def window_id(self) -> str:
        return sha256(f"{self.account_id}|{self.kind}|{self.start_ms}|{self.end_ms}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class UserInterval:
    """A user was counted during `[start_ms, end_ms)` (touching intervals merged)."""

    account_id: str
    user_id: str
    start_ms: int
    end_ms: int


PresenceKind = Literal["desktop", "portal", "api"]


@dataclass(frozen=True, slots=True)
class PresenceInterval:
    """One presence of a user was active during `[start_ms, end_ms)` (end NEVER while still open).

    `kind` is desktop, portal or api; `device_id` names the device of a desktop presence (None otherwise)."""

    account_id: str
    user_id: str
    kind: PresenceKind
    device_id: str | None
    start_ms: int
    end_ms: int


@dataclass(slots=True)
class Metrics:
    """Counters of what the fold saw (SPEC: orphans, duplicates, conflicts, lateness)."""

    applied: int = 0
    orphan: int = 0
    duplicate: int = 0
    duplicate_conflict: int = 0
    too_late: int = 0
    future_skew: int = 0

    def add(self, other: Metrics) -> None:
        """Add another set of counters into this one."""
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(slots=True)
class FoldOutput:
    """What one step of the fold produced, in event-time order per account."""

    usage_changes: list[UsageChange] = field(default_factory=list)
    windows: list[PeakWindow] = field(default_factory=list)
    intervals: list[UserInterval] = field(default_factory=list)
    plans: list[tuple[str, Plan]] = field(default_factory=list)
    # Counted intervals as they start (end_ms = NEVER); the same interval comes again in `intervals` when it closes.
    opened: list[UserInterval] = field(default_factory=list)
    # Presence intervals, as they open (end NEVER) and again when they close (same account, user, kind, device, start).
    presences: list[PresenceInterval] = field(default_factory=list)
    # account_id -> its horizon (`data_through`, SPEC 4) after this step, for the accounts the step advanced.
    horizons: dict[str, int] = field(default_factory=dict)

    def extend(self, other: FoldOutput) -> None:
        """Append another output to this one."""
        self.usage_changes.extend(other.usage_changes)
        self.windows.extend(other.windows)
        self.intervals.extend(other.intervals)
        self.plans.extend(other.plans)
        self.opened.extend(other.opened)
        self.presences.extend(other.presences)
        self.horizons.update(other.horizons)
