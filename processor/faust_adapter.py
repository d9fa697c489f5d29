"""Everything the worker takes from Faust beyond its documented API, in one place, checked at startup.

Faust (faust-streaming) runs the worker's lifecycle, its consumer-group membership and its web server. The worker
reads events, sends outputs and keeps its state itself (processor/app.py, processor/worker/store.py), and needs
from Faust only: the partitions it was assigned, whether a rebalance is in progress, the other members' web URLs,
pausing Faust's own fetching of the events topic, and committing the group's offsets through Faust's member
consumer (the only client that may commit for the group). `self_check` fails at startup, with one clear message,
when an upgrade of faust-streaming removed one of these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.types import TP

# The range pyproject.toml pins (requirements/dev.lock holds the exact version the tests ran with).
TESTED_WITH = "faust-streaming >=0.15.3,<0.16"


class FaustIncompatible(RuntimeError):
    """The installed faust-streaming lacks something the worker relies on."""


# (dotted path from the faust package, attribute) of every internal used below.
_REQUIRED: tuple[tuple[str, str], ...] = (
    ("faust.transport.consumer:Consumer", "_commit_offsets"),  # commit through the group member, returns bool
    ("faust.transport.consumer:Consumer", "pause_partitions"),
    ("faust.transport.consumer:Consumer", "topic_partitions"),
    ("faust.app.base:App", "rebalancing"),
    ("faust.app.base:App", "in_recovery"),
    ("faust.app.router:Router", "external_topics_metadata"),
)


def self_check() -> None:
    """Raise FaustIncompatible naming what is missing (call before the app starts)."""
    import importlib

    import faust

    missing = []
    for where, attribute in _REQUIRED:
        module_name, class_name = where.split(":")
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            missing.append(where)
            continue
        if not hasattr(owner, attribute):
            missing.append(f"{class_name}.{attribute}")
    if missing:
        version = getattr(faust, "__version__", "?")
        raise FaustIncompatible(
            f"faust-streaming {version} lacks {', '.join(missing)}, which the ccmeter worker relies on "
            f"(tested with {TESTED_WITH}; see processor/faust_adapter.py)"
        )


class FaustAdapter:
    """The worker's view of one Faust app."""

    def __init__(self, app: Any, topic: str) -> None:
        self.app = app
        self.topic = topic

    def assigned(self) -> set[int]:
        """Partitions of the topic the group assigned to this member now."""
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == self.topic}

    def settled(self) -> bool:
        """Whether no rebalance is in progress."""
        app = self.app
        return not (app.rebalancing or app.in_recovery)

    def pause(self, partitions: list[int]) -> None:
        """Stop Faust's own consumer from fetching these partitions (the worker reads them itself)."""
        self.app.consumer.pause_partitions({TP(self.topic, p) for p in partitions})

    async def commit(self, offsets: Mapping[int, int]) -> bool:
        """Commit `offsets` (partition -> next offset) for the group through Faust's member consumer. False when the
        group refused them: the partitions are no longer assigned, or the group rebalanced (this member's generation
        is gone); Faust logs the broker's error."""
        tps = {TP(self.topic, p): offset for p, offset in offsets.items()}
        return bool(await self.app.consumer._commit_offsets(tps))

    def members(self) -> dict[str, dict[str, list[int]]]:
        """`{member web URL: {topic: [partitions]}}` of the last assignment (Faust's assignor metadata)."""
        found = self.app.router.external_topics_metadata()
        return {url: {self.topic: list(topics.get(self.topic, ()))} for url, topics in found.items()}

    def partition_count(self) -> int | None:
        """The topic's partition count from the group's metadata (None if unknown yet)."""
        return self.app.consumer.topic_partitions(self.topic)


def aiokafka_producer(app: Any) -> Any:
    """The aiokafka producer under the Faust app's producer (started with the app). Only the benchmarks use it
    (bench/naive_agent.py), so it is not part of the worker's startup self-check."""
    return app.producer._ensure_producer()
