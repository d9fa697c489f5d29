"""Typed failures of the worker's per-batch checkpoint (docs/running.md, "Checkpoint, fencing and failures").

Each error names the step that failed and says, in one line, what the operator should expect. None of them leaves
anything half-trusted behind: outputs may repeat (same ids), and state is only ever taken from the changelog.
"""

from __future__ import annotations


class CheckpointError(Exception):
    """A step of the checkpoint order failed; `expect` tells the operator what happens next."""

    step = "checkpoint"
    expect = "the worker stops; a restart resumes every partition from its changelog"

    def __init__(self, detail: str, partitions: set[int] | frozenset[int] = frozenset()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.partitions = frozenset(partitions)

    def line(self) -> str:
        """The one log line for this failure."""
        where = f" (partitions {sorted(self.partitions)})" if self.partitions else ""
        return f"{self.step} failed{where}: {self.detail}; {self.expect}"


class OutputDeliveryError(CheckpointError):
    """Step 1: the broker did not acknowledge every output record of a batch."""

    step = "output delivery"
    expect = (
        "no state was written for this batch; the worker stops and a restart sends its outputs again "
        "(same ids, consumers drop the copies)"
    )


class ChangelogWriteError(CheckpointError):
    """Step 2: the batch's state entries were not acknowledged (or its transaction not committed)."""

    step = "changelog write"
    expect = (
        "the local store was not touched; the worker stops and a restart resumes from the changelog "
        "(this batch's outputs are sent again with the same ids)"
    )


class FencedError(CheckpointError):
    """The worker lost these partitions (rebalance, refused commit, expired session, fenced transaction)."""

    step = "ownership"
    expect = (
        "this worker stopped writing outputs and state for them at once; their new owner resumes from the "
        "changelog, and this worker waits for its next assignment"
    )


class RecoveryError(CheckpointError):
    """Reading a partition's changelog into the store failed."""

    step = "changelog recovery"
    expect = "nothing was processed for these partitions; the worker stops and a restart recovers them again"
