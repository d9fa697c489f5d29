"""The pure parts of the issue 13 benches: partitioning of the pre-loaded topic, the verify extrapolation and
bench/cli_peak.py (the Kafka and subprocess parts run in `make bench`)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from aiokafka.partitioner import DefaultPartitioner

from bench import cli_peak
from bench.partitioned import partition_of, pusher_accounts, pusher_for
from bench.verify_bench import TARGET_EVENTS, line
from schemas.events import Rejection, decode


def test_partition_of_is_kafkas_default_partitioner() -> None:
    partitions = list(range(4))
    for key in (b"acct-0", b"acct-17", b"~push-3", b"x" * 40):
        assert partition_of(key, 4) == DefaultPartitioner()(key, partitions, partitions)


@pytest.mark.parametrize("partitions", [1, 4, 7])
def test_one_pusher_account_per_partition(partitions: int) -> None:
    accounts = pusher_accounts(partitions)
    assert [partition_of(a.encode(), partitions) for a in accounts] == list(range(partitions))
    assert all(a.startswith("~") for a in accounts)  # left out of the output checks like the dataset's pusher


def test_pusher_is_a_valid_event_of_its_account() -> None:
    event = decode(pusher_for("~push-2", 1_700_000_000_000))
    assert not isinstance(event, Rejection)
    assert event.account_id == "~push-2"


def test_line_through_two_points() -> None:
    small = {"events": 1_000_000, "peak_rss_bytes": 300 * 2**20 + 1_000_000 * 500}
    large = {"events": 2_000_000, "peak_rss_bytes": 300 * 2**20 + 2_000_000 * 500}
    slope, base, projected = line(small, large)
    assert slope == pytest.approx(500)
    assert base == pytest.approx(300 * 2**20)
    assert projected == pytest.approx(300 * 2**20 + 500 * TARGET_EVENTS)


def test_cli_peak_records_status_and_peak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = tmp_path / "peak.json"
    status = cli_peak.main([str(result), "replay"])  # help of `ccmeter replay`: exit 2
    body = json.loads(result.read_text())
    assert status == body["status"] == 2
    assert body["vmhwm_kib"] > 10_000  # a Python interpreter with ccmeter imported
    assert "verify" in capsys.readouterr().out


def test_memory_limit_caps_every_duckdb_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(duckdb, "connect", duckdb.connect)  # restored after the test
    cli_peak.cap_duckdb("100MB")
    limit = duckdb.connect().execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert limit.replace(" ", "") in {"95.3MiB", "100.0MB", "100MB"}
