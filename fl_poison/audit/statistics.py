"""Confidence intervals of accuracies (proportions) and of differences between two of them.

A single proportion gets Wilson's score interval (Wilson, JASA 1927), which stays inside [0, 1]
and does not collapse to a point at 0 or 1 as the normal (Wald) interval does. A difference of
two proportions gets the two-proportion normal interval that seed 003 uses (section 3.2.1):

    d = p1 - p2,   se = sqrt(p1 (1 - p1) / n1 + p2 (1 - p2) / n2),   d -/+ z se

with z the standard normal quantile of the level (1.96 for 95 %). The audit compares accuracies
measured on the same images (an attack against another, a defense against none): such pairs are
positively correlated, so this unpaired standard error overstates the variance of the difference
and the interval is conservative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval.

    Attributes
    ----------
    estimate : float
        The point estimate.
    low, high : float
        The interval's ends.
    """

    estimate: float
    low: float
    high: float


def normal_quantile(level: float) -> float:
    """The two-sided standard normal quantile of confidence ``level`` (1.959964 for 0.95).

    Parameters
    ----------
    level : float
        Confidence level in (0, 1).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: bad value {level!r}; allowed: a number in (0, 1)")
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def proportion_interval(successes: int, trials: int, level: float = 0.95) -> Interval:
    """Wilson's score interval of ``successes / trials``.

    Parameters
    ----------
    successes : int
        Number of successes (e.g. correctly classified images).
    trials : int
        Number of trials (images); an interval of no trials is NaN.
    level : float
        Confidence level.
    """
    if trials <= 0:
        return Interval(math.nan, math.nan, math.nan)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes: bad value {successes!r}; allowed: 0..{trials}")
    z = normal_quantile(level)
    p = successes / trials
    denominator = 1.0 + z * z / trials
    centre = (p + z * z / (2.0 * trials)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / trials + z * z / (4.0 * trials * trials)) / denominator
    return Interval(p, max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def difference_interval(p1: float, n1: int, p2: float, n2: int, level: float = 0.95) -> Interval:
    """The two-proportion normal interval of ``p1 - p2`` (seed 003, section 3.2.1).

    Parameters
    ----------
    p1, p2 : float
        The two proportions.
    n1, n2 : int
        Their numbers of trials; an interval with no trials on either side is NaN.
    level : float
        Confidence level.
    """
    if n1 <= 0 or n2 <= 0:
        return Interval(math.nan, math.nan, math.nan)
    z = normal_quantile(level)
    difference = p1 - p2
    standard_error = math.sqrt(p1 * (1.0 - p1) / n1 + p2 * (1.0 - p2) / n2)
    return Interval(difference, difference - z * standard_error, difference + z * standard_error)
