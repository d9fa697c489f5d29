"""`ccmeter replay plan`: a dry run of a replay from an instant: offsets, record counts and the live group's state."""

from __future__ import annotations

from dataclasses import dataclass

from replay import kafka
from replay.common import show_ms, table
from replay.kafka import GroupState


@dataclass(frozen=True)
class ReplayPlan:
    """Offsets of the events topic from an instant to the end, and the state of a consumer group on it."""

    topic: str
    from_ms: int | None  # None: from the beginning of the log
    starts: dict[int, int]
    ends: dict[int, int]
    group: GroupState

    @property
    def records(self) -> int:
        """Records between the start and end offsets (valid or not)."""
        return sum(self.ends[p] - self.starts[p] for p in self.ends)


async def make_plan(broker: str, topic: str, from_ms: int | None, group: str) -> ReplayPlan:
    """Look up the start offsets for `from_ms` (the log start when None), the end offsets and the group."""
    client = kafka.consumer(broker)
    await client.start()
    try:
        partitions = await kafka.partitions_of(client, topic)
        ends = await kafka.end_offsets(client, topic, partitions)
        if from_ms is None:
            starts = await kafka.beginning_offsets(client, topic, partitions)
        else:
            starts = await kafka.offsets_at(client, topic, partitions, from_ms, ends)
    finally:
        await client.stop()
    admin = kafka.admin(broker)
    await admin.start()
    try:
        state = await kafka.group_state(admin, group, topic)
    finally:
        await admin.close()
    return ReplayPlan(topic, from_ms, starts, ends, state)


def plan_lines(plan: ReplayPlan) -> list[str]:
    """The plan as text: one row per partition, then the group and its members."""
    lags = plan.group.lag(plan.ends)
    rows: list[list[object]] = [
        [p, plan.starts[p], plan.ends[p], plan.ends[p] - plan.starts[p], plan.group.committed.get(p), lags[p]]
        for p in sorted(plan.ends)
    ]
    total_lag = sum(n for n in lags.values() if n is not None)
    rows.append(["all", "", "", plan.records, "", total_lag])
    since = "the beginning of the log" if plan.from_ms is None else show_ms(plan.from_ms)
    lines = [f"events topic {plan.topic}: {len(plan.ends)} partitions, {plan.records} records from {since} to now"]
    lines += table(["partition", "start offset", "end offset", "records", "committed", "lag"], rows)
    group = plan.group
    lines.append(f"consumer group {group.group}: state {group.state}, {len(group.members)} members")
    for member in group.members:
        owned = ",".join(map(str, member.partitions)) or "-"
        lines.append(f"  member {member.member_id} (client {member.client_id}, host {member.host}): partitions {owned}")
    return lines
