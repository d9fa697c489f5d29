"""What the worker's and the sink's metrics share: the registry with `ccmeter_build_info`, the text rendering, and
the names of the series a registry exposes (checked against the dashboard and the alert rules)."""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from importlib import metadata

from prometheus_client import CollectorRegistry, Info, generate_latest
from prometheus_client.metrics_core import Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # the Prometheus text format of `render`
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "info": ("_info",),
}


def version() -> str:
    """The installed ccmeter version ("unknown" when run from a source tree that is not installed)."""
    try:
        return metadata.version("ccmeter")
    except metadata.PackageNotFoundError:
        return "unknown"


def new_registry(component: str) -> CollectorRegistry:
    """A registry of this process with `ccmeter_build_info{version, python, component} 1`."""
    registry = CollectorRegistry(auto_describe=True)
    info = Info("ccmeter_build", "Version of ccmeter and Python of this process", registry=registry)
    info.info({"version": version(), "python": platform.python_version(), "component": component})
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry's series in the Prometheus text format (`CONTENT_TYPE`)."""
    return generate_latest(registry)


def family_names(metric: Metric) -> Iterator[str]:
    """Every sample name a metric family can expose (e.g. `_bucket`, `_sum`, `_count` of a histogram)."""
    suffixes = SUFFIXES.get(metric.type)
    if suffixes is None:
        yield metric.name
        return
    for suffix in suffixes:
        yield metric.name + suffix


def series_names(families: Iterable[Metric]) -> set[str]:
    """The sample names of these families (e.g. `registry.collect()`), whether or not they have samples now."""
    return {name for metric in families for name in family_names(metric)}
