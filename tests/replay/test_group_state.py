"""`replay.kafka.group_state` on a new cluster: the broker has no group coordinator until `__consumer_offsets`
exists, and says so; the question is repeated within the patience, then the error stands."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError

from replay import kafka


def test_a_missing_coordinator_is_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[object] = [GroupCoordinatorNotAvailableError(), GroupCoordinatorNotAvailableError()]

    async def once(client: object, group: str, topic: str, partitions: object) -> kafka.GroupState:
        if answers:
            raise answers.pop(0)  # type: ignore[misc]
        return kafka.GroupState(group, "Empty")

    monkeypatch.setattr(kafka, "_group_state", once)
    state = asyncio.run(kafka.group_state(object(), "g", "t", patience_s=5.0))  # type: ignore[arg-type]
    assert (state.group, state.state, answers) == ("g", "Empty", [])


def test_the_error_stands_after_the_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never(client: object, group: str, topic: str, partitions: object) -> kafka.GroupState:
        raise GroupCoordinatorNotAvailableError()

    monkeypatch.setattr(kafka, "_group_state", never)
    with pytest.raises(GroupCoordinatorNotAvailableError):
        asyncio.run(kafka.group_state(object(), "g", "t", patience_s=0.6))  # type: ignore[arg-type]
