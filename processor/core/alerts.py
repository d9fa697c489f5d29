"""License-limit alerts (SPEC section 5): pure rules over an account's ordered usage changes and plans.

Four kinds, each raised when its condition starts to hold and resolved (same `alert_id`) when it stops:

| kind | holds while |
|---|---|
| `near_capacity` | `licenses > 0` and `usage >= share * licenses` (share defaults to 0.9) |
| `over_licenses` | `usage > licenses` |
| `over_grace` | `usage > licenses` without a break for at least the plan's `grace_minutes` (event time, contiguous) |
| `over_allowance` | `usage > licenses + overage_allowance` |

Decisions (on top of SPEC and docs/semantics.md):
- Conditions are read after all usage changes and plans at an instant are applied, like usage itself.
- `over_grace` is raised at `start + grace` of an excess stretch that starts at `start`; a stretch that lasts exactly
  the grace is enough (as in billing). The grace is the one of the plan in effect; a plan change during a stretch
  moves the deadline to `max(change instant, start + new grace)`. The mode is always contiguous, whatever the plan's
  `grace_mode` (cumulative grace is a billing notion, reported per period).
- The deadline is only known to have passed once the fold's horizon is beyond it, so `advance` takes the horizon.
- `alert_id` = first 16 hex digits of `sha256("{account_id}|{kind}|{raised_at_ms}")`.
- Within one instant, resolutions come before raises, each in the order of `ALERT_KINDS`.

`AlertTracker.advance` is incremental; feeding the same items in any split by increasing horizons gives the same
alerts as one call with everything (`alerts_for`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from hashlib import sha256
from operator import itemgetter
from typing import Any, Literal

from processor.core.model import NEVER, Plan, UsageChange
from schemas.events import format_ms
from schemas.outputs import AlertRecord

AlertKind = Literal["near_capacity", "over_licenses", "over_grace", "over_allowance"]
ALERT_KINDS: tuple[AlertKind, ...] = ("near_capacity", "over_licenses", "over_grace", "over_allowance")
DEFAULT_SHARE = Fraction(9, 10)
_MINUTE_MS = 60_000


def alert_id(account_id: str, kind: str, raised_at_ms: int) -> str:
    """Deterministic id shared by an alert's `raised` and `resolved` records."""
    return sha256(f"{account_id}|{kind}|{raised_at_ms}".encode()).hexdigest()[:16]


def parse_share(value: str | float | Fraction) -> Fraction:
    """The near-capacity share as an exact fraction in (0, 1]; accepts 0.9, "0.9" or "90%"."""
    text = str(value).strip()
    try:
        share = Fraction(text[:-1]) / 100 if text.endswith("%") else Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"near-capacity share {value!r} is not a number") from exc
    if not 0 < share <= 1:
        raise ValueError(f"near-capacity share {value!r} must be in (0, 1] (or 1%..100%)")
    return share


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert transition of an account."""

    alert_id: str
    account_id: str
    kind: AlertKind
    state: Literal["raised", "resolved"]
    at_ms: int
    usage: int
    licenses: int
    overage_allowance: int

    def to_record(self) -> AlertRecord:
        """The wire record of the alerts topic."""
        return AlertRecord(
            alert_id=self.alert_id,
            account_id=self.account_id,
            kind=self.kind,
            state=self.state,
            at=format_ms(self.at_ms),
            usage=self.usage,
            licenses=self.licenses,
            overage_allowance=self.overage_allowance,
            message=_message(self),
        )


def _message(alert: Alert) -> str:
    if alert.state == "resolved":
        return f"{alert.kind} resolved: usage {alert.usage} of {alert.licenses} licenses"
    texts = {
        "near_capacity": "usage is near the licensed capacity",
        "over_licenses": "usage exceeds the licenses",
        "over_grace": "usage has exceeded the licenses for longer than the grace period",
        "over_allowance": "usage exceeds licenses plus overage allowance",
    }
    return f"{texts[alert.kind]}: usage {alert.usage}, licenses {alert.licenses}, allowance {alert.overage_allowance}"


@dataclass(slots=True)
class AlertTracker:
    """The small per-account state of the alert rules; `advance` feeds it finalized usage changes and plans."""

    share: Fraction = DEFAULT_SHARE
    usage: int = 0
    licenses: int = 0
    overage_allowance: int = 0
    grace_ms: int = 30 * _MINUTE_MS
    raised: dict[str, int] = field(default_factory=dict)  # kind -> raised_at_ms
    excess_since: int | None = None
    grace_due: int | None = None

    def advance(
        self, account_id: str, changes: Iterable[UsageChange], plans: Iterable[Plan], horizon: int
    ) -> list[Alert]:
        """Apply usage changes and plans (each in event-time order, all before `horizon`); return the transitions.

        A plan and a usage change at the same instant are applied together. Deadlines before `horizon` fire.
        """
        out: list[Alert] = []
        # (at, 0 = plan / 1 = usage, seq, item): plans and usage at one instant are applied together anyway.
        items: list[tuple[int, int, int, Any]] = [(p.at_ms, 0, i, p) for i, p in enumerate(plans)]
        items.extend((c.at_ms, 1, i, c) for i, c in enumerate(changes))
        items.sort(key=itemgetter(0, 1, 2))
        index = 0
        while index < len(items):
            at = items[index][0]
            self._fire_deadline(account_id, at, out)
            plan_changed = False
            while index < len(items) and items[index][0] == at:
                _, kind, _, item = items[index]
                if kind == 0:
                    self.licenses = item.licenses
                    self.overage_allowance = item.overage_allowance
                    self.grace_ms = item.grace_minutes * _MINUTE_MS
                    plan_changed = True
                else:
                    self.usage = item.usage
                index += 1
            self._evaluate(account_id, at, plan_changed, out)
        if self.grace_due is not None and self.grace_due < horizon:
            self._fire_deadline(account_id, self.grace_due, out)
        return out

    def _fire_deadline(self, account_id: str, at: int, out: list[Alert]) -> None:
        if self.grace_due is not None and self.grace_due <= at:
            due = self.grace_due
            self.grace_due = None
            out.append(self._transition(account_id, "over_grace", "raised", due))

    def _holds(self) -> dict[str, bool]:
        threshold = math.ceil(self.share * self.licenses)
        return {
            "near_capacity": self.licenses > 0 and self.usage >= threshold,
            "over_licenses": self.usage > self.licenses,
            "over_allowance": self.usage > self.licenses + self.overage_allowance,
        }

    def _evaluate(self, account_id: str, at: int, plan_changed: bool, out: list[Alert]) -> None:
        holds = self._holds()
        excess = holds["over_licenses"]
        for kind in ALERT_KINDS:  # resolutions first
            if kind in self.raised and not (excess if kind == "over_grace" else holds[kind]):
                out.append(self._transition(account_id, kind, "resolved", at))
        if not excess:
            self.excess_since = None
            self.grace_due = None
        elif self.excess_since is None:
            self.excess_since = at
            self.grace_due = at + self.grace_ms
        elif plan_changed and "over_grace" not in self.raised:
            self.grace_due = max(at, self.excess_since + self.grace_ms)
        for kind in ALERT_KINDS:
            if kind == "over_grace":
                self._fire_deadline(account_id, at, out)
            elif holds[kind] and kind not in self.raised:
                out.append(self._transition(account_id, kind, "raised", at))

    def _transition(self, account_id: str, kind: AlertKind, state: Literal["raised", "resolved"], at: int) -> Alert:
        if state == "raised":
            self.raised[kind] = at
            raised_at = at
        else:
            raised_at = self.raised.pop(kind)
        return Alert(
            alert_id(account_id, kind, raised_at),
            account_id,
            kind,
            state,
            at,
            self.usage,
            self.licenses,
            self.overage_allowance,
        )

    def to_state(self) -> list[Any]:
        """A msgpack-friendly list (the share is configuration and is not stored)."""
        return [
            self.usage,
            self.licenses,
            self.overage_allowance,
            self.grace_ms,
            self.raised,
            self.excess_since,
            self.grace_due,
        ]

    @classmethod
    def from_state(cls, state: Sequence[Any] | None, share: Fraction = DEFAULT_SHARE) -> AlertTracker:
        """Rebuild from `to_state()` output (None gives a fresh tracker)."""
        if not state:
            return cls(share=share)
        usage, licenses, allowance, grace_ms, raised, since, due = state
        return cls(share, usage, licenses, allowance, grace_ms, dict(raised), since, due)


def alerts_for(
    account_id: str,
    changes: Sequence[UsageChange],
    plans: Sequence[Plan],
    horizon: int = NEVER,
    share: Fraction = DEFAULT_SHARE,
) -> list[Alert]:
    """All alert transitions of one account from its whole ordered history (finalized before `horizon`)."""
    return AlertTracker(share=share).advance(account_id, changes, plans, horizon)
