"""The run's phase clock: totals and counts per phase, the run's start on the wall clock."""

from __future__ import annotations

import time

import pytest

from fl_poison.core.timings import PhaseClock


def test_added_durations_sum_per_phase_with_their_counts():
    clock = PhaseClock(started_at=1000.0)
    clock.add("train", 0.25)
    clock.add("train", 0.5)
    clock.add("evaluate", 0.125)
    assert clock.seconds("train") == 0.75 and clock.seconds("aggregate") == 0.0
    phases = clock.as_dict()["phases"]
    assert phases == {"train": {"seconds": 0.75, "count": 2}, "evaluate": {"seconds": 0.125, "count": 1}}
    assert clock.as_dict()["started_at"] == 1000.0


def test_a_phase_that_raises_is_still_timed():
    clock = PhaseClock()
    with pytest.raises(KeyError), clock.phase("setup"):
        time.sleep(0.01)
        raise KeyError("x")
    assert clock.seconds("setup") >= 0.01


def test_elapsed_counts_from_the_given_start():
    clock = PhaseClock(started_at=time.time() - 5.0)
    assert 5.0 <= clock.elapsed() < 6.0


@pytest.mark.parametrize("seconds", [-1.0, float("nan")])
def test_a_negative_or_nan_duration_is_refused(seconds):
    with pytest.raises(ValueError, match="phase 'x'"):
        PhaseClock().add("x", seconds)
