"""The simulator: determinism, wire validity, delivery faults, formats, profiles and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from processor.cli.simulate import SimConfig, iter_records, simulate, write_events
from schemas.events import (
    EVENT_TYPES,
    DeviceEvent,
    Event,
    PlanChanged,
    PortalSignedOut,
    Rejection,
    decode,
    decode_mapping,
)

SAFE_DELAY_MS = 5 * 60_000  # well inside the allowed lateness (10 min)
FUTURE_SKEW_MS = 5 * 60_000

SMALL = SimConfig(accounts=3, agents=4, days=2, seed=11, start=date(2026, 11, 2))
FAULTY = SimConfig(
    accounts=3,
    agents=4,
    days=2,
    seed=11,
    start=date(2026, 11, 2),
    duplicates=0.02,
    out_of_order=0.05,
    orphans=0.01,
    malformed=0.01,
)


def _events(config: SimConfig) -> list[Event]:
    out = []
    for record in iter_records(config):
        if not record.malformed:
            event = decode(record.line)
            assert not isinstance(event, Rejection), (record.line, event)
            out.append(event)
    return out


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_events(first, FAULTY)
    write_events(second, FAULTY)
    write_events(other, SimConfig(**{**_fields(FAULTY), "seed": 12}))
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert first.read_bytes() == b"".join(f"{r.line}\n".encode() for r in iter_records(FAULTY))


def test_output_does_not_depend_on_encoding_block_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import processor.simulation.output as output

    write_events(tmp_path / "big.jsonl", FAULTY)
    write_events(tmp_path / "big.parquet", SMALL)
    monkeypatch.setattr(output, "MAX_BLOCK_ROWS", 777)
    write_events(tmp_path / "small.jsonl", FAULTY)
    write_events(tmp_path / "small.parquet", SMALL)
    assert (tmp_path / "big.jsonl").read_bytes() == (tmp_path / "small.jsonl").read_bytes()
    big, small = pq.read_table(tmp_path / "big.parquet"), pq.read_table(tmp_path / "small.parquet")
    assert big.equals(small)


def _fields(config: SimConfig) -> dict:
    return {name: getattr(config, name) for name in config.__slots__}


def test_valid_lines_decode_and_malformed_lines_are_rejected() -> None:
    records = list(iter_records(FAULTY))
    reasons = set()
    n_bad = 0
    for record in records:
        result = decode(record.line)
        assert isinstance(result, Rejection) == record.malformed, record.line
        if record.malformed:
            n_bad += 1
            reasons.add(result.reason.split(":")[0])
    assert n_bad > 0
    assert {"invalid_json", "unknown_type", "missing_field"} <= reasons


def test_line_format_is_compact_with_millisecond_timestamps() -> None:
    lines = [r.line for r in iter_records(SMALL)]
    stamps = [json.loads(line)["occurred_at"] for line in lines[:500]]
    assert all(len(s) == 24 and s.endswith("Z") and s[19] == "." for s in stamps)
    assert len({s[20:23] for s in stamps}) > 50  # the milliseconds vary
    assert all(": " not in line and ", " not in line for line in lines[:500])


def test_every_event_type_appears_and_plans_come_first() -> None:
    events = _events(SMALL)
    assert {e.type for e in events} == set(EVENT_TYPES)
    first: dict[str, Event] = {}
    for event in events:
        first.setdefault(event.account_id, event)
    assert sorted(first) == ["acct-0", "acct-1", "acct-2"]
    assert all(isinstance(e, PlanChanged) for e in first.values())
    zones = {e.timezone for e in events if isinstance(e, PlanChanged)}
    assert zones and all("/" in z for z in zones)


def test_event_ids_unique_per_account_and_duplicates_identical() -> None:
    seen: dict[tuple[str, str], str] = {}
    copies = 0
    for record in iter_records(FAULTY):
        if record.malformed:
            continue
        wire = json.loads(record.line)
        key = (wire["account_id"], wire["event_id"])
        assert wire["event_id"].startswith(wire["account_id"] + "-")
        if key in seen:
            assert seen[key] == record.line  # an identical re-send, never a conflicting payload
            copies += 1
        else:
            seen[key] = record.line
    assert copies > 0


def test_arrival_stays_within_allowed_lateness_and_future_skew() -> None:
    """No event arrives more than 5 min (the simulator's margin; 10 min allowed) behind the watermark, nor more than
    `max_future_skew` (5 min) ahead of it, for the whole file and for each account on its own."""
    watermarks: dict[str, int] = {}
    behind = 0
    for event in _events(FAULTY):
        for key in ("file", event.account_id):
            watermark = watermarks.get(key)
            if watermark is not None:
                assert watermark - SAFE_DELAY_MS <= event.at_ms <= watermark + FUTURE_SKEW_MS, (key, event)
                behind += event.at_ms < watermark
            watermarks[key] = event.at_ms if watermark is None else max(watermark, event.at_ms)
    assert behind > 0  # some events really arrive out of order


def test_no_faults_means_event_time_order_and_no_copies() -> None:
    events = _events(SMALL)
    assert [e.at_ms for e in events] == sorted(e.at_ms for e in events)
    assert len({(e.account_id, e.event_id) for e in events}) == len(events)
    assert all(not r.malformed for r in iter_records(SMALL))


def test_orphans_end_things_never_started() -> None:
    events = _events(FAULTY)
    signed_in_devices = {(e.user_id, e.device_id) for e in events if e.type == "desktop.signed_in"}
    ghosts = [e for e in events if isinstance(e, DeviceEvent) and (e.user_id, e.device_id) not in signed_in_devices]
    assert ghosts and {e.type for e in ghosts} <= {"desktop.signed_out", "work_session.ended"}
    portal_users = {e.user_id for e in events if e.type == "portal.page_viewed"}
    portal_orphans = [e for e in events if isinstance(e, PortalSignedOut) and e.user_id not in portal_users]
    assert portal_orphans


def test_heartbeats_keep_signed_in_devices_alive() -> None:
    config = SimConfig(**{**_fields(SMALL), "heartbeat_seconds": 45})
    by_device: dict[tuple[str, str, str], list[Event]] = defaultdict(list)
    for event in _events(config):
        if isinstance(event, DeviceEvent):
            by_device[(event.account_id, event.user_id, event.device_id)].append(event)
    heartbeats = 0
    for events in by_device.values():
        events.sort(key=lambda e: e.at_ms)
        for before, after in zip(events, events[1:], strict=False):
            heartbeats += after.type == "desktop.heartbeat"
            if before.type != "desktop.signed_out" and after.type != "desktop.signed_in":
                # Within a signed-in stretch no gap reaches the 180 s device timeout (crashes excepted: the
                # stretch then ends with the last heartbeat and the next event is a new sign-in).
                assert after.at_ms - before.at_ms < 46_000, (before, after)
    assert heartbeats > 100


def test_parquet_and_jsonl_carry_the_same_events(tmp_path: Path) -> None:
    config = SimConfig(**{**_fields(FAULTY), "malformed": 0.0})
    jsonl, parquet = tmp_path / "e.jsonl", tmp_path / "e.parquet"
    stats_j = write_events(jsonl, config)
    stats_p = write_events(parquet, config)
    assert stats_j.records == stats_p.records
    from_jsonl = [decode(line) for line in jsonl.read_bytes().splitlines()]
    table = pq.read_table(parquet)
    assert table.column("arrival").to_pylist() == list(range(table.num_rows))
    assert str(table.schema.field("occurred_at").type) == "timestamp[ms, tz=UTC]"
    rows = table.drop_columns(["arrival"]).to_pylist()
    from_parquet = [decode_mapping(row) for row in rows]
    assert len(from_parquet) == len(from_jsonl)
    assert from_parquet == from_jsonl
    assert all(row["schema_version"] is None for row in rows)
    assert all(row["device_id"] is None for row in rows if row["type"] == "api.request")


def test_parquet_is_deterministic(tmp_path: Path) -> None:
    write_events(tmp_path / "a.parquet", SMALL)
    write_events(tmp_path / "b.parquet", SMALL)
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_malformed_is_for_jsonl_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jsonl"):
        write_events(tmp_path / "x.parquet", FAULTY)
    with pytest.raises(ValueError, match=".jsonl or .parquet"):
        write_events(tmp_path / "x.csv", SMALL)


def test_simulate_yields_wire_dicts() -> None:
    dicts = list(simulate(FAULTY))
    assert all(isinstance(d, dict) and "event_id" in d for d in dicts)
    assert len(dicts) == sum(1 for r in iter_records(FAULTY) if not r.malformed)


def test_mixed_profiles_shape_usage() -> None:
    """within never exceeds its licenses; spike goes over only for less than the grace period; overage stays over
    the allowance for longer than the grace period."""
    from processor.core.partition import fold_history

    config = SimConfig(accounts=3, agents=8, days=5, seed=5, start=date(2026, 11, 2), out_of_order=0.01)
    events = _events(config)
    plans = {e.account_id: e for e in events if isinstance(e, PlanChanged)}  # only the last plan per account
    output, metrics, _ = fold_history(events)
    assert all(m.too_late == 0 and m.future_skew == 0 and m.applied > 0 for m in metrics.values())
    changes = defaultdict(list)
    for change in output.usage_changes:
        changes[change.account_id].append(change)

    def stretches(account: str, above: int) -> list[int]:
        """Lengths (ms) of the stretches where usage - licenses > above."""
        out, since = [], None
        for change in changes[account]:
            over = change.usage - change.licenses > above
            if over and since is None:
                since = change.at_ms
            elif not over and since is not None:
                out.append(change.at_ms - since)
                since = None
        return out

    assert all(changes[account] for account in ("acct-0", "acct-1", "acct-2"))
    assert config.profile_of(0) == "within" and stretches("acct-0", 0) == []
    assert config.profile_of(1) == "spike"
    spike = stretches("acct-1", 0)
    grace_ms = plans["acct-1"].grace_minutes * 60_000
    assert spike and sum(spike) < grace_ms
    assert config.profile_of(2) == "overage"
    over = stretches("acct-2", plans["acct-2"].overage_allowance)
    assert max(over) > plans["acct-2"].grace_minutes * 60_000


def test_config_validation() -> None:
    for bad in ({"accounts": 0}, {"duplicates": 1.5}, {"heartbeat_seconds": 200}, {"profile": "nope"}):
        with pytest.raises(ValueError):
            SimConfig(**{**_fields(SMALL), **bad}).validate()


def test_cli_main_writes_file_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from processor.cli import main

    out = tmp_path / "cli.jsonl"
    args = ["simulate", "--accounts", "2", "--agents", "3", "--days", "2", "--seed", "4", "--out", str(out), "--quiet"]
    assert main([*args, "--duplicates", "0.01", "--malformed", "0.01"]) == 0
    summary = capsys.readouterr().out
    assert "wrote" in summary and str(out) in summary
    assert out.stat().st_size > 0
    assert main(["simulate", "--out", str(tmp_path / "x.parquet"), "--malformed", "0.1", "--quiet"]) == 2
    assert main(["simulate", "--out", str(tmp_path / "x.txt"), "--quiet"]) == 2
    late = ["--start", "9998-12-31", "--days", "2"]  # past the last event time of SPEC 3
    assert main(["simulate", "--out", str(tmp_path / "y.jsonl"), *late, "--quiet"]) == 2
    assert "ccmeter: error:" in capsys.readouterr().err


def test_cli_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "ccmeter"
    assert script.exists(), "make install puts the ccmeter console script next to the interpreter"
    out = tmp_path / "script.parquet"
    args = [str(script), "simulate", "--accounts", "1", "--agents", "2", "--days", "1", "--out", str(out)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    assert pq.read_table(out).num_rows > 0
