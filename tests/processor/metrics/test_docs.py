"""docs/grafana-dashboard.json and the "Metrics and alerts" section of docs/operators.md name only series that
the worker and the sink expose, and the section lists every one of them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from processor.metrics.common import series_names
from processor.metrics.sink import sink_registry
from processor.metrics.worker import WorkerMetrics
from processor.snapshots.sink import Sink, SinkConfig, SinkWriter

DOCS = Path(__file__).resolve().parents[3] / "docs"
NAME = re.compile(r"\bccmeter_[a-z0-9_]+")


def exposed(tmp_path: Path) -> set[str]:
    sink = Sink(SinkConfig(broker="127.0.0.1:1", prefix="t.", data_dir=tmp_path), SinkWriter(tmp_path, "t."))
    return series_names(WorkerMetrics().registry.collect()) | series_names(sink_registry(sink).collect())


def section() -> str:
    text = (DOCS / "operators.md").read_text()
    start = text.index("## Metrics and alerts")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_dashboard_parses_and_queries_only_exposed_series(tmp_path: Path):
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("lag", "horizon", "outcome", "dead letter", "latency", "rebalance"):
        assert topic in titles, titles
    names = exposed(tmp_path)
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(NAME.findall(target["expr"]))
            assert used and used <= names, (panel["title"], used - names)


def test_alert_rules_use_exposed_series(tmp_path: Path):
    blocks = re.findall(r"```yaml\n(.*?)```", section(), re.S)
    rules_docs = [yaml.safe_load(block) for block in blocks]
    rules = [rule for doc in rules_docs if "groups" in doc for group in doc["groups"] for rule in group["rules"]]
    assert {"CcmeterLagGrowing", "CcmeterHorizonStalled", "CcmeterDeadLetterRate"} <= {r["alert"] for r in rules}
    names = exposed(tmp_path)
    for rule in rules:
        used = set(NAME.findall(rule["expr"]))
        assert used and used <= names, (rule["alert"], used - names)


def test_every_series_is_documented(tmp_path: Path):
    text = section()
    worker = WorkerMetrics().registry.collect()
    sink = sink_registry(Sink(SinkConfig("127.0.0.1:1", "t.", tmp_path), SinkWriter(tmp_path, "t."))).collect()
    for family in [*worker, *sink]:
        name = family.name + ("_total" if family.type == "counter" else "_info" if family.type == "info" else "")
        short = re.sub(r"^ccmeter_(worker|sink)_", "", name)
        assert f"`{short}" in text or f"`{name}" in text, f"{name} is not in the Metrics and alerts section"
