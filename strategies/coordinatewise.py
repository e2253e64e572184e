"""Coordinate-wise order statistics of the round's updates, blockwise: the median, the trimmed mean
and the mean of the values closest to the median (Bulyan's second step).

Per block of coordinates the rows' values are sorted along the clients and the statistic is read
from the sorted values in float64. On the CPU the sort is numpy's (several times faster than
``torch.sort`` along a short axis on this kind of machine); on a GPU it is ``torch.sort``. When the
rows share one factor (no clipping, or all clipped alike) the float32 values are sorted and scaled
afterwards (a positive factor keeps the order); otherwise the float64 scaled values are sorted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from fl_poison.core.round_updates import RoundUpdates


def sorted_blocks(updates: RoundUpdates, rows: Sequence[int]) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(start, stop, values)``: the float64 values of ``rows`` on a block of coordinates, sorted along the rows.

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates (rows as the defense sees them).
    rows : Sequence[int]
        The rows (clients) whose values are sorted per coordinate.
    """
    factors = updates.scale[list(rows)]
    common = float(factors[0]) if bool(torch.all(factors == factors[0])) else None
    blocks = updates.float32_blocks(rows) if common is not None else updates.blocks(rows)
    for start, stop, values in blocks:
        ordered = _sort_rows(values).to(torch.float64)
        if common is not None and common != 1.0:
            ordered.mul_(common)
        yield start, stop, ordered


def _sort_rows(values: torch.Tensor) -> torch.Tensor:
    """``values`` sorted along dimension 0 (numpy on the CPU, torch elsewhere)."""
    if values.device.type == "cpu":
        return torch.from_numpy(np.sort(values.numpy(), axis=0))
    return torch.sort(values, dim=0).values


def median_of_sorted(ordered: torch.Tensor) -> torch.Tensor:
    """The median of every column of sorted values (the mean of the two middle ones for an even count)."""
    count = ordered.shape[0]
    if count % 2:
        return ordered[count // 2]
    return (ordered[count // 2 - 1] + ordered[count // 2]) / 2.0


def coordinate_median(updates: RoundUpdates, rows: Sequence[int]) -> torch.Tensor:
    """The coordinate-wise median of ``rows`` (float64, one value per coordinate).

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    rows : Sequence[int]
        The rows (at least one).
    """
    result = torch.empty(updates.size, dtype=torch.float64, device=updates.device)
    for start, stop, ordered in sorted_blocks(updates, rows):
        result[start:stop] = median_of_sorted(ordered)
    return result


def trimmed_mean(updates: RoundUpdates, rows: Sequence[int], beta: float) -> torch.Tensor:
    """Per coordinate, the mean of ``rows``' values without the ``int(beta * k)`` largest and smallest.

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    rows : Sequence[int]
        The rows (k of them, at least one).
    beta : float
        Fraction trimmed at each end, in [0, 0.5).
    """
    count = len(rows)
    cut = int(beta * count)
    result = torch.empty(updates.size, dtype=torch.float64, device=updates.device)
    for start, stop, ordered in sorted_blocks(updates, rows):
        result[start:stop] = ordered[cut : count - cut].sum(dim=0) / (count - 2 * cut)
    return result


def closest_to_median_mean(updates: RoundUpdates, rows: Sequence[int], count: int) -> torch.Tensor:
    """Per coordinate, the mean of the ``count`` values of ``rows`` closest to their median.

    The ``count`` values nearest a point form a run of consecutive sorted values; the run starts
    at the first position t where ``median - v[t] <= v[t + count] - median`` (ties go to the
    smaller values).

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    rows : Sequence[int]
        The rows (θ of them).
    count : int
        How many values are averaged per coordinate (1 <= count <= θ).
    """
    total = len(rows)
    offsets = torch.arange(count, device=updates.device)[:, None]
    result = torch.empty(updates.size, dtype=torch.float64, device=updates.device)
    for start, stop, ordered in sorted_blocks(updates, rows):
        median = median_of_sorted(ordered)
        further_left = (median - ordered[: total - count]) > (ordered[count:] - median)
        first = further_left.sum(dim=0)
        window = ordered.gather(0, first[None, :] + offsets)
        result[start:stop] = window.sum(dim=0) / count
    return result
