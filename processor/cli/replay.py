"""`ccmeter replay archive|publish|plan|run|restate|verify`: rebuild, restate and reconcile from the event log.

Every command prints its plan (standard output) before it acts, shows progress on standard error (tqdm: records,
rate, ETA, lag per partition) and can be run again safely (see docs/operators.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from processor.cli import CliError, RuntimeFailure
from processor.durations import give_up_seconds
from processor.kafka_security import add_security_options
from processor.options import (
    DEFAULT_MEMORY_LIMIT,
    QUIET_HELP,
    add_app_id,
    add_duration,
    deprecated,
    memory_size,
    out_path,
    prefix_of,
)
from processor.topics import DEAD_LETTERS, EVENTS, topic_names
from replay.common import (
    BEGINNING,
    DEFAULT_GROUP,
    add_broker_arguments,
    add_format_argument,
    add_settings_arguments,
    atomic_target,
    broker_of,
    check_version,
    install,
    lag_text,
    parse_instant,
    print_plan,
    progress,
    run_async,
    settings_of,
    show_ms,
    table,
)

EXIT_DIFFERENCES = 1


def register(subparsers: Any) -> None:
    """Add `ccmeter replay` and its subcommands."""
    replay = subparsers.add_parser(
        "replay",
        help="archive, re-publish, rebuild, restate and verify from the event log",
        description="Replay tools over the events topic (the source of truth) and DuckDB snapshots. Every "
        "command prints a plan first, shows progress on standard error and is safe to run again. "
        "See docs/operators.md.",
    )
    commands = replay.add_subparsers(dest="replay_command", metavar="SUBCOMMAND")
    replay.set_defaults(func=lambda args: _help(replay))
    _archive_parser(commands)
    _publish_parser(commands)
    _plan_parser(commands)
    _run_parser(commands)
    _restate_parser(commands)
    _carry_parser(commands)
    _verify_parser(commands)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)


# -- archive -----------------------------------------------------------------------------------------------------------


def _archive_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "archive",
        help="write the events of a time range from the events topic to a Parquet archive",
        description="Read PREFIX+events and keep the events with FROM <= occurred_at < TO (records that do not "
        "decode: by record timestamp); write them, with partition, offset, record timestamp, key, raw value and "
        "arrival order, to FILE.parquet (temporary file, then renamed). Which records are read: --by record-time "
        "(default) reads the offsets whose record timestamps are at FROM - SLACK up to those at TO + SLACK; --by "
        "event-time reads the whole topic, for events whose record timestamps say nothing about their event time "
        "(e.g. simulated history published today). Never past the end offsets seen at the start. A range without "
        "records writes no file and exits 0.",
        epilog="Example: ccmeter replay archive --broker 127.0.0.1:9092 --from 2026-11-01 --to 2026-12-01 "
        "--out archive-2026-11.parquet",
    )
    add_broker_arguments(parser)
    parser.add_argument("--from", dest="from_ts", required=True, metavar="TS", help="first instant (inclusive)")
    parser.add_argument("--to", dest="to_ts", required=True, metavar="TS", help="end instant (exclusive)")
    parser.add_argument("--out", required=True, metavar="FILE.parquet", help="archive file to (re)place")
    parser.add_argument(
        "--by",
        choices=("record-time", "event-time"),
        default="record-time",
        help="which records to read: those whose record timestamps are in the range +- --slack (record-time, "
        "default; fast) or every record of the topic (event-time: for records published long after their events)",
    )
    parser.add_argument(
        "--slack",
        default="1h",
        metavar="DURATION",
        help="with --by record-time, also read records whose record timestamp is this far outside the range, for "
        "events that arrived late or early (default 1h; later arrivals are not archived)",
    )
    _quiet(parser)
    parser.set_defaults(func=run_archive)


def run_archive(args: argparse.Namespace) -> int:
    """`ccmeter replay archive`."""
    from processor.worker.config import parse_duration_ms
    from replay.archive import make_plan, write_archive

    broker, prefix = broker_of(args.broker), prefix_of(args)
    from_ms, to_ms = parse_instant(args.from_ts, "--from"), parse_instant(args.to_ts, "--to")
    if to_ms <= from_ms:
        raise CliError("--to must be after --from")
    out = Path(args.out)
    if out.suffix != ".parquet":
        raise CliError(f"--out must name a .parquet file, not {args.out!r}")
    try:
        slack = parse_duration_ms(args.slack)
    except ValueError as exc:
        raise CliError(f"--slack: {exc}") from None
    topic = topic_names(prefix)[EVENTS]
    plan = run_async(make_plan(broker, topic, from_ms, to_ms, slack, args.by), broker)
    rows = [[p, plan.starts[p], plan.stops[p], plan.stops[p] - plan.starts[p]] for p in sorted(plan.starts)]
    if args.by == "event-time":
        reading = f"read every record of the topic ({plan.records} records)"
    else:
        reading = (
            f"read records with timestamps from {show_ms(from_ms - slack)} to {show_ms(to_ms + slack)} "
            f"({plan.records} records)"
        )
    print_plan(
        f"archive {topic} events with {show_ms(from_ms)} <= occurred_at < {show_ms(to_ms)} to {out}",
        [
            f"{reading}, keep those in range, write {out} atomically",
            *table(["partition", "start offset", "stop offset", "records"], rows),
        ],
    )
    with progress(plan.records, "archive", enabled=not args.quiet) as bar:

        def on_lag(lag: dict[int, int]) -> None:
            bar.set_postfix_str(lag_text(lag), refresh=False)

        result = run_async(write_archive(broker, plan, out, bar, on_lag), broker)
    if not result.kept:
        print(_nothing_archived(plan, result.read, out))
        return 0
    print(
        f"wrote {out}: {result.kept} records ({result.rejected} that do not decode) of {result.read} read; "
        + ", ".join(f"p{p} {n}" for p, n in sorted(result.per_partition.items()))
    )
    return 0


def _nothing_archived(plan: Any, read: int, out: Path) -> str:
    """The message of an archive that found nothing in its range (exit 0, no file written)."""
    span = f"{show_ms(plan.from_ms)} <= occurred_at < {show_ms(plan.to_ms)}"
    text = f"no records in {plan.topic} with {span} ({read} records read): nothing written, {out} left as it was"
    if plan.by == "record-time" and plan.topic_records > read:
        text += (
            f"; records were selected by record timestamp and the topic holds {plan.topic_records} records: if "
            "they were published after their events (e.g. simulated history), use --by event-time"
        )
    return text


# -- publish -----------------------------------------------------------------------------------------------------------


def _publish_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "publish",
        help="publish an archive (or a .jsonl event file) into the events topic",
        description="Send every record of FILE, in arrival order, to PREFIX+events (or --topic) with one idempotent "
        "producer (acks=all): same keys (account_id), same event ids, same order per partition. Archives keep "
        "their original record timestamps. Publishing the same file twice changes no result: the worker drops "
        "the second copies (duplicates, or too late).",
        epilog="Example: ccmeter replay publish archive-2026-11.parquet --broker 127.0.0.1:9092 --prefix staging.",
    )
    parser.add_argument("file", metavar="FILE", help="an archive .parquet, a simulator .parquet or a .jsonl file")
    add_broker_arguments(parser)
    parser.add_argument("--topic", default=None, help="publish to this topic instead of PREFIX + 'events'")
    parser.add_argument("--rate", type=float, default=None, metavar="N", help="at most N records per second")
    parser.add_argument(
        "--timestamps",
        choices=("original", "now"),
        default="original",
        help="record timestamps of archived records: as archived (default) or the time of publishing",
    )
    _quiet(parser)
    parser.set_defaults(func=run_publish)


def run_publish(args: argparse.Namespace) -> int:
    """`ccmeter replay publish`."""
    from replay.publish import open_source, publish

    broker, prefix = broker_of(args.broker), prefix_of(args)
    if args.rate is not None and args.rate <= 0:
        raise CliError("--rate must be positive")
    source = open_source(Path(args.file))
    topic = args.topic or topic_names(prefix)[EVENTS]
    keep = args.timestamps == "original"
    stamps = "original record timestamps" if source.kind == "archive" and keep else "the time of publishing"
    print_plan(
        f"publish {source.records} records of {source.path} ({source.kind}) to {topic} on {broker}",
        [
            "one idempotent producer, acks=all, in arrival order; key = "
            + ("the archived key" if source.kind == "archive" else "account_id"),
            f"rate: {f'{args.rate:g} records/s' if args.rate else 'unlimited'}; record timestamps: {stamps}",
            "already published records are sent again: the worker drops them (duplicates or too late)",
        ],
    )
    with progress(source.records, "publish", enabled=not args.quiet) as bar:
        result = run_async(publish(source, broker, topic, args.rate, keep, bar), broker)
    parts = ", ".join(f"p{p} {n}" for p, n in sorted(result.per_partition.items()))
    print(f"published {result.sent} records to {topic} in {result.seconds:.1f}s ({parts})")
    return 0


# -- plan --------------------------------------------------------------------------------------------------------------


def _plan_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "plan",
        help="dry run: offsets, record counts and the live consumer group, its members and lag",
        description="Show, per partition of PREFIX+events, the offsets for FROM (by record timestamp) and the end "
        "offsets, the records in between, and the live consumer group's state, members, committed offsets and "
        "lag. Changes nothing and exits 0; while the group has members it warns (standard error) that rewinding "
        "the live version is unsafe: `ccmeter replay run` is the command that refuses.",
        epilog="Example: ccmeter replay plan --broker 127.0.0.1:9092 --from 2026-11-01T00:00:00Z --format json",
    )
    add_broker_arguments(parser)
    parser.add_argument("--from", dest="from_ts", required=True, metavar="TS", help="instant, or 'beginning'")
    add_app_id(parser, "the live worker's app id = its consumer group (was --group)")
    parser.add_argument("--force", action="store_true", help=argparse.SUPPRESS)  # before plan became a pure dry run
    add_format_argument(parser)
    parser.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    """`ccmeter replay plan`: a dry run, exit 0 (a warning on standard error while the live group has members)."""
    from replay.plan import make_plan, plan_json, plan_lines

    broker, prefix = broker_of(args.broker), prefix_of(args)
    from_ms = None if args.from_ts.strip().lower() in BEGINNING else parse_instant(args.from_ts, "--from")
    group = args.app_id or os.environ.get("CCMETER_APP_ID") or DEFAULT_GROUP
    plan = run_async(make_plan(broker, topic_names(prefix)[EVENTS], from_ms, group), broker)
    warnings = []
    if plan.group.active:
        warnings.append(
            f"consumer group {group} has {len(plan.group.members)} active members: rewinding or replaying into the "
            "live version is unsafe while it consumes; stop its workers first, or rebuild into a new group with "
            "`ccmeter replay run --into VERSION`"
        )
    if args.format == "json":
        print(json.dumps({**plan_json(plan), "warnings": warnings}, indent=2))
    else:
        since = show_ms(from_ms) if from_ms is not None else "the beginning"
        print_plan(f"replay {plan.topic} from {since}", plan_lines(plan))
        state = "active" if plan.group.active else "idle"
        print(f"ok: live group {group} is {state}; {plan.records} records from the start offsets to the end")
    for warning in warnings:
        print(f"ccmeter: warning: {warning}", file=sys.stderr)
    return 0


# -- run ---------------------------------------------------------------------------------------------------------------


def _run_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "run",
        help="rebuild into a new app version (own group, changelog and output topics) while the live one serves",
        description="Start a worker of version VERSION (or --workers N of them, one consumer group): it reads the "
        "live PREFIX+events and writes PREFIX+VERSION.* outputs, with app id (consumer group, changelog) "
        "ccmeter-worker-VERSION. Wait until its applied offsets reach the end offsets captured at the start, then "
        "stop it (or keep it with --follow). Flags after `--` go to the worker (same flags as `ccmeter worker`); "
        "CCMETER_* variables are passed on. Re-running resumes.",
        epilog="Example: ccmeter replay run --broker 127.0.0.1:9092 --from beginning --into v2",
    )
    add_broker_arguments(parser)
    parser.add_argument(
        "--from", dest="from_ts", required=True, metavar="TS", help="'beginning', or an instant (needs --from-snapshot)"
    )
    parser.add_argument("--into", required=True, metavar="VERSION", help="the new version, e.g. v2")
    parser.add_argument(
        "--from-snapshot", default=None, metavar="FILE", help="fold state for --from TS from this snapshot's events"
    )
    parser.add_argument(
        "--app-id",
        default=None,
        help="the new version's app id (default: the live one, $CCMETER_APP_ID or ccmeter-worker, plus -VERSION)",
    )
    state_dir = parser.add_argument(
        "--state-dir",
        default=None,
        metavar="DIR",
        help=f"the worker's state directory (default {out_path('worker-state-VERSION')}; was --data-dir)",
    )
    deprecated(parser, "--data-dir", state_dir)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes of the new version, one consumer group splitting the partitions; they share this "
        "machine's cores, and workers beyond the partition count idle (default 1)",
    )
    parser.add_argument(
        "--web-port",
        type=int,
        default=None,
        help="the worker's HTTP port P; with --workers N: P, P+1, ..., P+N-1 (default: free ports)",
    )
    parser.add_argument(
        "--log",
        default=None,
        metavar="FILE",
        help="worker log (default STATE_DIR/replay-worker.log; worker i >= 2 of --workers: FILE-STEM-i.log next to it)",
    )
    parser.add_argument(
        "--follow", action="store_true", help="keep the workers running once caught up (Ctrl-C or SIGTERM stops all)"
    )
    give_up = parser.add_argument(
        "--give-up-after",
        metavar="DURATION",
        default=None,
        help="exit with status 1 when not caught up after this long, e.g. 30m, 2h or never (default: never; was "
        "--timeout, which bounds one broker answer in `topics`); a re-run resumes",
    )
    deprecated(parser, "--timeout", give_up)
    add_duration(
        parser,
        "--stall-timeout",
        default="60s",
        help="restart the worker when it is ready but applies nothing for this long (0s: never)",
    )
    _quiet(parser)
    parser.add_argument("worker_args", nargs=argparse.REMAINDER, help="-- then flags for the worker")
    parser.set_defaults(func=run_run)


def _worker_config(broker: str, prefix: str, worker_args: list[str]) -> Any:
    from processor.worker.config import WorkerConfig, add_arguments

    parser = argparse.ArgumentParser(prog="worker flags after --", add_help=False)
    add_arguments(parser)
    try:
        parsed = parser.parse_args(worker_args)
        parsed.broker, parsed.prefix = broker, prefix
        return WorkerConfig.from_args(parsed)
    except (SystemExit, ValueError) as exc:
        raise CliError(f"bad worker flags after --: {' '.join(worker_args)} ({exc})") from None


SHARED_WORKER_FLAGS = ("--web-port", "--state-dir", "--data-dir")  # one value for every worker of a group


def _check_workers(args: argparse.Namespace, worker_args: list[str]) -> int:
    """`--workers N` (>= 1; CliError otherwise, or when flags after `--` would give every worker of a group the same
    port or directory)."""
    from processor.options import source_of

    workers: int = args.workers
    if workers < 1:
        raise CliError(f"{source_of(args, 'workers', '--workers')} must be at least 1, not {workers}")
    shared = [flag for flag in SHARED_WORKER_FLAGS for a in worker_args if a == flag or a.startswith(flag + "=")]
    if workers > 1 and shared:
        raise CliError(
            f"{shared[0]} after -- would be the same for all {workers} workers: use `replay run --web-port` and "
            "`--state-dir`, which give each worker its own"
        )
    return workers


def _web_ports(first: int | None, workers: int) -> tuple[int, ...]:
    """One HTTP port per worker: P, P+1, ... from `--web-port P`, else free ports (CliError past 65535)."""
    from processor.brokers.common import free_port

    if first:
        if not 0 < first <= 65536 - workers:
            raise CliError(f"--web-port {first} with --workers {workers}: the ports must be within 1..65535")
        return tuple(range(first, first + workers))
    ports: list[int] = []
    while len(ports) < workers:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return tuple(ports)


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_run(args: argparse.Namespace) -> int:
    """`ccmeter replay run`."""
    from replay.run import (
        RunConfig,
        check_seed_snapshot,
        make_plan,
        output_counts,
        plan_lines,
        worker_command,
        worker_slots,
    )

    broker, prefix = broker_of(args.broker), prefix_of(args)
    new_prefix = check_version(args.into, prefix)
    worker_args = list(args.worker_args)
    if worker_args[:1] == ["--"]:
        worker_args = worker_args[1:]
    web_ports = _web_ports(args.web_port, _check_workers(args, worker_args))
    worker = _worker_config(broker, new_prefix, worker_args)
    from_ms = None if args.from_ts.strip().lower() in BEGINNING else parse_instant(args.from_ts, "--from")
    if args.from_snapshot and from_ms is None:
        raise CliError("--from-snapshot goes with --from TS (from the beginning no state is needed)")
    give_up_s = give_up_seconds(args.give_up_after, once=False)
    if args.from_snapshot:  # before any broker call: the file must be a snapshot of this events topic
        check_seed_snapshot(Path(args.from_snapshot), topic_names(prefix)[EVENTS])
    data_dir = Path(args.state_dir or out_path(f"worker-state-{args.into}")).resolve()
    config = RunConfig(
        broker=broker,
        prefix=prefix,
        version=args.into,
        from_ms=from_ms,
        app_id=args.app_id or f"{os.environ.get('CCMETER_APP_ID') or DEFAULT_GROUP}-{args.into}",
        data_dir=data_dir,
        web_ports=web_ports,
        log=Path(args.log).resolve() if args.log else data_dir / "replay-worker.log",
        snapshot=Path(args.from_snapshot) if args.from_snapshot else None,
        follow=args.follow,
        timeout_s=give_up_s,
        stall_s=args.stall_timeout or None,
        worker_args=tuple(worker_args),
        settings=worker.settings,
        store=worker.store,
    )
    plan = run_async(make_plan(config), broker)
    group_of = "" if config.workers == 1 else f" with {config.workers} workers"
    print_plan(f"rebuild into {args.into} ({new_prefix}*){group_of}", plan_lines(config, plan))
    if plan.seed is not None:
        from replay.seed import seed

        with progress(plan.seed.records, "seed from snapshot", enabled=not args.quiet) as bar:
            seeded = run_async(seed(config, plan.seed, worker, bar), broker)
        print(seeded)
    if plan.records == 0 and not config.follow:
        print(f"nothing to do: group {config.app_id} is already at the end offsets")
        return 0
    from replay.supervise import WorkerGroup, follow_progress

    partitions = len(plan.ends)
    specs = [
        (worker_command(config, partitions, slot), slot.log, slot.web_port, slot.name(config.workers))
        for slot in worker_slots(config)
    ]
    group = WorkerGroup.launch(specs, partitions)
    previous = signal.signal(signal.SIGTERM, _terminate)  # a service manager's stop: stop the workers too
    try:
        with progress(plan.records, f"rebuild {args.into}", enabled=not args.quiet) as bar:
            follow = follow_progress(
                broker, config.app_id, config.events_topic, config.changelog, plan.starts, plan.ends,
                group, bar, poll_s=config.poll_s, stall_s=config.stall_s, timeout_s=config.timeout_s,
            )  # fmt: skip
            seconds = run_async(follow, broker)
        restarts = f" ({group.restarts} restarts after stalls)" if group.restarts else ""
        them = "the worker" if config.workers == 1 else f"all {config.workers} workers"
        print(f"caught up with the end offsets captured at the start in {seconds:.1f}s{restarts}")
        if config.follow:
            print(f"following the live events topic as version {args.into} (Ctrl-C stops {them})")
            sys.stdout.flush()
            return group.wait() or 0
    finally:
        status = group.stop()
        signal.signal(signal.SIGTERM, previous)
    counts = run_async(output_counts(config), broker)
    stopped = "worker stopped" if config.workers == 1 else f"{config.workers} workers stopped"
    print(f"{stopped} (status {status}); outputs of {args.into}: " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0


# -- restate -----------------------------------------------------------------------------------------------------------


def _restate_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "restate",
        help="recompute a period's report with the too-late events, and show the difference",
        description="Recompute the report of ACCOUNT for PERIOD with the batch engine over the events the live worker "
        "applied plus the too-late ones (from the snapshot's events and dead_letters table, and with --broker from "
        "the dead-letter topic), write it as JSON and print its difference from the last report (the one the "
        "snapshot's live outputs give) field by field and per day. With --apply the restatement becomes part of "
        "the billing record: it is recorded in the sink's data directory (DIR/restatements, one record per account "
        "and period: restating again changes nothing) and every later `ccmeter snapshot` of DIR recomputes the "
        "period from its own events plus these late events (billing_periods.restated, table adjustments).",
        epilog="Example: ccmeter replay restate --snapshot usage.duckdb --account acct-1 --period 2026-11",
    )
    parser.add_argument("--snapshot", required=True, metavar="FILE", help="a snapshot from `ccmeter snapshot`")
    parser.add_argument("--account", required=True, metavar="ID", help="account_id")
    parser.add_argument("--period", required=True, help="billing period: YYYY-MM, current or previous")
    parser.add_argument("--broker", default=None, metavar="HOST:PORT", help="also read the dead-letter topic here")
    parser.add_argument(
        "--prefix", default=None, help="topic prefix of the dead-letter topic (default: the snapshot's)"
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help=f"restated report JSON (default {out_path('restated-ID-FROM.json')})",
    )
    parser.add_argument(
        "--apply",
        action="store_true",
        help="record the restatement in the sink's data directory: the next `ccmeter snapshot` of it shows the "
        "restated numbers and the adjustments (without it: a dry run that says what would change)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="the sink data directory to record it in (default: the one the snapshot was built from)",
    )
    parser.add_argument("--reason", default=None, help="why the period is restated (kept with every adjustment)")
    add_settings_arguments(parser)
    add_security_options(parser)  # for --broker: the dead-letter topic of a secured cluster
    _quiet(parser)
    parser.set_defaults(func=run_restate)


def run_restate(args: argparse.Namespace) -> int:
    """`ccmeter replay restate`."""
    from processor.snapshots.history import AccountHistory, load_histories, resolve_period
    from processor.snapshots.restatements import Restatement
    from replay.restate import (
        LateEvents,
        differences,
        late_from_table,
        late_from_topic,
        late_records,
        restate,
        snapshot_data_dir,
        snapshot_events_topic,
        snapshot_prefix,
    )
    from replay.source import open_snapshot_file

    settings = settings_of(args)
    con, watermark = open_snapshot_file(args.snapshot)
    try:
        history = load_histories(con, [args.account]).get(args.account) or AccountHistory(args.account)
        known = con.execute(
            "SELECT count(*) FROM events WHERE rejection IS NULL AND account_id = ?", [args.account]
        ).fetchall()[0][0]
        if not known and not history.changes:
            raise CliError(f"account {args.account!r} has no events in snapshot {args.snapshot}")
        try:
            through = history.data_through_ms if history.data_through_ms is not None else watermark
            start, end = resolve_period(args.period, history.latest_plan, through)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        prefix = prefix_of(args) if args.prefix else snapshot_prefix(con)
        events_topic = snapshot_events_topic(con, prefix)
        data_dir = Path(args.data_dir) if args.data_dir else snapshot_data_dir(con)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", args.account)
        out = Path(args.out or out_path(f"restated-{safe}-{start}.json"))
        sources = ["the snapshot's events (partition clock)", "its dead_letters table (reason too_late)"]
        if args.broker:
            sources.append(f"the dead-letter topic {topic_names(prefix)[DEAD_LETTERS]} on {args.broker}")
        print_plan(
            f"restate {args.account} for {start}..{end} from {args.snapshot}",
            [
                f"{known} events of the account in the snapshot; too-late events from " + ", ".join(sources),
                "recompute with the batch engine; compare with the report of the snapshot's live outputs",
                f"write the restated report to {out}",
                f"record it in {data_dir}/restatements (--apply)"
                if args.apply
                else "dry run: record nothing (--apply records it for the next snapshot)",
            ],
        )
        last = history.report(start, end)
        late = LateEvents()
        late_from_table(con, args.account, events_topic, late)
        if args.broker:
            with progress(0, "dead-letter topic", enabled=not args.quiet) as bar:
                run_async(late_from_topic(args.broker, prefix, args.account, late, bar), args.broker)
        result = restate(con, args.account, start, end, settings, last, late, progress=not args.quiet)
        recorded = late_records(con, late, result.horizon_ms)
        version = snapshot_prefix(con)
    finally:
        con.close()
    tmp = atomic_target(out)
    tmp.write_text(json.dumps(result.restated.to_json_dict(), indent=2) + "\n")
    install(tmp, out)
    found = ", ".join(f"{n} from {source}" for source, n in sorted(result.found.items())) or "none found"
    print(f"late events: {result.late_events} added to {result.base_events} applied ones ({found})")
    print(
        f"final below {show_ms(result.horizon_ms)} (the account's horizon in this snapshot); past it both reports "
        "hold the last usage"
    )
    if result.beyond_horizon:
        print(
            f"note: {result.beyond_horizon} late events at or after the horizon are not final in this snapshot "
            "(take a newer snapshot to restate them)"
        )
    if result.recomputed != result.last:
        print(
            "note: without the late events the recomputation already differs from the last report (live outputs "
            "incomplete for this period, or wrong: run `ccmeter replay verify`); the difference below is against "
            "the last report"
        )
    summary, days = differences(result.last, result.restated)
    record = Restatement(args.account, start, end, version=version, settings=settings, late=recorded)
    if args.reason:
        record.reason = args.reason
    if not summary and not days:
        print(f"no difference from the last report; wrote {out}")
        _apply(args.apply, data_dir, record)
        return 0
    print("summary (field, last, restated, change):")
    for line in table(["field", "last", "restated", "change"], summary):
        print(f"  {line}")
    if days:
        print("days (date, field, last, restated, change):")
        for line in table(["date", "field", "last", "restated", "change"], days):
            print(f"  {line}")
    print(f"wrote {out}")
    _apply(args.apply, data_dir, record)
    return 0


def _apply(apply: bool, data_dir: Path | None, record: Any) -> None:
    """Record the restatement (`--apply`) or say what recording it would do."""
    from processor.snapshots.restatements import apply_record, record_path

    if not record.late:
        print("nothing to apply: no late events below the horizon")
        return
    if data_dir is None:
        raise CliError("the snapshot does not name its data directory: give --data-dir")
    path = record_path(data_dir, record.restatement_id)
    if not apply:
        print(
            f"dry run: would record restatement {record.restatement_id} ({len(record.late)} late events) in {path}; "
            "add --apply to make it part of the billing record"
        )
        return
    if not (data_dir / "_sink").is_dir():
        raise RuntimeFailure(f"{data_dir} is not a sink data directory (no _sink/manifest): give --data-dir")
    try:
        stored, changed = apply_record(data_dir, record)
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {path}: {exc.strerror or exc}") from None
    state = "applied" if changed else "already applied (nothing new)"
    print(
        f"{state}: restatement {stored.restatement_id} of {stored.account_id} {stored.period_from}..{stored.period_to} "
        f"({len(stored.late)} late events) in {path}; the next `ccmeter snapshot --data-dir {data_dir}` shows it"
    )


# -- carry -------------------------------------------------------------------------------------------------------------


def _carry_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "carry",
        help="copy the applied restatements of one sink data directory into another (a rebuilt version's)",
        description="Copy every restatement recorded with `replay restate --apply` in FROM/restatements into "
        "TO/restatements. A record holds the late events' positions and bytes on the events topic, not numbers, so it "
        "holds for every version built from that topic: the snapshots of TO (a sink with --events-prefix) recompute "
        "the restated periods from their own events. Running it again changes nothing.",
        epilog="Example: ccmeter replay carry --from data --to data-v2",
    )
    parser.add_argument("--from", dest="source", required=True, metavar="DIR", help="sink data directory to copy from")
    parser.add_argument("--to", dest="target", required=True, metavar="DIR", help="sink data directory to copy into")
    parser.set_defaults(func=run_carry)


def run_carry(args: argparse.Namespace) -> int:
    """`ccmeter replay carry`."""
    from processor.snapshots.restatements import RESTATEMENTS_DIR, carry_over, read_records

    source, target = Path(args.source), Path(args.target)
    if not (source / "_sink").is_dir():
        raise RuntimeFailure(f"{source} is not a sink data directory (no _sink/manifest)")
    records = read_records(source)
    print_plan(
        f"carry restatements from {source} to {target}",
        [f"{len(records)} restatements in {source / RESTATEMENTS_DIR}", f"copy them into {target / RESTATEMENTS_DIR}"],
    )
    try:
        carried = carry_over(source, target)
    except OSError as exc:
        raise RuntimeFailure(f"cannot write {target / RESTATEMENTS_DIR}: {exc.strerror or exc}") from None
    for record in carried:
        print(f"  {record.restatement_id}  {record.account_id}  {record.period_from}..{record.period_to}")
    print(f"carried {len(carried)} restatements; the next `ccmeter snapshot --data-dir {target}` applies them")
    return 0


# -- verify ------------------------------------------------------------------------------------------------------------


def _verify_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "verify",
        help="recompute a snapshot from its own event log and compare with its live outputs",
        description="Fold the events the live worker applied (by the partition clocks) with the batch engine and "
        "compare usage changes, closed peak windows, user intervals and plans with the snapshot's (or, with "
        "--against, another snapshot's), below each account's horizon (watermark - allowed lateness, or --until). "
        "Prints every difference as it is found; exits 1 if any. Memory is bounded: each DuckDB database it uses "
        "is held to --memory-limit and spills the rest to work files in a temporary directory.",
        epilog="Example: ccmeter replay verify --snapshot usage.duckdb",
    )
    parser.add_argument("--snapshot", required=True, metavar="FILE", help="a snapshot from `ccmeter snapshot`")
    parser.add_argument("--until", default=None, metavar="TS", help="compare only below this instant")
    parser.add_argument(
        "--against",
        default=None,
        metavar="FILE",
        help="compare the outputs of this other snapshot (e.g. of a rebuilt version) instead of the snapshot's own",
    )
    parser.add_argument(
        "--memory-limit",
        type=memory_size,
        default=DEFAULT_MEMORY_LIMIT,
        metavar="SIZE",
        help=f"memory of each DuckDB database it uses, e.g. 512MB, 2GB (default {DEFAULT_MEMORY_LIMIT}); the rest "
        "spills to disk",
    )
    add_settings_arguments(parser)
    add_format_argument(parser)
    _quiet(parser)
    parser.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    """`ccmeter replay verify`: exit 0 without differences, 1 with (each printed as it is found)."""
    import tempfile

    from replay.source import open_snapshot_file
    from replay.verify import Difference, verify

    settings = settings_of(args)
    until = parse_instant(args.until, "--until") if args.until else None
    as_json = args.format == "json"
    con, watermark = open_snapshot_file(args.snapshot)
    other = open_snapshot_file(args.against)[0] if args.against else None
    outputs = f"the outputs of {args.against}" if args.against else "the snapshot's outputs"
    with tempfile.TemporaryFile("w+", prefix="ccmeter-verify-") as spill:  # differences for the JSON output

        def found(difference: Difference) -> None:
            if as_json:
                spill.write(json.dumps(difference_json(difference)) + "\n")
            else:
                print(difference.line())

        try:
            events = con.execute("SELECT count(*) FROM events WHERE rejection IS NULL").fetchall()[0][0]
            if not events:
                raise CliError(
                    f"{args.snapshot} holds no events (the sink of a rebuilt version stores outputs only): verify "
                    f"a snapshot of the live prefix, or compare with --snapshot LIVE.duckdb --against {args.snapshot}"
                )
            print_plan(
                f"verify {args.snapshot} (watermark {show_ms(watermark)})",
                [
                    f"replay the partition clocks over the {events} valid events; fold those the live worker applied "
                    "with the batch engine",
                    f"compare {outputs}: usage changes, closed peak windows, user intervals and plans by id, field "
                    "by field, below each account's horizon" + (f" and {show_ms(until)}" if until is not None else ""),
                ],
                to_stderr=as_json,
            )
            result = verify(
                con, settings, until, progress=not args.quiet, against=other, on_difference=found,
                memory_limit=args.memory_limit,
            )  # fmt: skip
        finally:
            con.close()
            if other is not None:
                other.close()
        if as_json:
            _print_verify_json(args, watermark, until, result, spill)
            return EXIT_DIFFERENCES if result.difference_count else 0
    for note in result.notes:
        print(f"note: {note}")
    label = f"in {args.against}" if args.against else "live"
    for name, count in result.compared.items():
        print(f"{name}: {count} recomputed, {result.live.get(name, 0)} {label}")
    if result.difference_count:
        print(f"FAILED: {result.difference_count} differences")
        return EXIT_DIFFERENCES
    print(f"OK: no differences ({len(result.horizons)} accounts)")
    return 0


def difference_json(difference: Any) -> dict[str, str]:
    """One difference of `verify --format json`."""
    return {
        "table": difference.table,
        "kind": difference.kind,
        "account_id": difference.account_id,
        "record_id": difference.record_id,
        "detail": difference.detail,
    }


def _print_verify_json(
    args: argparse.Namespace, watermark: int | None, until: int | None, result: Any, spill: Any
) -> None:
    """The JSON object of `verify --format json`, the differences streamed from `spill` (one JSON per line)."""
    head = {
        "snapshot": args.snapshot,
        "against": args.against,
        "watermark": show_ms(watermark) if watermark is not None else None,
        "until": show_ms(until) if until is not None else None,
        "ok": result.difference_count == 0,
        "accounts": len(result.horizons),
        "compared": {
            name: {"recomputed": count, "outputs": result.live.get(name, 0)} for name, count in result.compared.items()
        },
        "notes": result.notes,
        "difference_count": result.difference_count,
    }
    text = json.dumps(head, indent=2)
    sys.stdout.write(text[: text.rindex("}")].rstrip() + ',\n  "differences": [')
    spill.seek(0)
    for index, line in enumerate(spill):
        sys.stdout.write(("," if index else "") + "\n    " + line.rstrip("\n"))
    sys.stdout.write("\n  ]\n}\n" if result.difference_count else "]\n}\n")
