"""The growth bench's run: an hourly sample of what the worker keeps (nothing is timed here)."""

from bench.growth_bench import run


def test_a_run_samples_every_hour_and_the_wake_heap_stays_within_the_accounts() -> None:
    result = run(accounts=20, users=100, hours=3, batch_size=40)
    samples = result["samples"]
    assert [s["hour"] for s in samples] == [1, 2, 3]
    assert result["events"] == 100 * (3 * 60 + 1)  # a sign-in and a session start, then a heartbeat a minute
    assert result["batches"] >= result["events"] // 40
    for sample in samples:
        assert 0 < sample["wake_heap"] <= 20  # one entry per account: it used to grow by one per batch
        assert sample["cached_accounts"] == 20
        assert sample["rss_mib"] > 0
    assert samples[-1]["store_entries"] == samples[-2]["store_entries"]  # steady traffic, steady state
