"""Shared pieces of the benchmarks: result rows, machine facts, load average, the output directory."""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Inputs, scratch and results; CCMETER_BENCH_OUT moves them (two runs at once must not share `work/`, which a run
# empties when it starts).
OUT = Path(os.environ.get("CCMETER_BENCH_OUT") or ROOT / "bench" / "out")


def load_average() -> float:
    """The 1-minute load average (the machine is shared: every row records it)."""
    return round(os.getloadavg()[0], 2)


@dataclass
class Row:
    """One line of the results table."""

    bench: str  # e.g. "worker"
    metric: str  # what was measured
    value: float | str | None
    unit: str = ""
    target: str = ""  # e.g. ">= 50,000"
    met: bool | None = None  # None: no target
    note: str = ""
    load: float = field(default_factory=load_average)  # 1-min load average when the row was made
    extra: dict[str, Any] = field(default_factory=dict)  # details for results.json

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def fmt_value(value: float | str | None) -> str:
    """Human form of a value: thousands separators, 3 significant decimals for small numbers."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def table(rows: Sequence[Row]) -> str:
    """The results as a Markdown table (readable in a terminal too)."""
    head = ["bench", "metric", "value", "unit", "target", "met", "load", "note"]
    body = [
        [
            row.bench,
            row.metric,
            fmt_value(row.value),
            row.unit,
            row.target,
            "-" if row.met is None else ("MET" if row.met else "MISSED"),
            f"{row.load:.2f}",
            row.note,
        ]
        for row in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(head, *body, strict=False)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.extend("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in body)
    return "\n".join(lines)


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), nearest-rank on sorted values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """Median (nan when empty)."""
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, Python and library versions, Kafka version (from the jar names)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    kafka = "unknown"
    lib = ROOT / "tools" / "kafka" / "lib"
    for jar in sorted(lib.glob("kafka_2.13-*.jar")) if lib.is_dir() else []:
        match = re.fullmatch(r"kafka_2\.13-(.+)\.jar", jar.name)
        if match:
            kafka = match.group(1)
    versions: dict[str, str] = {}
    from importlib.metadata import PackageNotFoundError, version

    for name in ("faust-streaming", "aiokafka", "duckdb", "pyarrow", "pydantic", "msgpack", "msgspec"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "missing"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory_gib,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "kafka": kafka,
        "libraries": versions,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def log(message: str) -> None:
    """Progress line on stderr (the table goes to stdout)."""
    print(f"[bench {load_average():.2f}] {message}", file=sys.stderr, flush=True)
