"""The worker's state store without a broker: local cache checkpoints, fault specs, error lines, the Faust check."""

from __future__ import annotations

from pathlib import Path

import pytest

from processor import faust_adapter
from processor.worker.errors import ChangelogWriteError, FencedError
from processor.worker.faults import Faults, parse_faults
from processor.worker.store import ChangelogStore, LocalCache, PartitionData, changelog_topic


def test_the_changelog_topic_keeps_the_name_replay_uses():
    assert changelog_topic("ccmeter-worker-v2") == "ccmeter-worker-v2-state-changelog"


def test_a_checkpoint_is_trusted_once_then_gone(tmp_path: Path):
    pytest.importorskip("rocksdict", reason="a dev dependency")
    cache = LocalCache(tmp_path / "state")
    db, entries = cache.open(0, wipe=True)
    assert entries == {}
    LocalCache.write(db, {b"acct": b"v1", b"gone": b"x"})
    LocalCache.write(db, {b"gone": None})
    cache.close(0, db, position=42)
    assert cache.take_checkpoint(0) == 42
    assert cache.take_checkpoint(0) is None  # taken: a crash from now on means the file is not trusted
    db, entries = cache.open(0, wipe=False)
    assert entries == {b"acct": b"v1"}
    cache.close(0, db, position=None)  # an unclean close writes no checkpoint
    assert cache.take_checkpoint(0) is None
    db, entries = cache.open(0, wipe=True)
    assert entries == {}
    cache.close(0, db, position=None)


def test_a_damaged_checkpoint_is_not_trusted(tmp_path: Path):
    cache = LocalCache(tmp_path)
    (tmp_path / "3.checkpoint").write_text("{not json")
    assert cache.take_checkpoint(3) is None
    assert not (tmp_path / "3.checkpoint").exists()


def test_the_store_answers_for_owned_partitions_only():
    store = ChangelogStore("127.0.0.1:1", "t")
    store._owned[0] = PartitionData({b"a": b"1"}, 5)
    store.apply(0, {b"b": b"2"}, 9)
    assert store.get(b"b") == b"2" and store.position(0) == 9
    store.release(0)  # memory:// keeps it dormant, to catch up from offset 9 if it comes back
    assert store.get(b"a") is None and list(store.items()) == [] and store.owned() == set()
    assert store._dormant[0].position == 9
    store.forget(0)
    assert 0 not in store._dormant


def test_fault_specs_are_checked():
    assert parse_faults("after_outputs:3, during_recovery:1") == {"after_outputs": 3, "during_recovery": 1}
    assert parse_faults("") == {}
    for bad in ("after_outputs", "after_outputs:0", "nowhere:1", "before_commit:x"):
        with pytest.raises(ValueError, match="CCMETER_FAULT"):
            parse_faults(bad)
    faults = Faults("before_commit:2")
    faults.hit("before_commit")  # the first arrival does not exit
    faults.hit("after_outputs")
    assert faults.reached["before_commit"] == 1


def test_checkpoint_errors_are_one_line_saying_what_to_expect():
    line = ChangelogWriteError("KafkaTimeoutError()", {1, 0}).line()
    assert line.startswith("changelog write failed (partitions [0, 1]): KafkaTimeoutError()")
    assert "restart resumes from the changelog" in line and "\n" not in line
    assert "stopped writing outputs and state" in FencedError("refused", {2}).line()


def test_the_installed_faust_has_what_the_worker_uses(monkeypatch: pytest.MonkeyPatch):
    faust_adapter.self_check()
    monkeypatch.setattr(faust_adapter, "_REQUIRED", (("faust.app.router:Router", "no_such_method"),))
    with pytest.raises(faust_adapter.FaustIncompatible, match="Router.no_such_method"):
        faust_adapter.self_check()


def test_an_entry_of_an_unknown_format_is_a_state_format_error() -> None:
    """One line and exit 1 at the command line; still a ValueError for readers that skip unreadable entries."""
    import msgpack

    from processor.errors import EXIT_FAILURE, StateFormatError
    from processor.worker.state import decode_clock, decode_part

    for decode in (decode_clock, decode_part):
        with pytest.raises(StateFormatError, match="unsupported") as caught:
            decode(msgpack.packb([999, 0, 0, 0, 0]))
        assert isinstance(caught.value, ValueError) and caught.value.exit_code == EXIT_FAILURE
