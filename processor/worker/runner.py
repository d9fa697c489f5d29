"""All partitions of one worker, over a key-value state store (processor/worker/store.py, or a dict in tests)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from processor.core.alerts import DEFAULT_SHARE
from processor.core.fold import LiveView
from processor.core.model import Settings
from processor.worker.accounts import load_account
from processor.worker.partition import BatchResult, PartitionState, Raw, scan_entries
from processor.worker.state import ClockEntry, account_key, clock_key, decode_clock
from schemas.events import MAX_RECORD_BYTES

log = logging.getLogger("ccmeter.worker")


class StateStore(Protocol):
    """Read access to the worker's state entries (see processor/worker/state.py)."""

    def get(self, key: bytes) -> bytes | None: ...

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...


@dataclass
class Stats:
    """Counters since the worker started."""

    batches: int = 0
    records: int = 0
    applied: int = 0
    redelivered: int = 0
    usage_changes: int = 0
    windows: int = 0
    alerts: int = 0
    rebuilds: int = 0
    gaps: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return {
            "batches": self.batches,
            "records": self.records,
            "applied": self.applied,
            "redelivered": self.redelivered,
            "usage_changes": self.usage_changes,
            "windows": self.windows,
            "alerts": self.alerts,
            "rebuilds": self.rebuilds,
            "gaps": self.gaps,
            "dead_letters": dict(self.dead_letters),
        }


class StreamProcessor:
    """Partition states of this worker, rebuilt from the store after every rebalance (`reset`)."""

    def __init__(
        self,
        topic: str,
        settings: Settings,
        store: StateStore,
        *,
        share: Fraction = DEFAULT_SHARE,
        cache_limit: int = 100_000,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self.topic = topic
        self.max_record_bytes = max_record_bytes
        self.settings = settings
        self.store = store
        self.share = share
        self.cache_limit = cache_limit
        self.stats = Stats()
        self._partitions: dict[int, PartitionState] | None = None
        self._clocks: dict[int, ClockEntry] = {}
        self._wakes: dict[int, dict[str, int]] = {}

    def reset(self) -> None:
        """Forget every in-memory partition state (the store is the truth); the next access rebuilds them."""
        self._partitions = None

    def _states(self) -> dict[int, PartitionState]:
        if self._partitions is None:
            clocks, wakes = scan_entries(self.store.items())
            log.info(
                "state rebuilt: clocks %s, %d accounts with pending work",
                {p: (c.watermark, c.applied) for p, c in sorted(clocks.items())},
                sum(map(len, wakes.values())),
            )
            self._partitions = {}
            self._clocks, self._wakes = clocks, wakes
            self.stats.rebuilds += 1
        return self._partitions

    def partition(self, partition: int) -> PartitionState:
        """The state of `partition` (built from its stored clock and wake times on first use)."""
        states = self._states()
        state = states.get(partition)
        if state is None:
            state = states[partition] = PartitionState(
                partition,
                self.topic,
                self.settings,
                self.store.get,
                share=self.share,
                clock=self._clocks.pop(partition, None),
                wakes=self._wakes.pop(partition, None),
                max_record_bytes=self.max_record_bytes,
            )
        return state

    def process(self, partition: int, batch: Sequence[Raw], accept_gaps: bool = False) -> BatchResult:
        """Process one partition's batch and count it."""
        result = self.partition(partition).process(batch, accept_gaps)
        stats = self.stats
        stats.batches += 1
        stats.records += len(batch)
        stats.applied += result.applied
        stats.redelivered += result.redelivered
        stats.gaps += result.gaps
        stats.usage_changes += len(result.output.usage_changes)
        stats.windows += len(result.output.windows)
        stats.alerts += len(result.alerts)
        for letter in result.dead_letters:
            stats.dead_letters[letter["reason"]] += 1
        return result

    def trim(self, partition: int, keep: Iterable[str] = ()) -> None:
        """Bound the partition's account cache (call after its state entries are written)."""
        self.partition(partition).trim(self.cache_limit, keep)

    def live_view(self, account_id: str) -> LiveView | None:
        """Live view of an account from memory, else from the store; None if unknown."""
        if self._partitions is not None:
            for state in self._partitions.values():
                fold = state.cached_fold(account_id)
                if fold is not None:
                    return fold.live_view(self.settings, state.clock.watermark)
        raw = self.store.get(account_key(account_id))
        if raw is None:
            return None
        loaded = load_account(raw, self.store.get)
        return loaded.fold.live_view(self.settings, self._watermark(loaded.partition))

    def _watermark(self, partition: int) -> int | None:
        """The partition's watermark: in memory, else stored (None before any event)."""
        state = (self._partitions or {}).get(partition)
        if state is not None:
            return state.clock.watermark
        raw = self.store.get(clock_key(partition))
        return decode_clock(raw).watermark if raw is not None else None

    def counts(self, partitions: Iterable[int]) -> dict[str, int]:
        """What these partitions saw since they began, kept with their state across restarts: events applied,
        orphans, duplicates, duplicate conflicts and dead letters by reason (`dead_letter:<reason>`)."""
        total: Counter[str] = Counter()
        for partition in partitions:
            total.update(self.partition(partition).counts)
        return dict(sorted(total.items()))
