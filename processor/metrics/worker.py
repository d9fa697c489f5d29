"""The worker's metrics: GET /metrics on its Faust web server (registered by `install`).

Cheap on the hot path: the pump calls `WorkerMetrics.batch` once per batch with the batch's results (a few `len`s
and Counter updates per partition, one histogram observation); everything else (lag, horizon delay, recovery,
readiness) is read from the worker when Prometheus scrapes. Wall clock is used only here, for the horizon's delay,
never in billing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from processor.core.model import NEVER
from processor.metrics.common import CONTENT_TYPE, new_registry, render
from processor.worker.partition import BatchResult

if TYPE_CHECKING:
    from processor.app import Worker
    from processor.worker.peers import Answer, Local

OUTCOMES = ("applied", "orphan", "duplicate", "duplicate_conflict")  # of events that reached their account
REASONS = ("invalid_json", "key_mismatch", "too_late", "future_skew", "processing_error")  # always exposed
KINDS = ("usage_change", "peak_window", "alert", "user_interval", "plan", "presence_interval", "horizon", "dead_letter")
ANSWERS = ("local", "forwarded", "not_found", "unavailable")
PHASES = ("assigned", "revoked")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DEAD = "dead_letter:"


@dataclass(frozen=True, slots=True)
class PartitionView:
    """One owned events partition at scrape time."""

    partition: int
    lag: int | None = None  # end offset minus the next offset to read (None until both are known)
    idle_floor_ms: int | None = None  # the partition's horizon floor `W_p - account_idle_lateness` (None: no events)


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What the worker shows at scrape time."""

    partitions: tuple[PartitionView, ...] = ()
    ready: bool = False
    recovering: int = 0  # assigned partitions whose state is not recovered yet
    restored: int = 0  # changelog records applied by recoveries since start
    records: int = 0  # events-topic records read since start
    redelivered: int = 0  # of which at or below the applied offset (dropped)
    fenced: int = 0


class WorkerMetrics:
    """The worker's registry and the per-batch totals behind it."""

    def __init__(self, view: Callable[[], WorkerView] = WorkerView, clock: Callable[[], float] = time.time) -> None:
        self.view = view
        self.clock = clock  # wall clock (seconds): only for the horizon's delay
        self.outcomes: Counter[str] = Counter()  # `BatchResult.counts` summed: outcomes and dead_letter:<reason>
        self.outputs: Counter[str] = Counter()
        self.entries = 0
        self.entry_bytes = 0
        self.rebalances: Counter[str] = Counter()
        self.live: Counter[str] = Counter()
        self.registry = new_registry("worker")
        self.latency = Histogram(
            "ccmeter_worker_batch_duration_seconds",
            "Time to fold and checkpoint one batch (outputs and state acknowledged)",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_Collector(self))

    def batch(self, results: Iterable[BatchResult], seconds: float) -> None:
        """Count one checkpointed batch (called once per batch, never per event)."""
        outcomes, outputs = self.outcomes, self.outputs
        for result in results:
            outcomes.update(result.counts)
            out = result.output
            outputs["usage_change"] += len(out.usage_changes)
            outputs["peak_window"] += len(out.windows)
            outputs["alert"] += len(result.alerts)
            outputs["user_interval"] += len(out.opened) + len(out.intervals)
            outputs["plan"] += len(out.plans)
            outputs["presence_interval"] += len(out.presences)
            outputs["horizon"] += sum(1 for h in out.horizons.values() if h > -NEVER) + (result.idle_floor is not None)
            outputs["dead_letter"] += len(result.dead_letters)
            states = result.states
            self.entries += len(states)
            self.entry_bytes += sum(map(len, states)) + sum(len(v) for v in states.values() if v is not None)
        self.latency.observe(seconds)

    def live_query(self, answer: Answer, local: Local) -> None:
        """Count one answered GET /accounts/{id}/usage."""
        if answer.status == 200:
            self.live["local" if local.body is not None else "forwarded"] += 1
        elif answer.status == 404:
            self.live["not_found"] += 1
        else:
            self.live["unavailable"] += 1

    def rebalance(self, phase: str) -> None:
        """Count a partition assignment or revocation of the group."""
        self.rebalances[phase] += 1

    def render(self) -> bytes:
        """The Prometheus text of every series."""
        return render(self.registry)


class _Collector:
    """Yields the worker's series from `WorkerMetrics` and the worker's view at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        view = m.view()
        yield _counter("ccmeter_worker_records_read", "Events-topic records read", view.records)
        yield _counter(
            "ccmeter_worker_records_redelivered", "Records read again and dropped by offset", view.redelivered
        )
        outcomes = {key: m.outcomes.get(key, 0) for key in OUTCOMES}
        yield _labelled_counter("ccmeter_worker_events", "Events by outcome at their account", "outcome", outcomes)
        reasons = dict.fromkeys(REASONS, 0)
        reasons.update({k[len(DEAD) :]: v for k, v in m.outcomes.items() if k.startswith(DEAD)})
        yield _labelled_counter("ccmeter_worker_dead_letters", "Dead letters by reason", "reason", reasons)
        outputs = {kind: m.outputs.get(kind, 0) for kind in KINDS}
        yield _labelled_counter(
            "ccmeter_worker_outputs", "Output records sent and acknowledged, by kind", "kind", outputs
        )
        yield _counter("ccmeter_worker_state_entries_written", "State entries written to the changelog", m.entries)
        yield _counter("ccmeter_worker_state_written_bytes", "Bytes of state entries (keys and values)", m.entry_bytes)
        rebalances = {phase: m.rebalances.get(phase, 0) for phase in PHASES}
        yield _labelled_counter("ccmeter_worker_rebalances", "Group rebalance events by phase", "phase", rebalances)
        yield _counter("ccmeter_worker_fenced", "Times this worker found its partitions taken away", view.fenced)
        yield _counter("ccmeter_worker_changelog_restored_records", "Changelog records restored", view.restored)
        yield _gauge("ccmeter_worker_partitions_recovering", "Assigned partitions still restoring", view.recovering)
        yield _gauge("ccmeter_worker_partitions_owned", "Events partitions owned and recovered", len(view.partitions))
        yield _gauge("ccmeter_worker_ready", "1 when settled, not fenced and recovered", int(view.ready))
        live = {answer: m.live.get(answer, 0) for answer in ANSWERS}
        yield _labelled_counter("ccmeter_worker_live_queries", "Live queries by answer", "answer", live)
        lag = GaugeMetricFamily(
            "ccmeter_worker_consumer_lag_records", "End offset minus next offset to read", labels=["partition"]
        )
        delay = GaugeMetricFamily(
            "ccmeter_worker_horizon_delay_seconds",
            "Wall clock minus the partition's horizon floor (W_p - account_idle_lateness)",
            labels=["partition"],
        )
        floor = GaugeMetricFamily(
            "ccmeter_worker_horizon_timestamp_seconds",
            "The partition's horizon floor (event time)",
            labels=["partition"],
        )
        now = m.clock()
        for part in view.partitions:
            label = [str(part.partition)]
            if part.lag is not None:
                lag.add_metric(label, part.lag)
            if part.idle_floor_ms is not None:
                delay.add_metric(label, now - part.idle_floor_ms / 1000)
                floor.add_metric(label, part.idle_floor_ms / 1000)
        yield from (lag, delay, floor)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _labelled_counter(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def worker_view(worker: Worker) -> WorkerView:
    """The worker's state for a scrape (no request to the broker: ends come from the last fetch responses)."""
    from processor.core.fold import PartitionClock
    from processor.worker.state import clock_key, decode_clock

    settings = worker.config.settings
    progress = worker.feed.progress()
    parts = []
    for partition in sorted(worker.assigned()):
        raw = worker.store.get(clock_key(partition))
        watermark = decode_clock(raw).watermark if raw is not None else None
        floor = PartitionClock(settings, watermark).idle_floor if watermark is not None else None
        known = progress.get(partition)
        lag = max(0, known[1] - known[0]) if known is not None else None
        parts.append(PartitionView(partition, lag, floor))
    stats = worker.processor.stats
    return WorkerView(
        partitions=tuple(parts),
        ready=worker.ready(),
        recovering=len(worker.faust.assigned() - worker.store.owned()),
        restored=worker.store.restored,
        records=stats.records,
        redelivered=stats.redelivered,
        fenced=worker.fenced,
    )


def install(app: Any, worker: Worker) -> None:
    """Serve GET /metrics on the worker's web server, count rebalances, read the worker at scrape time."""
    import faust

    metrics: WorkerMetrics = worker.metrics
    metrics.view = lambda: worker_view(worker)
    app.on_partitions_assigned.connect(lambda *args, **kwargs: metrics.rebalance("assigned"))
    app.on_partitions_revoked.connect(lambda *args, **kwargs: metrics.rebalance("revoked"))

    @app.page("/metrics")
    class Metrics(faust.web.View):
        """Prometheus metrics of this worker (text format)."""

        async def get(self, request: faust.web.Request) -> faust.web.Response:
            refused = worker.refusal(self, request)  # an operator token (docs/security.md)
            if refused is not None:
                return refused
            return self.bytes(metrics.render(), headers={"Content-Type": CONTENT_TYPE})
