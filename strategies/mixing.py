"""What the mixing pre-aggregators (NNM, bucketing) share: rows replaced by weighted means of rows, handed
to a wrapped rule, and the wrapped rule's decisions on the means traced back to the clients.

A mixing pre-aggregator builds a ``(k, n)`` matrix A of float64 coefficients (row r of A: the
weights of the round's n updates in mixed row r) and hands the wrapped rule a new
:class:`~fl_poison.core.round_updates.RoundUpdates` whose matrix holds ``A X`` (X: the updates as
the defense sees them, ``scale * matrix``), computed blockwise in float64 and rounded once to
float32 (the dtype every rule reads), with factor 1 per row and the norms of the stored rows.

Every client then takes the decision the wrapped rule made on the mixed row that stands for it
(:func:`traced_decision`): the same judgement and bound; as weight, the row's weight times the
client's share in that row; as norm after, its own norm scaled down as the wrapped rule scaled the
row (a client enters the aggregate only through mixes, so "its norm as it entered" is its own norm
times whatever clipping the row underwent; never above its norm before).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from flwr.app import ArrayRecord, RecordDict

from fl_poison.core.round_updates import RoundUpdates
from strategies.spec import REJECTED, SKIPPED, ClientDecision


def mixed_matrix(updates: RoundUpdates, coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(k, d)`` float32 matrix ``A X`` on the updates' device and the float64 norms of its rows.

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates (rows as the defense sees them).
    coefficients : torch.Tensor
        A, ``(k, n)`` float64.
    """
    count = coefficients.shape[0]
    mixing = coefficients.to(updates.device, torch.float64)
    matrix = torch.empty((count, updates.size), dtype=torch.float32, device=updates.device)
    squares = torch.zeros(count, dtype=torch.float64)
    if updates.device.type != "cpu":
        for start, stop, values in updates.blocks():
            target = matrix[:, start:stop]
            target.copy_(torch.mm(mixing, values))
            squares += target.double().square().sum(dim=1).cpu()
        return matrix, squares.sqrt().to(updates.device)
    # On the CPU a sparse A (bucket means: one coefficient per update) is summed row by row over
    # its nonzero coefficients in numpy (one thread); a dense one (NNM) is multiplied in BLAS.
    weights = mixing.numpy()
    nonzero = [np.flatnonzero(row) for row in weights]
    sparse = sum(len(columns) for columns in nonzero) <= 2 * weights.shape[1]
    for start, stop, values in updates.blocks():
        rounded = matrix[:, start:stop].numpy()
        if sparse:
            block = values.numpy()
            for row, columns in enumerate(nonzero):
                rounded[row] = np.einsum("i,ij->j", weights[row, columns], block[columns])
        else:
            np.copyto(rounded, torch.mm(mixing, values).numpy(), casting="same_kind")
        squares.numpy()[:] += np.einsum("ij,ij->i", rounded, rounded, dtype=np.float64)
    return matrix, squares.sqrt()


def mixed_round(
    updates: RoundUpdates,
    coefficients: torch.Tensor,
    partition_ids: Sequence[int],
    num_examples: Sequence[float],
    reported_examples: Sequence[float],
    losses: Sequence[float],
    sources: Sequence[int],
) -> RoundUpdates:
    """The round the wrapped rule sees: one row per row of A, ``A X`` as float32, factors 1.

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    coefficients : torch.Tensor
        A, ``(k, n)`` float64.
    partition_ids, num_examples, reported_examples, losses : Sequence
        What each mixed row reports to the wrapped rule (k values each).
    sources : Sequence[int]
        For each mixed row, the row whose reply contents and arrays it carries (read by no rule:
        the pre-aggregator maps metric rows back to the clients and drops exact rows).
    """
    matrix, norms = mixed_matrix(updates, coefficients)
    contents: tuple[RecordDict, ...] = tuple(updates.contents[row] for row in sources)
    arrays: tuple[ArrayRecord, ...] = tuple(updates.arrays[row] for row in sources)
    return replace(
        updates,
        matrix=matrix,
        scale=torch.ones(len(sources), dtype=torch.float64, device=updates.device),
        norms=norms,
        partition_ids=tuple(int(pid) for pid in partition_ids),
        num_examples=tuple(float(count) for count in num_examples),
        reported_examples=tuple(float(count) for count in reported_examples),
        losses=tuple(float(loss) for loss in losses),
        contents=contents,
        arrays=arrays,
    )


def traced_decision(
    partition_id: int, own_norm: float, row_norm: float, row_decision: ClientDecision, share: float
) -> ClientDecision:
    """A client's decision from the wrapped rule's decision on the mixed row standing for it.

    Parameters
    ----------
    partition_id : int
        The client.
    own_norm : float
        The norm of its update as the pre-aggregator saw it.
    row_norm : float
        The norm of the mixed row before the wrapped rule.
    row_decision : ClientDecision
        What the wrapped rule did with the mixed row.
    share : float
        The client's share in the mixed row (its weight is the row's weight times it; NaN stays NaN).
    """
    if row_decision.decision in (REJECTED, SKIPPED):
        return ClientDecision(partition_id, row_decision.decision, 0.0, 0.0, row_decision.bound)
    ratio = min(1.0, row_decision.norm_after / row_norm) if row_norm > 0 else 1.0
    weight = row_decision.weight * share if not math.isnan(row_decision.weight) else math.nan
    return ClientDecision(partition_id, row_decision.decision, own_norm * ratio, weight, row_decision.bound)
