"""The sink's metrics: `ccmeter sink --metrics-bind [HOST:]PORT` serves GET /metrics (loopback unless a host is
given) from the sink's event loop, read from its counters at scrape time (nothing is added to the consume loop)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from processor.metrics.common import CONTENT_TYPE, new_registry, render

if TYPE_CHECKING:
    from aiohttp import web

    from processor.snapshots.sink import Sink

DEFAULT_HOST = "127.0.0.1"


class MetricsBindError(Exception):
    """The metrics address is malformed or cannot be bound (one line)."""


def parse_bind(text: str) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[IPV6]:PORT` -> (host, port); a bare port binds loopback. MetricsBindError if bad."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    host = host.removeprefix("[").removesuffix("]")
    if not port.isdigit() or not 0 <= int(port) <= 65535 or (sep and not host):
        raise MetricsBindError(f"--metrics-bind {text!r}: expected PORT or HOST:PORT (e.g. 9108 or 0.0.0.0:9108)")
    return host, int(port)


class SinkCollector:
    """Yields the sink's series: records, rows and files written, lag per partition, broker reconnects."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        sink = self.sink
        stats = sink.writer.stats
        yield CounterMetricFamily("ccmeter_sink_records", "Records consumed and buffered", value=stats.records)
        yield CounterMetricFamily(
            "ccmeter_sink_records_redelivered", "Records below the committed offset, dropped", value=stats.redelivered
        )
        yield CounterMetricFamily(
            "ccmeter_sink_bad_records", "Output records skipped as unreadable", value=stats.bad_records
        )
        rows = CounterMetricFamily("ccmeter_sink_rows_written", "Rows committed to Parquet files", labels=["table"])
        for table, count in sorted(stats.rows.items()):
            rows.add_metric([table], count)
        yield rows
        yield CounterMetricFamily("ccmeter_sink_files_written", "Parquet files committed", value=stats.files)
        yield CounterMetricFamily("ccmeter_sink_flushes", "Manifest commits", value=stats.flushes)
        yield CounterMetricFamily(
            "ccmeter_sink_reconnects", "Reconnections after the broker was unreachable", value=sink.reconnects
        )
        yield CounterMetricFamily(
            "ccmeter_sink_connection_failures", "Failed attempts to reach the broker", value=sink.failures
        )
        yield GaugeMetricFamily("ccmeter_sink_broker_up", "1 unless the broker is unreachable now", value=int(sink.up))
        yield self._lag()

    def _lag(self) -> GaugeMetricFamily:
        lag = GaugeMetricFamily(
            "ccmeter_sink_lag_records", "End offset minus the next offset to store", labels=["topic", "partition"]
        )
        sink = self.sink
        consumer = sink.consumer
        if consumer is None:
            return lag
        assigned = consumer.assignment()
        for tp, key in sorted(sink.tps.items()):
            if tp not in assigned:
                continue
            end = consumer.last_stable_offset(tp)  # read_committed: the end the sink can reach
            if end is None or end < 0:
                end = consumer.highwater(tp)
            position = sink.writer.next_offset(key, tp.partition)
            if end is not None and position is not None:
                lag.add_metric([tp.topic, str(tp.partition)], max(0, end - position))
        return lag


def sink_registry(sink: Sink) -> CollectorRegistry:
    """A registry of the sink's series and `ccmeter_build_info`."""
    registry = new_registry("sink")
    registry.register(SinkCollector(sink))
    return registry


async def serve(registry: CollectorRegistry, host: str, port: int) -> web.AppRunner:
    """Serve GET /metrics on host:port from the running event loop; the caller cleans the runner up."""
    from aiohttp import web

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render(registry), headers={"Content-Type": CONTENT_TYPE})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise MetricsBindError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    return runner
