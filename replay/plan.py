"""`ccmeter replay plan`: a dry run of a replay from an instant: offsets, record counts and the live group's state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
        state = await kafka.group_state(admin, group, topic, partitions)
    finally:
        await admin.close()
    return ReplayPlan(topic, from_ms, starts, ends, state)


def plan_json(plan: ReplayPlan) -> dict[str, Any]:
    """The plan as a JSON object (`ccmeter replay plan --format json`; keys in docs/operators.md)."""
    lags = plan.group.lag(plan.ends)
    group = plan.group
    return {
        "topic": plan.topic,
        "from": None if plan.from_ms is None else show_ms(plan.from_ms),
        "records": plan.records,
        "partitions": [
            {
                "partition": p,
                "start_offset": plan.starts[p],
                "end_offset": plan.ends[p],
                "records": plan.ends[p] - plan.starts[p],
                "committed": group.committed.get(p),
                "lag": lags[p],
            }
            for p in sorted(plan.ends)
        ],
        "group": {
            "group_id": group.group,
            "state": group.state,
            "active": group.active,
            "lag": sum(n for n in lags.values() if n is not None),
            "members": [
                {"member_id": m.member_id, "client_id": m.client_id, "host": m.host, "partitions": list(m.partitions)}
                for m in group.members
            ],
        },
    }


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
