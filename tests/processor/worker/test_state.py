"""The state entries' encoder (processor/worker/state.py `pack`): the bytes msgpack wrote before, per thread."""

from __future__ import annotations

import threading
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor.core.model import Settings
from processor.worker.runner import StreamProcessor
from processor.worker.state import DictStore, pack
from tests.contract.implementations import History
from tests.contract.strategies import histories
from tests.processor.worker.wires import raws

_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_SCALARS = st.none() | st.booleans() | _INTS | st.floats() | st.text() | st.binary()
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.lists(inner, max_size=6).map(tuple)
        | st.dictionaries(st.text(max_size=8) | _INTS, inner, max_size=6)
    ),
    max_leaves=40,
)


def _packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_pack_writes_the_bytes_msgpack_wrote(value: Any) -> None:
    assert pack(value) == _packb(value)


def test_each_format_boundary_is_the_same() -> None:
    edges = [0, 127, 128, 255, 256, 2**16 - 1, 2**16, 2**32 - 1, 2**32, 2**64 - 1]
    edges += [-1, -32, -33, -128, -129, -(2**15), -(2**15) - 1, -(2**31), -(2**31) - 1, -(2**63)]
    sizes = [0, 15, 16, 31, 32, 255, 256, 2**16 - 1, 2**16]
    values: list[Any] = [*edges, *("x" * n for n in sizes), *(b"x" * n for n in sizes), *([0] * n for n in sizes)]
    values += [{str(i): i for i in range(n)} for n in (15, 16, 2**16)]
    for value in values:
        assert pack(value) == _packb(value), repr(value)[:60]


def test_a_short_value_after_a_long_one_is_exact() -> None:
    long, short = list(range(50_000)), [1, "a"]
    assert pack(long) == _packb(long)
    assert pack(short) == _packb(short)
    assert len(pack(short)) == len(_packb(short))


def test_threads_do_not_share_a_buffer() -> None:
    failures: list[int] = []
    start = threading.Barrier(4)

    def work(seed: int) -> None:
        value = [seed, "x" * (seed * 100), list(range(seed * 50))]
        expected = _packb(value)
        start.wait()
        for _ in range(2_000):
            if pack(value) != expected:
                failures.append(seed)
                return

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(1, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories())
def test_every_entry_of_a_worker_is_what_msgpack_wrote(history: History) -> None:
    """Account, part and clock entries written for a history (one batch per 16 records) are canonical msgpack: the
    bytes `msgpack.packb` gives for what they decode to, as entries written before the encoder changed."""
    processor = StreamProcessor("t.events", Settings(), DictStore())
    records = raws(history.events)
    written = 0
    for start in range(0, len(records), 16):
        result = processor.process(0, records[start : start + 16])
        for value in result.states.values():
            if value is not None:
                assert _packb(msgpack.unpackb(value, raw=False, use_list=False, strict_map_key=False)) == value
                written += 1
    assert written > 0 or not records
