"""The partition driver's wake heap: which idle accounts are due, and how many entries it keeps."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.core.model import NEVER, Settings
from processor.core.partition import PartitionDriver

SETTINGS = Settings()
IDLE = SETTINGS.account_idle_lateness_ms
ACCOUNTS = ("a", "b", "c", "d")


def floor_at(driver: PartitionDriver, floor: int) -> None:
    """Move the partition watermark so that the idle floor is `floor`."""
    driver.clock.observe(floor + IDLE)


def test_an_account_rescheduled_later_every_batch_keeps_one_entry_and_is_due_at_its_last_wake() -> None:
    driver = PartitionDriver(SETTINGS)
    for batch in range(1_000):
        floor_at(driver, batch)
        assert driver.due() == []
        driver.schedule("a", 10 * batch + 100)  # an active account: its wake moves on with every batch
    assert driver.queued == 1
    floor_at(driver, 10 * 999 + 100)
    assert driver.due() == []  # the floor must pass the wake: equal is not enough
    floor_at(driver, 10 * 999 + 101)
    assert driver.due() == ["a"]
    assert driver.wakes == {} and driver.queued == 0


def test_an_account_rescheduled_earlier_is_due_at_the_earlier_wake() -> None:
    driver = PartitionDriver(SETTINGS, wakes={"a": 500})
    driver.schedule("a", 200)
    floor_at(driver, 201)
    assert driver.due() == ["a"]
    floor_at(driver, 501)
    assert driver.due() == []  # the superseded entry at 500 wakes nobody


def test_an_account_gone_idle_is_never_due_and_its_entry_goes() -> None:
    driver = PartitionDriver(SETTINGS, wakes={"a": 100})
    driver.schedule("a", NEVER)
    floor_at(driver, 1_000)
    assert driver.due() == [] and driver.queued == 0


operations = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), st.sampled_from(ACCOUNTS), st.integers(0, 60) | st.just(NEVER)),
        st.tuples(st.just("floor"), st.integers(0, 12)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(initial=st.dictionaries(st.sampled_from(ACCOUNTS), st.integers(0, 60)), steps=operations)
def test_due_accounts_are_those_whose_wake_the_floor_passed_in_wake_order(
    initial: dict[str, int], steps: list[tuple]
) -> None:
    driver = PartitionDriver(SETTINGS, wakes=initial)
    model = dict(initial)  # the reference: a scan of every account's wake
    floor = 0
    for step in steps:
        if step[0] == "schedule":
            _, account, wake = step
            driver.schedule(account, wake)
            if wake >= NEVER:
                model.pop(account, None)
            else:
                model[account] = wake
        else:
            floor += step[1]
            floor_at(driver, floor)
            expected = [account for wake, account in sorted((w, a) for a, w in model.items() if w < floor)]
            for account in expected:
                del model[account]
            assert driver.due() == expected
            assert driver.wakes == model
            assert driver.queued <= 2 * len(ACCOUNTS)
