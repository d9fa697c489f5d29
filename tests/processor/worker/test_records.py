"""Output record encoding: the direct peak-window and horizon writers give exactly the bytes of the generic encoder."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.core.model import PeakWindow
from processor.worker import records as rec
from schemas.outputs import PeakWindowRecord


@settings(max_examples=300, deadline=None)
@given(
    account=st.text(min_size=1, max_size=12),
    kind=st.sampled_from(["1m", "15m", "1h", "1d"]),
    start=st.integers(min_value=0, max_value=4_000_000_000_000),
    length=st.integers(min_value=1, max_value=86_400_000),
    usage=st.integers(min_value=0, max_value=100_000),
    over=st.integers(min_value=0, max_value=86_400_000),
    license_ms=st.integers(min_value=0, max_value=10**12),
)
def test_peak_window_json_is_dumps_of_the_record(
    account: str, kind: str, start: int, length: int, usage: int, over: int, license_ms: int
) -> None:
    window = PeakWindow(account, kind, start, start + length, usage, start + length // 2, over, license_ms)  # type: ignore[arg-type]
    encoded = rec.peak_window_json(window)
    assert encoded == rec.dumps(rec.peak_window(window))
    PeakWindowRecord.model_validate(json.loads(encoded))


@settings(max_examples=200, deadline=None)
@given(
    account=st.text(min_size=1, max_size=12),
    partition=st.integers(min_value=0, max_value=10_000),
    through=st.integers(min_value=0, max_value=4_000_000_000_000),
    watermark=st.none() | st.integers(min_value=0, max_value=4_000_000_000_000),
)
def test_horizon_json_is_dumps_of_the_record(account: str, partition: int, through: int, watermark: int | None) -> None:
    encoded = rec.horizon_json(account, partition, through, watermark)
    assert encoded == rec.dumps(rec.horizon(account, partition, through, watermark))
    assert json.loads(encoded)["watermark"] == (None if watermark is None else rec.format_ms(watermark))
