"""`ccmeter replay verify`: recompute a snapshot's outputs from its own event log and compare with the live ones.

The events the live worker applied (`replay.source.classify`: valid, keyed by their account, admitted by the
partition clock) are folded by the independent batch engine. Both sides are then cut at each account's horizon (its
partition's final watermark minus the allowed lateness, or `--until`): below it every output is final, whatever
arrived later. Compared, by id and field by field in the JSON shapes of the output topics: usage changes
(`at < horizon`), closed peak windows (`end <= horizon`), user intervals (`start < horizon`; one not ended below it
is open there, end null; when the snapshot has any) and plans (`at < horizon`). With `--against`, the outputs
compared are another snapshot's (a rebuilt version's).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from processor.core.model import NEVER, PeakWindow, Plan, Settings, UsageChange, UserInterval
from processor.worker import records as rec
from replay.source import Verdicts, account_partitions, classify, write_event_file
from schemas.events import format_ms

Records = dict[str, dict[str, Any]]  # id -> record (JSON shape of the output topics)
TABLES = ("usage_changes", "peak_windows", "user_intervals", "plans")
ID_OF = {"usage_changes": "change_id", "peak_windows": "window_id", "user_intervals": "interval_id", "plans": "plan_id"}


@dataclass(frozen=True)
class Difference:
    """One disagreement between the recomputation and the live outputs."""

    table: str
    kind: str  # "missing_live" (recomputed, not in the snapshot), "extra_live" (only live), "different"
    account_id: str
    record_id: str
    detail: str

    def line(self) -> str:
        """One line for the terminal."""
        return f"{self.table} {self.kind}: {self.account_id} {self.record_id}: {self.detail}"


@dataclass
class VerifyResult:
    """Rows compared per table, the differences, and what was left out."""

    compared: dict[str, int] = field(default_factory=dict)
    live: dict[str, int] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)
    horizons: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def account_horizons(
    con: duckdb.DuckDBPyConnection, verdicts: Verdicts, settings: Settings, until_ms: int | None
) -> dict[str, int]:
    """Per account, the instant below which its outputs are final (the lowest over its partitions)."""
    out: dict[str, int] = {}
    for account, partitions in account_partitions(con).items():
        horizons = [verdicts.horizon(p, settings, account) for p in partitions]
        if not horizons or any(h is None for h in horizons):
            continue
        horizon = min(h for h in horizons if h is not None)
        out[account] = horizon if until_ms is None else min(horizon, until_ms)
    return out


def _ts(ms: int) -> str:
    return format_ms(ms)


def live_records(con: duckdb.DuckDBPyConnection, horizons: dict[str, int]) -> dict[str, Records]:
    """The snapshot's outputs below the horizons, in the JSON shapes of processor/worker/records.py."""
    con.register("_replay_horizons", _horizon_table(horizons))
    try:
        out: dict[str, Records] = {}
        rows = con.execute(
            "SELECT change_id, account_id, epoch_ms(changed_at), usage, licenses FROM usage_changes "
            "JOIN _replay_horizons USING (account_id) WHERE epoch_ms(changed_at) < horizon"
        ).fetchall()
        out["usage_changes"] = {
            r[0]: {"change_id": r[0], "account_id": r[1], "at": _ts(r[2]), "usage": r[3], "licenses": r[4]}
            for r in rows
        }
        rows = con.execute(
            "SELECT window_id, account_id, kind, epoch_ms(start_at), epoch_ms(end_at), max_usage, epoch_ms(max_at), "
            "seconds_over_licenses, license_seconds FROM peak_windows JOIN _replay_horizons USING (account_id) "
            "WHERE epoch_ms(end_at) <= horizon"
        ).fetchall()
        out["peak_windows"] = {
            r[0]: {
                "window_id": r[0],
                "account_id": r[1],
                "kind": r[2],
                "start": _ts(r[3]),
                "end": _ts(r[4]),
                "max_usage": r[5],
                "max_at": _ts(r[6]),
                "seconds_over_licenses": r[7],
                "license_seconds": r[8],
            }  # fmt: skip
            for r in rows
        }
        rows = con.execute(  # not ended below the horizon (or no end yet): still open there, end null
            "SELECT interval_id, account_id, user_id, epoch_ms(start_at), "
            "CASE WHEN epoch_ms(end_at) < horizon THEN epoch_ms(end_at) END FROM user_intervals "
            "JOIN _replay_horizons USING (account_id) WHERE epoch_ms(start_at) < horizon"
        ).fetchall()
        out["user_intervals"] = {
            r[0]: {
                "record": "user_interval",
                "interval_id": r[0],
                "account_id": r[1],
                "user_id": r[2],
                "start": _ts(r[3]),
                "end": _ts(r[4]) if r[4] is not None else None,
            }
            for r in rows
        }
        rows = con.execute(
            "SELECT plan_id, account_id, epoch_ms(effective_at), licenses, overage_allowance, billing_anchor_day, "
            "timezone, grace_minutes, grace_mode FROM plans JOIN _replay_horizons USING (account_id) "
            "WHERE epoch_ms(effective_at) < horizon"
        ).fetchall()
        out["plans"] = {r[0]: {**rec.plan(r[1], Plan(r[2], *r[3:])), "plan_id": r[0]} for r in rows}
        live_ids = {r[0] for r in con.execute("SELECT DISTINCT account_id FROM usage_changes").fetchall()}
        out["_unknown_accounts"] = {a: {} for a in sorted(live_ids - set(horizons))}
        return out
    finally:
        con.unregister("_replay_horizons")


def _horizon_table(horizons: dict[str, int]) -> Any:
    import pyarrow as pa

    return pa.table(
        {"account_id": pa.array(list(horizons), pa.string()), "horizon": pa.array(list(horizons.values()), pa.int64())}
    )


def _keep(items: Iterable[Any], horizons: dict[str, int], time_of: Callable[[Any], int], closed: bool) -> list[Any]:
    kept = []
    for item in items:
        horizon = horizons.get(item.account_id)
        if horizon is None:
            continue
        at = time_of(item)
        if at < horizon or (closed and at == horizon):
            kept.append(item)
    return kept


def recomputed_records(engine: Any, horizons: dict[str, int]) -> dict[str, Records]:
    """The batch engine's outputs below the horizons, in the same JSON shapes."""
    changes: list[UsageChange] = _keep(engine.usage_changes(), horizons, lambda c: c.at_ms, False)
    windows: list[PeakWindow] = _keep(engine.peak_windows(), horizons, lambda w: w.end_ms, True)
    intervals: list[UserInterval] = [  # not ended below the horizon: still open (end null), as the worker emits it
        i if i.end_ms < horizons[i.account_id] else UserInterval(i.account_id, i.user_id, i.start_ms, NEVER)
        for i in _keep(engine.user_intervals(), horizons, lambda i: i.start_ms, False)
    ]
    out: dict[str, Records] = {
        "usage_changes": {c.change_id: rec.usage_change(c) for c in changes},
        "peak_windows": {w.window_id: rec.peak_window(w) for w in windows},
        "user_intervals": {r["interval_id"]: r for r in map(rec.user_interval, intervals)},
    }
    plans: Records = {}
    for account, horizon in horizons.items():
        for plan in engine.plans(account):
            if plan.at_ms < horizon:
                record = rec.plan(account, plan)
                plans[record["plan_id"]] = record
    out["plans"] = plans
    return out


def _detail(record: dict[str, Any], id_key: str) -> str:
    return ", ".join(f"{k} {v}" for k, v in record.items() if k not in (id_key, "account_id", "record"))


def compare(table: str, recomputed: Records, live: Records) -> list[Difference]:
    """Differences of one table, ordered by account and id."""
    id_key = ID_OF[table]
    found: list[Difference] = []
    for record_id in sorted(recomputed.keys() | live.keys()):
        mine, theirs = recomputed.get(record_id), live.get(record_id)
        if theirs is None:
            found.append(Difference(table, "missing_live", mine["account_id"], record_id, _detail(mine, id_key)))
        elif mine is None:
            found.append(Difference(table, "extra_live", theirs["account_id"], record_id, _detail(theirs, id_key)))
        elif mine != theirs:
            fields = [
                f"{k} live {theirs.get(k)!r} != recomputed {mine.get(k)!r}" for k in mine if mine[k] != theirs.get(k)
            ]
            found.append(Difference(table, "different", mine["account_id"], record_id, "; ".join(fields)))
    return sorted(found, key=lambda d: (d.account_id, d.kind, d.record_id))


def verify(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    until_ms: int | None = None,
    progress: bool = True,
    against: duckdb.DuckDBPyConnection | None = None,
) -> VerifyResult:
    """Recompute from `con`'s events and compare with `con`'s outputs, or with those of `against` (another
    snapshot, e.g. of a rebuilt version whose sink holds outputs only), below `con`'s horizons."""
    from processor.batch.engine import BatchEngine
    from replay.common import progress as bar_of

    result = VerifyResult()
    total = con.execute("SELECT count(*) FROM events WHERE rejection IS NULL").fetchall()[0][0]
    with bar_of(total, "verify: partition clocks", enabled=progress) as bar:
        verdicts = classify(con, settings, bar=bar)
    skipped = {k: v for k, v in verdicts.counts.items() if k != "ok"}
    if skipped:
        result.notes.append("not applied live (left out): " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    horizons = account_horizons(con, verdicts, settings, until_ms)
    result.horizons = horizons
    with tempfile.TemporaryDirectory(prefix="ccmeter-verify-") as tmp:
        path = Path(tmp) / "applied.parquet"
        write_event_file(con, verdicts, path)
        engine = BatchEngine(settings)
        try:
            engine.load(path, progress=progress)
            mine = recomputed_records(engine, horizons)
        finally:
            engine.close()
    outputs = con if against is None else against
    theirs = live_records(outputs, horizons)
    unknown = list(theirs.pop("_unknown_accounts"))
    if unknown:
        result.notes.append(f"live usage changes of accounts without events in the snapshot: {', '.join(unknown[:10])}")
        for account in unknown:
            result.differences.append(Difference("usage_changes", "extra_live", account, "-", "account has no events"))
    has_intervals = outputs.execute("SELECT count(*) FROM user_intervals").fetchall()[0][0] > 0
    for table in TABLES:
        if table == "user_intervals" and not has_intervals:
            result.notes.append("user_intervals: the snapshot has none (not compared)")
            continue
        result.compared[table] = len(mine[table])
        result.live[table] = len(theirs[table])
        result.differences.extend(compare(table, mine[table], theirs[table]))
    return result
