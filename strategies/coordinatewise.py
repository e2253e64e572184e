"""Coordinate-wise order statistics of the round's updates, blockwise: the median, the trimmed mean
and the mean of the values closest to the median (Bulyan's second step).

Per block of coordinates the rows' values are sorted along the clients and the statistic is read
from the sorted values with float64 arithmetic. When the rows share one factor (no clipping, or all
clipped alike) the float32 values themselves are sorted and the statistic is multiplied by the
factor (a positive factor keeps the order, and the statistics are linear in it); otherwise the
float64 scaled values are sorted.

On the CPU the blocks are numpy arrays, sorted in place in a reused buffer, and the arithmetic is
numpy's: one thread, several times faster here than ``torch.sort`` along a short axis, and never
waiting for a second core that another process holds (a two-thread torch operation on a busy
two-core machine can wait a scheduler slice). On a GPU they are torch tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeAlias

import numpy as np
import torch

from fl_poison.core.round_updates import RoundUpdates

Block: TypeAlias = np.ndarray | torch.Tensor


def sorted_blocks(updates: RoundUpdates, rows: Sequence[int]) -> Iterator[tuple[int, int, Block, float]]:
    """``(start, stop, ordered, factor)``: the values of ``rows`` on a block of coordinates, sorted along the rows.

    ``ordered`` is a numpy array on the CPU (a reused buffer: keep nothing of it past the next
    iteration) and a torch tensor on a GPU. When the rows share one factor it holds the float32
    matrix values and ``factor`` is that factor (statistics of the block are multiplied by it);
    otherwise it holds the float64 scaled values and ``factor`` is 1.

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates (rows as the defense sees them).
    rows : Sequence[int]
        The rows (clients) whose values are sorted per coordinate.
    """
    factors = updates.scale[list(rows)]
    shared = bool(torch.all(factors == factors[0]))
    blocks = updates.float32_blocks(rows) if shared else updates.blocks(rows)
    factor = float(factors[0]) if shared else 1.0
    buffer: np.ndarray | None = None
    for start, stop, values in blocks:
        if values.device.type != "cpu":
            yield start, stop, torch.sort(values, dim=0).values, factor
            continue
        source = values.numpy()
        if buffer is None or buffer.shape != source.shape or buffer.dtype != source.dtype:
            buffer = np.empty(source.shape, dtype=source.dtype)
        np.copyto(buffer, source)
        buffer.sort(axis=0)
        yield start, stop, buffer, factor


def _float64(values: Block) -> Block:
    return values.astype(np.float64) if isinstance(values, np.ndarray) else values.to(torch.float64)


def _column_sums(values: Block) -> Block:
    """Float64 sums over the rows."""
    if isinstance(values, np.ndarray):
        return values.sum(axis=0, dtype=np.float64)
    return values.sum(dim=0, dtype=torch.float64)


def _write(result: torch.Tensor, start: int, stop: int, values: Block) -> None:
    """``result[start:stop] = values`` (numpy values into a CPU tensor without torch arithmetic)."""
    if isinstance(values, np.ndarray):
        result.numpy()[start:stop] = values
    else:
        result[start:stop] = values


def median_of_sorted(ordered: Block) -> Block:
    """The float64 median of every column of sorted values (the mean of the two middle ones for an even count).

    Parameters
    ----------
    ordered : numpy.ndarray | torch.Tensor
        Values sorted along the first axis.
    """
    count = ordered.shape[0]
    if count % 2:
        return _float64(ordered[count // 2])
    return (_float64(ordered[count // 2 - 1]) + _float64(ordered[count // 2])) / 2.0


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
    for start, stop, ordered, factor in sorted_blocks(updates, rows):
        _write(result, start, stop, median_of_sorted(ordered) * factor)
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
    for start, stop, ordered, factor in sorted_blocks(updates, rows):
        _write(result, start, stop, _column_sums(ordered[cut : count - cut]) * (factor / (count - 2 * cut)))
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
    result = torch.empty(updates.size, dtype=torch.float64, device=updates.device)
    for start, stop, ordered, factor in sorted_blocks(updates, rows):
        median = median_of_sorted(ordered)
        further_left = (median - ordered[: total - count]) > (ordered[count:] - median)
        first = further_left.sum(0)
        window: Block
        if isinstance(ordered, np.ndarray):
            window = np.take_along_axis(ordered, first[None, :] + np.arange(count)[:, None], axis=0)
        else:
            window = ordered.gather(0, first[None, :] + torch.arange(count, device=ordered.device)[:, None])
        _write(result, start, stop, _column_sums(window) * (factor / count))
    return result
