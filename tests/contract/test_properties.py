"""Property contract: generated histories (tests/contract/strategies.py) give every implementation the oracle's
outputs (tests/contract/oracle.py): usage changes, peak windows, counted and presence intervals, plans,
`data_through`, too-late arrivals, copies, orphans (where counted) and reports.

One abstract test case, one subclass per implementation. The number of examples follows the Hypothesis profile
(tests/conftest.py: fast by default, `CCMETER_HYPOTHESIS=long` for many more), divided by the implementation's
`share` (the DuckDB engine costs about 0.3 s a run, the fold and the driver a few ms).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.contract.implementations import (
    Driver,
    Engine,
    Fold,
    History,
    Implementation,
    Outputs,
    Reading,
    differences,
)
from tests.contract.oracle import Oracle
from tests.contract.strategies import histories

ORACLE = Oracle()


def contract_property(**strategies: st.SearchStrategy[Any]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Mark a method of a contract class as a property over `strategies`; each concrete subclass gets its own
    Hypothesis test of it, with its own number of examples."""

    def mark(check: Callable[..., None]) -> Callable[..., None]:
        check.contract_strategies = strategies  # type: ignore[attr-defined]
        return check

    return mark


def _own(cls: type, check: Callable[..., None]) -> Callable[..., None]:
    """A copy of `check` named after `cls`: each subclass's test has its own examples in Hypothesis' database."""

    @functools.wraps(check)
    def test(*args: Any, **kwargs: Any) -> None:
        check(*args, **kwargs)

    test.__qualname__ = f"{cls.__qualname__}.{check.__name__}"
    return test


def assert_agrees(implementation: Implementation, history: History, reading: Reading, expected: Outputs) -> None:
    """The implementation's outputs of the history equal `expected` on everything it provides."""
    got = implementation.run(history, reading)
    problems = list(differences(got, expected, implementation))
    assert not problems, f"{implementation}, {reading} reading, differs from the reference:\n" + "\n".join(problems)


class PropertyContract:
    """The properties every implementation satisfies (abstract: subclasses set `implementation`)."""

    implementation: ClassVar[Implementation]
    share: ClassVar[int] = 1  # this implementation runs (profile's max_examples) / share examples

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "implementation" not in cls.__dict__:
            return
        examples = max(5, settings().max_examples // cls.share)
        checks = {
            name: check
            for base in reversed(cls.__mro__[1:])
            for name, check in vars(base).items()
            if hasattr(check, "contract_strategies") and not hasattr(check, "hypothesis")
        }
        for name, check in checks.items():
            setattr(cls, name, settings(max_examples=examples)(given(**check.contract_strategies)(_own(cls, check))))

    @contract_property(history=histories())
    def test_the_stream_reading_matches_the_oracle(self, history: History) -> None:
        assert_agrees(self.implementation, history, "stream", ORACLE.run(history, "stream"))

    @contract_property(history=histories(too_late=False), data=st.data())
    def test_arrival_order_within_the_lateness_changes_nothing(self, history: History, data: st.DataObject) -> None:
        """SPEC 2: on a stream, results equal those of the same events sorted by occurred_at (exact copies only)."""
        first: dict[tuple[str, str], dict] = {}
        for event in history.events:
            first.setdefault((event["account_id"], event["event_id"]), event)
        consistent = tuple(e for e in history.events if first[(e["account_id"], e["event_id"])] == e)
        shuffled = History(consistent, history.batch_size)
        in_order = sorted(consistent, key=lambda e: e["occurred_at"])  # one format_ms text: text order is time order
        ordered = History(tuple(in_order), data.draw(st.sampled_from((1, 50))))
        expected = self.implementation.run(ordered, "stream")
        assert expected.too_late == []
        assert_agrees(self.implementation, shuffled, "stream", expected)


class FileReadingProperties:
    """Properties of the implementations that also read a history as a file (the restated view)."""

    @contract_property(history=histories())
    def test_the_file_reading_matches_the_oracle(self, history: History) -> None:
        implementation: Implementation = self.implementation  # type: ignore[attr-defined]
        expected = ORACLE.run(history, "file")
        assert expected.too_late == []
        assert_agrees(implementation, history, "file", expected)


class TestFold(FileReadingProperties, PropertyContract):
    implementation = Fold()


class TestDriver(PropertyContract):
    implementation = Driver()


class TestEngine(FileReadingProperties, PropertyContract):
    implementation = Engine()
    share = 8  # 0.3 s a run: (max_examples / 8) examples


# -- the comparison can fail ------------------------------------------------------------------------------------------


class LateByOneMs(Fold):
    """A wrong implementation: the fold, with every usage change reported a millisecond late."""

    name = "fold, changes 1 ms late"

    def run(self, history: History, reading: Reading) -> Outputs:
        outputs = super().run(history, reading)
        outputs.changes = [type(c)(c.account_id, c.at_ms + 1, c.usage, c.licenses) for c in outputs.changes]
        return outputs


def test_a_wrong_implementation_is_caught() -> None:
    history = History(({"event_id": "e1", "type": "api.request", "account_id": "a", "user_id": "u",
                        "occurred_at": "2026-11-02T00:00:00Z"},))  # fmt: skip
    assert_agrees(Fold(), history, "stream", ORACLE.run(history, "stream"))
    with pytest.raises(AssertionError, match="changes: fold, changes 1 ms late gave"):
        assert_agrees(LateByOneMs(), history, "stream", ORACLE.run(history, "stream"))
