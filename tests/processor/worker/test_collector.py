"""The worker's collector thresholds."""

import gc

from processor.worker.collector import THRESHOLDS, tuned_collector


def test_tuned_collector_sets_the_worker_thresholds_and_restores_the_previous_ones() -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        with tuned_collector():
            assert gc.get_threshold() == THRESHOLDS
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_the_young_generation_is_collected_far_less_often_than_by_default() -> None:
    assert THRESHOLDS[0] >= 50 * 700
