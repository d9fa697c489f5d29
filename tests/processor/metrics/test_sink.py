"""The sink's metrics without a broker: the --metrics-bind address, the series, and serving them over HTTP."""

from __future__ import annotations

import asyncio
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from processor.brokers.common import free_port
from processor.metrics.common import render
from processor.metrics.sink import MetricsBindError, parse_bind, serve, sink_registry
from processor.snapshots.sink import Sink, SinkConfig, SinkWriter
from tests.processor.metrics.support import samples, value


@pytest.mark.parametrize(
    ("text", "want"),
    [("9108", ("127.0.0.1", 9108)), ("0.0.0.0:9108", ("0.0.0.0", 9108)), ("[::1]:80", ("::1", 80))],
)
def test_bind_addresses(text: str, want: tuple[str, int]):
    assert parse_bind(text) == want


@pytest.mark.parametrize("text", ["", "abc", "host:", ":9108", "70000", "h:-1"])
def test_bad_bind_addresses_are_one_line_errors(text: str):
    with pytest.raises(MetricsBindError, match="--metrics-bind"):
        parse_bind(text)


def a_sink(tmp_path: Path) -> Sink:
    writer = SinkWriter(tmp_path, "t.")
    stats = writer.stats
    stats.records, stats.redelivered, stats.bad_records, stats.files, stats.flushes = 120, 4, 1, 6, 2
    stats.rows = Counter({"events": 100, "usage_changes": 19})
    sink = Sink(SinkConfig(broker="127.0.0.1:1", prefix="t.", data_dir=tmp_path), writer)
    sink.reconnects, sink.failures = 1, 3
    return sink


def test_sink_series(tmp_path: Path):
    sink = a_sink(tmp_path)
    found = samples(render(sink_registry(sink)).decode())
    assert value(found, "ccmeter_sink_records_total") == 120
    assert value(found, "ccmeter_sink_records_redelivered_total") == 4
    assert value(found, "ccmeter_sink_bad_records_total") == 1
    assert value(found, "ccmeter_sink_rows_written_total", table="events") == 100
    assert value(found, "ccmeter_sink_rows_written_total", table="usage_changes") == 19
    assert value(found, "ccmeter_sink_files_written_total") == 6
    assert value(found, "ccmeter_sink_flushes_total") == 2
    assert value(found, "ccmeter_sink_reconnects_total") == 1
    assert value(found, "ccmeter_sink_connection_failures_total") == 3
    assert value(found, "ccmeter_sink_broker_up") == 1
    sink.down_since = 1.0
    assert value(samples(render(sink_registry(sink)).decode()), "ccmeter_sink_broker_up") == 0


def test_served_over_http_on_loopback(tmp_path: Path):
    registry = sink_registry(a_sink(tmp_path))

    async def scrape() -> tuple[str, str]:
        port = free_port()
        runner = await serve(registry, "127.0.0.1", port)
        try:
            with pytest.raises(MetricsBindError, match="cannot serve metrics"):
                await serve(registry, "127.0.0.1", port)  # taken
            url = f"http://127.0.0.1:{port}/metrics"
            with await asyncio.to_thread(urllib.request.urlopen, url, timeout=10) as response:
                return response.headers["Content-Type"], response.read().decode()
        finally:
            await runner.cleanup()

    content_type, text = asyncio.run(scrape())
    assert content_type.startswith("text/plain"), content_type
    assert value(samples(text), "ccmeter_sink_records_total") == 120, text
