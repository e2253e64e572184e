"""Group statistics over seeds: means, sample standard deviations, t intervals, paired differences.

Every expected value is worked out by hand; the t quantiles are written as literals (from a
t table) so that the tests do not use the function they check.
"""

from __future__ import annotations

import math

import pytest

from experiments.statistics import (
    Summary,
    finite,
    format_difference,
    format_interval,
    format_summary,
    interval_sign,
    last_rounds_mean,
    paired_difference,
    seedwise,
    summarize,
    t_quantile,
)

T_975_1 = 12.706205  # t quantile 0.975, 1 degree of freedom: the 95 % interval of 2 values
T_975_2 = 4.302653  # 0.975, 2 degrees of freedom: 3 values
T_95_4 = 2.131847  # 0.95, 4 degrees of freedom: a 90 % interval of 5 values


def test_t_quantiles_match_the_table():
    assert t_quantile(0.95, 1) == pytest.approx(T_975_1, abs=1e-6)
    assert t_quantile(0.95, 2) == pytest.approx(T_975_2, abs=1e-6)
    assert t_quantile(0.90, 4) == pytest.approx(T_95_4, abs=1e-6)


@pytest.mark.parametrize(("confidence", "dof"), [(0.0, 2), (1.0, 2), (1.5, 2), (0.95, 0)])
def test_t_quantile_refuses_bad_arguments(confidence, dof):
    with pytest.raises(ValueError):
        t_quantile(confidence, dof)


def test_one_two_three_mean_2_sd_1_and_the_t_interval():
    summary = summarize([1.0, 2.0, 3.0])
    assert summary.count == 3
    assert summary.mean == pytest.approx(2.0)
    assert summary.std == pytest.approx(1.0)  # sqrt(((1-2)^2 + 0 + (3-2)^2) / (3 - 1))
    half = T_975_2 * 1.0 / math.sqrt(3)  # 2.484138
    assert half == pytest.approx(2.484138, abs=1e-6)
    assert (summary.ci_low, summary.ci_high) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-6)
    assert summary.half_width == pytest.approx(half, abs=1e-6)
    assert (summary.minimum, summary.maximum) == (1.0, 3.0)
    assert summary.has_interval and summary.confidence == 0.95


def test_two_values_use_one_degree_of_freedom():
    summary = summarize([0.8, 0.95])
    # mean 0.875, sd = |0.95 - 0.8| / sqrt(2) = 0.106066, half width 12.706205 * 0.106066 / sqrt(2) = 0.952965
    assert summary.mean == pytest.approx(0.875)
    assert summary.std == pytest.approx(0.15 / math.sqrt(2))
    assert summary.half_width == pytest.approx(T_975_1 * 0.075, abs=1e-6)
    assert summary.ci_low == pytest.approx(0.875 - 0.952965, abs=1e-6)


def test_a_ninety_percent_interval_over_five_values():
    summary = summarize([2.0, 4.0, 4.0, 4.0, 6.0], confidence=0.90)
    # mean 4, sd sqrt((4 + 0 + 0 + 0 + 4) / 4) = sqrt(2), half width 2.131847 * sqrt(2) / sqrt(5)
    assert summary.std == pytest.approx(math.sqrt(2))
    assert summary.half_width == pytest.approx(T_95_4 * math.sqrt(2) / math.sqrt(5), abs=1e-6)


def test_one_value_has_no_standard_deviation_and_no_interval():
    summary = summarize([0.7])
    assert summary.count == 1 and summary.mean == 0.7
    assert math.isnan(summary.std) and math.isnan(summary.ci_low) and math.isnan(summary.ci_high)
    assert not summary.has_interval and math.isnan(summary.half_width)
    assert format_summary(summary) == "0.700 (1 seed, no CI)"


def test_values_that_are_not_finite_are_left_out():
    assert finite([1.0, math.nan, math.inf, 3.0]) == [1.0, 3.0]
    summary = summarize([1.0, math.nan, 3.0])
    assert summary.count == 2 and summary.mean == pytest.approx(2.0)
    empty = summarize([math.nan])
    assert empty.count == 0 and math.isnan(empty.mean) and format_summary(empty) == "–"


def test_format_summary_writes_mean_sd_and_interval():
    assert format_summary(summarize([1.0, 2.0, 3.0])) == "2.000 ± 1.000 [-0.484, 4.484]"


def test_paired_difference_by_seed_leaves_unshared_seeds_out():
    first = {1: 0.7, 2: 0.8, 3: 0.9}
    second = {1: 0.8, 2: 0.95, 4: 0.5}
    paired = paired_difference(first, second)
    # pairs: seed 1: 0.8 - 0.7 = 0.1, seed 2: 0.95 - 0.8 = 0.15 -> mean 0.125, sd 0.05 / sqrt(2)
    assert paired.pairs == 2 and paired.seeds == (1, 2)
    assert paired.first_only == (3,) and paired.second_only == (4,)
    assert paired.difference.mean == pytest.approx(0.125)
    assert paired.difference.std == pytest.approx(0.05 / math.sqrt(2))
    half = T_975_1 * (0.05 / math.sqrt(2)) / math.sqrt(2)  # 0.317655
    assert paired.difference.ci_low == pytest.approx(0.125 - half, abs=1e-6)
    assert paired.difference.ci_high == pytest.approx(0.125 + half, abs=1e-6)
    assert (paired.first_mean, paired.second_mean) == pytest.approx((0.75, 0.875))
    assert format_difference(paired) == "+0.125 [-0.193, +0.443] (2 pairs); unpaired seeds left out: 3, 4"


def test_pairing_by_seed_finds_a_difference_the_group_spreads_hide():
    # seeds move both groups alike: the groups' own intervals overlap, the per-seed differences do not scatter
    first = {1: 0.1, 2: 0.5, 3: 0.9}
    second = {1: 0.25, 2: 0.6, 3: 1.0}
    assert summarize(first.values()).ci_high > summarize(second.values()).ci_low
    paired = paired_difference(first, second)
    # differences 0.15, 0.1, 0.1: mean 0.116667, sd 0.028868, half width 4.302653 * 0.028868 / sqrt(3) = 0.071711
    assert paired.difference.mean == pytest.approx(0.35 / 3)
    assert paired.difference.half_width == pytest.approx(T_975_2 * (0.05 / math.sqrt(3)) / math.sqrt(3), abs=1e-6)
    assert interval_sign(paired.difference) == 1


def test_paired_difference_with_one_or_no_shared_seed():
    one = paired_difference({1: 0.5, 2: math.nan}, {1: 0.7, 2: 0.9})
    assert one.pairs == 1 and not one.difference.has_interval and one.first_only == ()
    assert one.second_only == (2,)  # seed 2 has no finite value in the first group
    assert format_difference(one) == "+0.200 (1 pair, no CI); unpaired seeds left out: 2"
    none = paired_difference({1: 0.5}, {2: 0.7})
    assert none.pairs == 0 and math.isnan(none.first_mean) and format_difference(none).startswith("– (no shared seed)")


def test_interval_sign():
    def summary(low: float, high: float, count: int = 3) -> Summary:
        return Summary(count, (low + high) / 2, 0.1, low, high, low, high)

    assert interval_sign(summary(0.01, 0.2)) == 1
    assert interval_sign(summary(-0.2, -0.01)) == -1
    assert interval_sign(summary(-0.01, 0.2)) == 0
    assert interval_sign(summary(0.0, 0.2)) == 0  # touching 0 does not exclude it
    assert interval_sign(summarize([0.5])) == 0  # one value: no interval


def test_seedwise_combines_the_seeds_every_group_has():
    drops = seedwise(lambda clean, attacked: clean - attacked, {1: 0.9, 2: 0.8, 3: 0.7}, {1: 0.5, 3: math.nan, 4: 0.1})
    assert drops == pytest.approx({1: 0.4})
    assert seedwise(
        lambda *values: max(values) - min(values), {1: 1.0, 2: 2.0}, {1: 3.0, 2: 2.5}, {1: 2.0, 2: 0.5}
    ) == {
        1: pytest.approx(2.0),
        2: pytest.approx(2.0),
    }


def test_last_rounds_mean():
    assert last_rounds_mean([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]) == pytest.approx(5.0)  # 3..7
    assert last_rounds_mean([1.0, 2.0, 3.0, 4.0], 3) == pytest.approx(3.0)
    assert last_rounds_mean([1.0, 2.0], 5) == pytest.approx(1.5)  # fewer rounds than asked: all of them
    assert last_rounds_mean([1.0, math.nan, 3.0], 2) == pytest.approx(3.0)
    assert math.isnan(last_rounds_mean([], 5))
    with pytest.raises(ValueError):
        last_rounds_mean([1.0], 0)


def test_format_interval_of_a_one_sample_difference():
    assert format_interval(summarize([0.1, 0.2, 0.3]), unit="seed") == "+0.200 [-0.048, +0.448] (3 seeds)"
    assert format_interval(summarize([-0.05]), unit="seed") == "-0.050 (1 seed, no CI)"
