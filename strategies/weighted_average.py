"""Example-weighted averaging of updates: FedAvg's aggregate, and that of every rule that keeps a
subset of the updates and averages it (Krum, Multi-Krum, the loss filter).

:func:`client_weights` is the one place where a client's weight in an average comes from: its
example count as ``client-weighting`` decided (:mod:`fl_poison.core.client_weighting`: the report
capped at what the server can justify by default, the report itself, or 1); every weighted rule
goes through it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fl_poison.core.round_updates import COORDINATE_BLOCK, RoundUpdates
from strategies.spec import ACCEPTED, REJECTED, ClientDecision, Outcome


def client_weights(updates: RoundUpdates, rows: Sequence[int]) -> list[float]:
    """The shares of ``rows`` in their average: their weighting counts over their sum (float64).

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates (their ``num_examples``: the counts ``client-weighting`` left).
    rows : Sequence[int]
        The rows averaged.
    """
    counts = [updates.num_examples[row] for row in rows]
    total = math.fsum(counts)
    return [count / total for count in counts]


def weighted_sum(updates: RoundUpdates, rows: Sequence[int], weights: Sequence[float]) -> torch.Tensor:
    """``sum_i weights[i] * row_i`` over ``rows`` as rows are seen (scaled), accumulated in float64 blockwise.

    Every row of the matrix is read (the others with weight 0), which costs less than gathering
    the chosen rows block by block.

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    rows : Sequence[int]
        The rows summed (at least one).
    weights : Sequence[float]
        One weight per row of ``rows``.
    """
    coefficients = torch.zeros(updates.count, dtype=torch.float64, device=updates.device)
    coefficients[list(rows)] = torch.tensor(list(weights), dtype=torch.float64, device=updates.device)
    total = torch.empty(updates.size, dtype=torch.float64, device=updates.device)
    on_cpu = updates.device.type == "cpu"
    for start, stop, values in updates.blocks(size=COORDINATE_BLOCK // 4):
        if on_cpu:  # numpy: one thread (see strategies/coordinatewise.py)
            np.einsum("i,ij->j", coefficients.numpy(), values.numpy(), out=total.numpy()[start:stop])
        else:
            torch.mv(values.T, coefficients, out=total[start:stop])
    return total


def average_of(updates: RoundUpdates, kept: Sequence[int]) -> Outcome:
    """FedAvg over the rows ``kept``: each accepted with its :func:`client_weights` share, the others rejected.

    A single unscaled row is the aggregate itself (weight 1): its reply becomes the new model bit
    for bit (``exact_row``).

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    kept : Sequence[int]
        The rows averaged (sorted; may be empty: then the global model stays as it was).
    """
    kept = sorted(kept)
    weights = dict(zip(kept, client_weights(updates, kept), strict=True)) if kept else {}
    norms = updates.scaled_norms().tolist()
    decisions = tuple(
        ClientDecision(pid, ACCEPTED, norms[row], weights[row])
        if row in weights
        else ClientDecision(pid, REJECTED, 0.0, 0.0)
        for row, pid in enumerate(updates.partition_ids)
    )
    if not kept:
        return Outcome(update=None, decisions=decisions, metric_rows=())
    if len(kept) == 1 and updates.unscaled(kept):
        row = updates.matrix[kept[0]]
        update = torch.from_numpy(row.numpy().astype(np.float64)) if row.device.type == "cpu" else row.double()
        return Outcome(update=update, decisions=decisions, metric_rows=tuple(kept), exact_row=kept[0])
    update = weighted_sum(updates, kept, [weights[row] for row in kept])
    return Outcome(update=update, decisions=decisions, metric_rows=tuple(kept))
