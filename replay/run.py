"""`ccmeter replay run`: rebuild every output into a new app version while the live version keeps serving.

The new version (e.g. `--into v2`) has its own topic prefix for outputs (`ccmeter.v2.`), its own app id (consumer
group and changelog topic, `ccmeter-worker-v2`) and reads the live events topic. The command captures the end
offsets of the events topic, starts `--workers N` worker processes of the new version (`python -m replay.launch`,
one consumer group: they split the partitions), follows the offsets they have applied (replay/supervise.py:
progress, lag per partition, a restart when they stall) until they reach those end offsets, then stops them (or
keeps them running with `--follow`). Re-running resumes: the new group's committed offsets and changelog are kept.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processor.cli import CliError, RuntimeFailure
from processor.core.model import Settings
from processor.topics import EVENTS, topic_names
from processor.worker.store import changelog_topic
from replay import kafka
from replay.common import check_version, show_ms, table
from replay.kafka import GroupState


@dataclass(frozen=True)
class RunConfig:
    """Settings of one rebuild."""

    broker: str
    prefix: str
    version: str
    from_ms: int | None  # None: from the beginning of the log
    app_id: str
    data_dir: Path
    web_ports: tuple[int, ...]  # one per worker process: `len(web_ports)` workers
    log: Path
    snapshot: Path | None = None
    follow: bool = False
    timeout_s: float | None = None
    poll_s: float = 1.0
    stall_s: float | None = 60.0
    worker_args: tuple[str, ...] = ()
    settings: Settings = field(default_factory=Settings)
    store: str = "memory://"  # the workers' table store (rocksdb:// keeps files in the state directory)

    @property
    def workers(self) -> int:
        """How many worker processes rebuild (one consumer group)."""
        return len(self.web_ports)

    @property
    def web_port(self) -> int:
        """The first worker's HTTP port."""
        return self.web_ports[0]

    @property
    def new_prefix(self) -> str:
        """Topic prefix of the new version's outputs."""
        return check_version(self.version, self.prefix)

    @property
    def changelog(self) -> str:
        """The new version's changelog topic (the worker's state store, processor/worker/store.py)."""
        return changelog_topic(self.app_id)

    @property
    def events_topic(self) -> str:
        """The live events topic (read by both versions)."""
        return topic_names(self.prefix)[EVENTS]


@dataclass(frozen=True)
class WorkerSlot:
    """One worker process of a rebuild: its number (1 = the first), web port, log file and state directory."""

    number: int
    web_port: int
    log: Path
    state_dir: Path

    def name(self, workers: int) -> str:
        """How messages call it: "the worker" alone, "worker 2 of 3" in a group."""
        return "the worker" if workers == 1 else f"worker {self.number} of {workers}"


def worker_slots(config: RunConfig) -> list[WorkerSlot]:
    """The rebuild's worker processes: the first with the configured log and state directory, worker i (i >= 2)
    with `LOG-STEM-i.log` next to the first log (`replay-worker-2.log` by default) and, when the store keeps files
    (rocksdb://: two RocksDB stores must never share a directory), the state directory `STATE_DIR/worker-i`."""
    slots = []
    for number, port in enumerate(config.web_ports, start=1):
        if number == 1:
            slots.append(WorkerSlot(1, port, config.log, config.data_dir))
            continue
        log = config.log.with_name(f"{config.log.stem}-{number}{config.log.suffix}")
        own = config.store.startswith("rocksdb://")
        slots.append(WorkerSlot(number, port, log, config.data_dir / f"worker-{number}" if own else config.data_dir))
    return slots


@dataclass
class RunPlan:
    """Where the new version starts and what it must reach."""

    mode: str  # "beginning", "resume" or "snapshot"
    starts: dict[int, int]
    ends: dict[int, int]
    group: GroupState
    seed: Any = None  # replay.seed.SeedPlan when mode == "snapshot"

    @property
    def records(self) -> int:
        """Records to process before the new version has caught up."""
        return sum(max(0, self.ends[p] - self.starts[p]) for p in self.ends)


async def make_plan(config: RunConfig) -> RunPlan:
    """Offsets and group state; refuses when a worker of the new version is already running."""
    client = kafka.consumer(config.broker)
    await client.start()
    try:
        partitions = await kafka.partitions_of(client, config.events_topic)
        ends = await kafka.end_offsets(client, config.events_topic, partitions)
        beginnings = await kafka.beginning_offsets(client, config.events_topic, partitions)
        at_from = (
            await kafka.offsets_at(client, config.events_topic, partitions, config.from_ms, ends)
            if config.from_ms is not None
            else beginnings
        )
    finally:
        await client.stop()
    admin = kafka.admin(config.broker)
    await admin.start()
    try:
        group = await kafka.group_state(admin, config.app_id, config.events_topic)
        changelog = await kafka.partition_count(admin, config.changelog)
    finally:
        await admin.close()
    check_app_id(config, group, changelog, len(partitions))
    if group.active:
        raise RuntimeFailure(
            f"consumer group {config.app_id} (version {config.version}) has {len(group.members)} active members: "
            "a worker of that version is already running; stop it first"
        )
    seeding = bool(group.committed) and group.markers == {kafka.SEEDING}
    if seeding and (config.from_ms is None or config.snapshot is None):
        raise RuntimeFailure(
            f"an earlier --from-snapshot start of version {config.version} did not finish: run it again with the "
            "same --from and --from-snapshot, or pick another --into"
        )
    if group.committed and not seeding:
        starts = {p: group.committed.get(p, beginnings[p]) for p in partitions}
        return RunPlan("resume", starts, ends, group)
    if config.from_ms is None:
        return RunPlan("beginning", beginnings, ends, group)
    if config.snapshot is None:
        raise CliError(
            "starting at --from TS needs the fold state at that point: give --from-snapshot FILE (a snapshot whose "
            "event log reaches back to the start of the topic), or use --from beginning"
        )
    from replay.seed import plan_seed

    seed = plan_seed(config.snapshot, config.events_topic, at_from, beginnings)
    return RunPlan("snapshot", dict(at_from), ends, group, seed)


def check_seed_snapshot(snapshot: Path, events_topic: str) -> None:
    """Before any broker call: `--from-snapshot` names a snapshot (else CliError, or RuntimeFailure while a writer
    holds it) of the sink of `events_topic` (else CliError). Whether its events reach far enough back needs the
    topic's offsets: `replay.seed.plan_seed` checks that."""
    from replay.source import open_snapshot_file

    con, _ = open_snapshot_file(snapshot)
    try:
        rows = con.execute("SELECT topic_prefix FROM snapshot_info").fetchall()
    finally:
        con.close()
    of = topic_names(rows[0][0])[EVENTS] if rows and rows[0][0] else None
    if of != events_topic:
        raise CliError(f"--from-snapshot {snapshot} is a snapshot of {of or 'an unknown topic'}, not of {events_topic}")


def check_app_id(config: RunConfig, group: GroupState, changelog: int | None, partitions: int) -> None:
    """Refuse an app id that belongs to something else: its group reads other topics, or its changelog topic holds
    state while the group has no offsets on this events topic, or has the wrong partition count."""
    hint = "pick another --into or --app-id"
    foreign = sorted(t for t in group.other_topics if not t.startswith(f"{config.app_id}-"))  # not Faust's own
    if foreign:
        raise RuntimeFailure(
            f"consumer group {config.app_id} has offsets on {', '.join(foreign)}, not only on "
            f"{config.events_topic}: it belongs to another app; {hint}"
        )
    if changelog is not None and not group.committed:
        raise RuntimeFailure(
            f"changelog topic {config.changelog} already exists but group {config.app_id} has no offsets on "
            f"{config.events_topic}: state left by an earlier run with this app id; {hint} (or delete that topic)"
        )
    if changelog is not None and changelog != partitions:
        raise RuntimeFailure(
            f"changelog topic {config.changelog} has {changelog} partitions, {config.events_topic} has {partitions}; "
            f"{hint}"
        )


def plan_lines(config: RunConfig, plan: RunPlan) -> list[str]:
    """The plan as text."""
    how = {
        "beginning": "from the beginning of the log (empty state)",
        "resume": f"resuming group {config.app_id} at its committed offsets (state from its changelog)",
        "snapshot": f"from {show_ms(config.from_ms)} with the state folded from snapshot {config.snapshot}",
    }[plan.mode]
    if plan.mode == "resume" and config.from_ms is not None:
        how += f" (--from {show_ms(config.from_ms)} does not apply to a group that has committed offsets)"
    workers = config.workers
    them = "the worker" if workers == 1 else "the workers"
    lines = [
        f"rebuild version {config.version}: read {config.events_topic}, write {config.new_prefix}* "
        f"(app id / consumer group {config.app_id}, changelog {config.changelog})",
        f"start: {how}",
        f"stop: at the end offsets captured now ({plan.records} records to process), "
        + ("then keep following (--follow)" if config.follow else f"then stop {them}"),
    ]
    slots = worker_slots(config)
    if workers == 1:
        lines.append(f"worker: web port {config.web_port}, data dir {config.data_dir}, log {config.log}")
    else:
        partitions = len(plan.ends)
        idle = f"; {workers - partitions} of them idle (more workers than partitions)" if workers > partitions else ""
        lines.append(f"workers: {workers} processes of group {config.app_id} share the {partitions} partitions{idle}")
        lines += [f"  worker {s.number}: web port {s.web_port}, state dir {s.state_dir}, log {s.log}" for s in slots]
    rows = [[p, plan.starts[p], plan.ends[p], max(0, plan.ends[p] - plan.starts[p])] for p in sorted(plan.ends)]
    lines += table(["partition", "start offset", "end offset", "records"], rows)
    if plan.seed is not None:
        lines += plan.seed.lines()
    return lines


def worker_command(config: RunConfig, partitions: int, slot: WorkerSlot | None = None) -> list[str]:
    """The command line of one worker of the new version (default: the first; user's extra worker flags last, so
    they win)."""
    slot = slot or worker_slots(config)[0]
    return [
        sys.executable, "-m", "replay.launch",
        "--events-topic", config.events_topic,
        "--broker", config.broker, "--prefix", config.new_prefix, "--app-id", config.app_id,
        "--web-port", str(slot.web_port), "--state-dir", str(slot.state_dir),
        "--partitions", str(partitions), "--commit-interval", "1s",
        *config.worker_args,
    ]  # fmt: skip


async def output_counts(config: RunConfig) -> dict[str, int]:
    """Records on each output topic of the new version (end offsets summed over partitions)."""
    client = kafka.consumer(config.broker)
    await client.start()
    counts: dict[str, int] = {}
    try:
        for key, name in topic_names(config.new_prefix).items():
            if key == EVENTS:
                continue
            found = client.partitions_for_topic(name) or set()
            if not found:
                await kafka.refresh_metadata(client)
                found = client.partitions_for_topic(name) or set()
            counts[name] = sum((await kafka.end_offsets(client, name, sorted(found))).values()) if found else 0
    finally:
        await client.stop()
    return counts
