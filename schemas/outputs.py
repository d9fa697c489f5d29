"""Wire format of what ccmeter produces (SPEC sections 4 and 5).

Timestamps are RFC 3339 text in UTC with milliseconds; durations are seconds as numbers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Output(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


class UsageChangeRecord(_Output):
    """One change of an account's usage (the `usage-changes` topic)."""

    change_id: str = Field(description="deterministic id; drop re-deliveries by it")
    account_id: str
    at: str = Field(description="instant of the change, RFC 3339 UTC")
    usage: int = Field(ge=0, description="distinct users counted from `at` on")
    licenses: int = Field(ge=0, description="licenses in effect at `at`")


class PeakWindowRecord(_Output):
    """A closed peak window (the `peak-windows` topic)."""

    window_id: str
    account_id: str
    kind: Literal["1m", "15m", "1h", "1d"]
    start: str
    end: str
    max_usage: int = Field(ge=0)
    max_at: str
    seconds_over_licenses: float = Field(ge=0)
    license_seconds: float = Field(ge=0)


AlertKind = Literal["near_capacity", "over_licenses", "over_grace", "over_allowance"]


class AlertRecord(_Output):
    """An alert is raised, then later resolved with the same `alert_id` (the `alerts` topic)."""

    alert_id: str
    account_id: str
    kind: AlertKind
    state: Literal["raised", "resolved"]
    at: str
    usage: int
    licenses: int
    overage_allowance: int
    message: str = ""


class DeadLetterRecord(_Output):
    """Dead-letter format 1 (older versions), still read: the original bytes (base64), the reason and where from.
    Format 2 is the original record with headers (docs/running.md, Dead letters)."""

    reason: str
    detail: str = ""
    original_base64: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    line: int | None = None


class ReportDay(_Output):
    """One account-local day of the licenses usage report.

    Metrics cover the day up to the account's `data_through`; a day that starts at or after it has null metrics."""

    date: str
    peak_usage: int | None
    peak_at: str | None
    licenses: int
    overage_allowance: int
    seconds_over_licenses: float | None
    max_excess: int | None
    license_hours: float | None
    distinct_users: int | None
    complete: bool = Field(description="data_through is at or after the day's end")


class PeakUser(_Output):
    """A user counted at the report's `peak_at`, with the presences active at that instant."""

    user_id: str
    devices: list[str] = Field(description="device ids of the active desktop presences, sorted")
    portal: bool = Field(description="a Contact Center portal presence was active")
    api: bool = Field(description="an API presence was active")


class Report(_Output):
    """The licenses usage report of one account for one period (SPEC section 4)."""

    account_id: str
    from_: str = Field(alias="from", description="first account-local date, YYYY-MM-DD")
    to: str = Field(description="last account-local date, inclusive")
    timezone: str
    licenses: int
    overage_allowance: int
    peak_usage: int
    peak_at: str | None
    peak_users: list[PeakUser] = Field(description="the users counted at peak_at, sorted by user_id")
    billable_overage: int
    over_allowance: int
    seconds_over_licenses: float
    license_hours: float
    distinct_users: int
    data_through: str | None = Field(description="the account's horizon at the cut (UTC); null without data")
    complete: bool = Field(description="data_through is at or after the period's end")
    days: list[ReportDay]

    def to_json_dict(self) -> dict[str, Any]:
        """The report as the JSON object of the CLI (`from` spelled as in the contract)."""
        return self.model_dump(mode="json", by_alias=True)


SUMMARY_KEYS: tuple[str, ...] = (
    "account_id",
    "from",
    "to",
    "timezone",
    "licenses",
    "overage_allowance",
    "peak_usage",
    "peak_at",
    "peak_users",
    "billable_overage",
    "over_allowance",
    "seconds_over_licenses",
    "license_hours",
    "distinct_users",
    "data_through",
    "complete",
)
DAY_KEYS: tuple[str, ...] = tuple(ReportDay.model_fields)
