"""Scale-out (issue 13): two `ccmeter worker` processes in one consumer group on a 4-partition events topic against
one worker on a 1-partition topic, the same simulated dataset, in the same run; the group's outputs checked against
the batch engine's.

Both runs follow the same protocol (bench/partitioned.py `run_group`): the workers start on the empty topics and
settle (every partition owned), then the driver pre-loads the events topic while they consume, and the clock runs
from their first processed batch to the last record applied (the pre-load overlaps its first part). Both are on the
same machine as Kafka and the driver: on 2 cores two workers can at best double the rate, and only if the broker and
the driver need no CPU.
"""

from __future__ import annotations

from typing import Any

from bench.common import OUT, Row, log
from bench.data import SimDataset
from bench.partitioned import GroupRun, equal_row, group_details, prepare, run_group, spread
from bench.worker_bench import check_outputs

PARTITIONS = 4
WORKERS = 2
SCALE_TARGET = 1.5  # no figure in the issue; 2 workers on a 2-core machine are bounded by 2x


def bench(bootstrap: str, dataset: SimDataset, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    """One worker on one partition, then two workers on four partitions (twice in a full run: the best of each
    counts, the least disturbed by the machine's other jobs); rows and details."""
    workdir = OUT / "work" / "scaleout"
    singles: list[GroupRun] = []
    groups: list[GroupRun] = []
    for _ in range(1 if quick else 2):
        singles.append(run_group(prepare(bootstrap, dataset, 1, "bench-scale1"), workdir, 1, "scaleout-single")[0])
        run, loaded = run_group(prepare(bootstrap, dataset, PARTITIONS, "bench-scale"), workdir, WORKERS, "scaleout")
        groups.append(run)
    single = max(singles, key=lambda r: r.rate)
    group = max(groups, key=lambda r: r.rate)
    pairs = ", ".join(f"{g.rate / s.rate:.2f}x" for s, g in zip(singles, groups, strict=True))
    check = check_outputs(loaded)  # the last group run's topics
    log(f"scale-out output check: {check}")
    ratio = group.rate / single.rate
    cpu_ratio = group.cpu_rate / single.cpu_rate
    per_partition = spread(loaded, PARTITIONS)
    owned = "; ".join(f"worker {i}: partitions {p}" for i, p in enumerate(group.partitions))
    size = f"{loaded.records:,} records, {dataset.accounts} accounts"
    rss = ", ".join(f"{r:.0f}" for r in group.rss_mib)
    busiest = max(sum(per_partition[p] for p in parts) for parts in group.partitions) / loaded.records
    bound = min(WORKERS, 1 / busiest)  # the busier worker's share bounds the speed-up of an even split
    rows = [
        Row("scaleout", "1 worker, 1 partition", single.rate, "events/s",
            note=f"{single.cpu_rate:,.0f} events per CPU-s; {single.records:,} events in {single.seconds:.1f} s "
            f"(pre-load {single.preload_seconds:.1f} s of it); RSS {single.rss_mib[0]:.0f} MiB; {size}; best "
            f"of {len(singles)}"),
        Row("scaleout", f"{WORKERS} workers, {PARTITIONS} partitions (one group)", group.rate, "events/s",
            note=f"{group.cpu_rate:,.0f} events per CPU-s of both; {group.records:,} events in {group.seconds:.1f} s "
            f"(pre-load {group.preload_seconds:.1f} s of it); {owned}; records per partition "
            f"{list(per_partition.values())}; RSS {rss} MiB; best of {len(groups)}"),
        Row("scaleout", f"{WORKERS} workers on {PARTITIONS} partitions / 1 worker on 1", ratio, "x",
            f">= {SCALE_TARGET:g}x", ratio >= SCALE_TARGET,
            f"best / best; run by run {pairs}; per CPU-s {cpu_ratio:.2f}x; a 2-core machine (Kafka and the driver "
            f"included) bounds it at 2x, the busier worker's share of the records ({busiest:.0%}) at {bound:.2f}x"),
        equal_row("scaleout", check, f"{WORKERS} workers on {PARTITIONS} partitions"),
    ]  # fmt: skip
    details = {
        "dataset": dataset.name, "records": loaded.records, "records_per_partition": per_partition,
        "produce_seconds": loaded.produce_seconds, "singles": [group_details(r) for r in singles],
        "groups": [group_details(r) for r in groups],
        "ratio": ratio, "cpu_ratio": cpu_ratio, "busiest_share": busiest, "check": check,
    }  # fmt: skip
    return rows, details
