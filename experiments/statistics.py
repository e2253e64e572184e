"""Statistics over seeds: means, sample standard deviations and t confidence intervals (pure functions).

A result measured with one seed says little: an attacked run's accuracy can swing by 30 points
between its last rounds, and from one seed to the next. This module turns the values of a group of
replicates (cells that differ only in their seed) into a :class:`Summary` and the values of two
such groups into a :class:`PairedDifference`:

* **mean** over the values, **std** the sample standard deviation (divisor ``n − 1``);
* the **confidence interval** ``mean ± t · std / √n`` with ``t`` the ``(1 + confidence) / 2``
  quantile of Student's t distribution with ``n − 1`` degrees of freedom (``scipy.stats.t.ppf``;
  ``t = 4.302653`` for 3 values at 95 %). One value has no standard deviation and no interval
  (both NaN, :attr:`Summary.has_interval` false): it is shown as such, never as ``± 0``.
* a **paired difference** compares two groups seed by seed: ``second − first`` for every seed
  both groups have, summarised as above; seeds present in only one group are left out and named.

An interval is read by :func:`interval_sign`: ``+1`` when it lies above 0, ``−1`` below 0, ``0``
when it contains 0 or there is none. Values that are not finite numbers (a metric a run does not
have) are left out of every statistic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
LAST_ROUNDS = 5


def t_quantile(confidence: float, degrees_of_freedom: int) -> float:
    """The two-sided t quantile: ``t.ppf((1 + confidence) / 2, degrees_of_freedom)``.

    Parameters
    ----------
    confidence : float
        Coverage of the interval, in (0, 1) (0.95 for a 95 % interval).
    degrees_of_freedom : int
        ``n − 1`` for ``n`` values; at least 1.

    Raises
    ------
    ValueError
        When ``confidence`` is not in (0, 1) or ``degrees_of_freedom`` < 1.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: bad value {confidence!r}; allowed: a number in (0, 1)")
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees_of_freedom: bad value {degrees_of_freedom!r}; allowed: an integer >= 1")
    return float(stats.t.ppf(0.5 + confidence / 2.0, degrees_of_freedom))


@dataclass(frozen=True)
class Summary:
    """Mean, spread and t interval of the finite values of one group.

    Attributes
    ----------
    count : int
        How many finite values the statistics are over (``n``).
    mean : float
        Their mean (NaN when ``count`` is 0).
    std : float
        Their sample standard deviation, divisor ``n − 1`` (NaN when ``count`` < 2).
    ci_low, ci_high : float
        The t confidence interval ``mean ∓ t(n − 1) · std / √n`` (NaN when ``count`` < 2).
    minimum, maximum : float
        The smallest and largest value (NaN when ``count`` is 0).
    confidence : float
        The interval's coverage (0.95 by default).
    """

    count: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    minimum: float
    maximum: float
    confidence: float = CONFIDENCE

    @property
    def has_interval(self) -> bool:
        """True when there is an interval (two values or more)."""
        return self.count >= 2 and math.isfinite(self.ci_low) and math.isfinite(self.ci_high)

    @property
    def half_width(self) -> float:
        """Half the interval's width, ``t · std / √n`` (NaN without an interval)."""
        return (self.ci_high - self.ci_low) / 2.0 if self.has_interval else math.nan


def finite(values: Iterable[float]) -> list[float]:
    """The values that are finite numbers, in order.

    Parameters
    ----------
    values : Iterable[float]
        Any numbers (NaN and infinities are dropped).
    """
    return [float(value) for value in values if value is not None and math.isfinite(float(value))]


def summarize(values: Iterable[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean, sample standard deviation and t interval of the finite ``values``.

    Parameters
    ----------
    values : Iterable[float]
        One value per replicate (non-finite ones are left out).
    confidence : float
        Coverage of the interval (default 0.95).

    Examples
    --------
    >>> s = summarize([1.0, 2.0, 3.0])
    >>> (s.mean, s.std, round(s.half_width, 6))
    (2.0, 1.0, 2.484138)
    """
    kept = finite(values)
    count = len(kept)
    if count == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, confidence)
    data = np.asarray(kept, dtype=float)
    mean = float(data.mean())
    if count == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, mean, mean, confidence)
    std = float(data.std(ddof=1))
    half = t_quantile(confidence, count - 1) * std / math.sqrt(count)
    return Summary(count, mean, std, mean - half, mean + half, float(data.min()), float(data.max()), confidence)


@dataclass(frozen=True)
class PairedDifference:
    """``second − first`` seed by seed, over the seeds both groups have.

    Attributes
    ----------
    difference : Summary
        Statistics of the per-seed differences: ``difference.mean`` is the difference of the two
        groups' means over the shared seeds, ``difference.count`` the number of pairs.
    seeds : tuple[Hashable, ...]
        The shared seeds, in the first group's order.
    first_only, second_only : tuple[Hashable, ...]
        Seeds present in only one group (left out).
    first_mean, second_mean : float
        Each group's mean over the shared seeds.
    """

    difference: Summary
    seeds: tuple[Hashable, ...]
    first_only: tuple[Hashable, ...]
    second_only: tuple[Hashable, ...]
    first_mean: float
    second_mean: float

    @property
    def pairs(self) -> int:
        """The number of seeds both groups have a finite value for."""
        return self.difference.count


def paired_difference(
    first: Mapping[Hashable, float], second: Mapping[Hashable, float], confidence: float = CONFIDENCE
) -> PairedDifference:
    """The difference ``second − first`` paired by seed, with its t interval over the pairs.

    Parameters
    ----------
    first, second : Mapping[Hashable, float]
        Seed -> value of each group (a non-finite value counts as no value for that seed).
    confidence : float
        Coverage of the interval (default 0.95).

    Examples
    --------
    >>> d = paired_difference({1: 0.9, 2: 0.8, 3: 0.7}, {1: 0.5, 2: 0.6, 4: 0.1})
    >>> (d.pairs, round(d.difference.mean, 6), d.first_only, d.second_only)
    (2, -0.3, (3,), (4,))
    """
    usable_first = {seed: value for seed, value in first.items() if math.isfinite(value)}
    usable_second = {seed: value for seed, value in second.items() if math.isfinite(value)}
    seeds = tuple(seed for seed in usable_first if seed in usable_second)
    differences = [usable_second[seed] - usable_first[seed] for seed in seeds]
    return PairedDifference(
        difference=summarize(differences, confidence),
        seeds=seeds,
        first_only=tuple(seed for seed in usable_first if seed not in usable_second),
        second_only=tuple(seed for seed in usable_second if seed not in usable_first),
        first_mean=float(np.mean([usable_first[seed] for seed in seeds])) if seeds else math.nan,
        second_mean=float(np.mean([usable_second[seed] for seed in seeds])) if seeds else math.nan,
    )


def seedwise(combine: Callable[..., float], *groups: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """``combine`` applied seed by seed to groups of values, over the seeds every group has.

    Builds the per-seed values of a contrast of more than two groups (e.g. the drop
    ``accuracy(0 attackers) − accuracy(2 attackers)`` per seed, then compared between two
    partitionings by :func:`paired_difference`).

    Parameters
    ----------
    combine : Callable[..., float]
        Receives one value per group, in order.
    *groups : Mapping[Hashable, float]
        Seed -> value; a seed missing from any group, or with a non-finite value in one, is left out.
    """
    if not groups:
        return {}
    seeds = [seed for seed in groups[0] if all(seed in group and math.isfinite(group[seed]) for group in groups)]
    return {seed: float(combine(*(group[seed] for group in groups))) for seed in seeds}


def interval_sign(summary: Summary) -> int:
    """Which side of 0 the interval lies on: ``+1`` above, ``−1`` below, ``0`` containing 0 or absent.

    Parameters
    ----------
    summary : Summary
        The statistics of a difference (one value: no interval, so 0).
    """
    if not summary.has_interval:
        return 0
    if summary.ci_low > 0.0:
        return 1
    if summary.ci_high < 0.0:
        return -1
    return 0


def last_rounds_mean(values: Sequence[float], rounds: int = LAST_ROUNDS) -> float:
    """Mean of the finite values among the last ``rounds`` entries (NaN when none).

    A run that has fewer rounds than ``rounds`` is averaged over all of them.

    Parameters
    ----------
    values : Sequence[float]
        A metric per round, in round order (the initial model's round 0 already left out).
    rounds : int
        How many of the last rounds to average (at least 1).
    """
    if rounds < 1:
        raise ValueError(f"rounds: bad value {rounds!r}; allowed: an integer >= 1")
    kept = finite(values[-rounds:])
    return float(np.mean(kept)) if kept else math.nan


def format_number(value: float, digits: int = 3, signed: bool = False) -> str:
    """``value`` with ``digits`` decimals (``+`` for positive numbers when ``signed``), or "–" when not finite.

    Parameters
    ----------
    value : float
        The number.
    digits : int
        Decimals.
    signed : bool
        Write a ``+`` before positive numbers (differences).
    """
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_summary(summary: Summary, digits: int = 3, unit: str = "seed") -> str:
    """``mean ± std [low, high]`` (two values or more), ``mean (1 seed, no CI)``, or "–".

    Parameters
    ----------
    summary : Summary
        The statistics.
    digits : int
        Decimals.
    unit : str
        What a value is (``seed``, ``pair``), for the one-value case.
    """
    if summary.count == 0:
        return "–"
    if not summary.has_interval:
        return f"{format_number(summary.mean, digits)} (1 {unit}, no CI)"
    return (
        f"{format_number(summary.mean, digits)} ± {format_number(summary.std, digits)} "
        f"[{format_number(summary.ci_low, digits)}, {format_number(summary.ci_high, digits)}]"
    )


def format_interval(summary: Summary, digits: int = 3, unit: str = "pair") -> str:
    """A signed estimate: ``+d [low, high] (n pairs)``, ``+d (1 pair, no CI)``, or "– (no shared seed)".

    Parameters
    ----------
    summary : Summary
        The statistics of a difference (one value per pair of runs).
    digits : int
        Decimals.
    unit : str
        What a value is, in the singular (``pair``, ``seed``).
    """
    if summary.count == 0:
        return "– (no shared seed)"
    mean = format_number(summary.mean, digits, signed=True)
    if not summary.has_interval:
        return f"{mean} (1 {unit}, no CI)"
    low, high = format_number(summary.ci_low, digits, signed=True), format_number(summary.ci_high, digits, signed=True)
    return f"{mean} [{low}, {high}] ({summary.count} {unit}s)"


def format_difference(paired: PairedDifference, digits: int = 3) -> str:
    """:func:`format_interval` of the per-seed differences; the seeds left out, when any, named after it.

    Parameters
    ----------
    paired : PairedDifference
        The paired difference.
    digits : int
        Decimals.
    """
    text = format_interval(paired.difference, digits)
    unpaired = [*paired.first_only, *paired.second_only]
    if unpaired:
        text += f"; unpaired seeds left out: {', '.join(str(seed) for seed in unpaired)}"
    return text
