"""Pairwise squared Euclidean distances between the round's updates: float64, blockwise, BLAS.

Krum, Multi-Krum and Bulyan rank updates by these distances, so they must be right to well
within the gaps between updates, also for a ResNet-18 (d ≈ 11.7 M) whose updates are 1e-3 per
coordinate. Flower computes ``‖x‖² + ‖y‖² − 2x·y`` on raw float32 weights, which is off by tens
of percent there. Here, with x_i the rows as the defense sees them (float64):

1. **Gram matrix on centred rows.** For each block of b coordinates
   (:data:`~fl_poison.core.round_updates.COORDINATE_BLOCK`), the rows minus their mean over the
   rows (distances do not change; ‖x_i‖² shrinks to the spread around the mean) are multiplied
   into G = Σ_blocks X Xᵀ (one dgemm per block), and D_ij = G_ii + G_jj − 2G_ij. The mean is
   rounded to float32 first, so that subtracting it from float32 rows is exact in float64 (and
   rows of small integers give exact distances, ties included).
2. **Error bound.** A float64 dot product of b terms is off by at most γ Σ|x_k y_k| with
   γ = b·u (u = 2⁻⁵³; Higham, "Accuracy and Stability of Numerical Algorithms", §3.1), and summing
   the blocks adds (number of blocks)·u. So |D_ij − D*_ij| ≤ 2γ S_ij with S_ij = G_ii + G_jj,
   and wherever D_ij > κ S_ij (:data:`RELATIVE_CUTOFF`, κ = 1e-4) the relative error is below
   2γ/κ ≈ 1.5e-7 (b = 65,536, d = 11.7 M).
3. **Refinement of the pairs below the cutoff** (near-identical updates such as colluders, or a
   tight cluster far from the mean): each connected group of such pairs is re-centred on its own
   mean and its Gram matrix recomputed (this resolves a tight cluster at the cost of one pass over
   its rows); pairs still below the cutoff are recomputed exactly as Σ (x_i − x_j)² from the
   float64 differences (identical rows give exactly 0).

The float64 reference these distances are tested against is Σ_k (x_ik − x_jk)² in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fl_poison.core.round_updates import COORDINATE_BLOCK, RoundUpdates

RELATIVE_CUTOFF = 1e-4
# Pairs differenced at once in the exact recomputation (bounds its memory to 64 × b float64 values).
PAIRS_PER_PASS = 64


def pairwise_squared_distances(updates: RoundUpdates, rows: Sequence[int] | None = None) -> torch.Tensor:
    """The ``(k, k)`` float64 matrix (on the CPU) of squared distances between ``rows`` (all rows when None).

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates; rows are taken as the defense sees them (``scale * matrix``).
    rows : Sequence[int] | None
        Row indices; the result follows their order.
    """
    chosen = list(range(updates.count)) if rows is None else list(rows)
    distances, sums = _gram_distances(updates, chosen)
    suspect = _below_cutoff(distances, sums)
    exact: list[tuple[int, int]] = []
    for group in _connected_groups(suspect):
        if len(group) == 2:
            exact.append((group[0], group[1]))
            continue
        group_distances, group_sums = _gram_distances(updates, [chosen[i] for i in group])
        index = torch.tensor(group)
        distances[index[:, None], index[None, :]] = group_distances
        exact.extend((group[a], group[b]) for a, b in _below_cutoff(group_distances, group_sums))
    if exact:
        values = _exact_squared_distances(updates, chosen, exact)
        for (a, b), value in zip(exact, values, strict=True):
            distances[a, b] = distances[b, a] = value
    distances.fill_diagonal_(0.0)
    return distances


def _gram_distances(updates: RoundUpdates, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances from the Gram matrix of the centred rows, and S_ij = G_ii + G_jj (CPU float64)."""
    gram = torch.zeros((len(rows), len(rows)), dtype=torch.float64, device=updates.device)
    for _, _, values in updates.blocks(rows):
        if values.device.type == "cpu":  # centring in numpy (one thread), the product in BLAS
            array = values.numpy()
            array -= array.mean(axis=0).astype(np.float32)
        else:
            values -= values.mean(dim=0).to(torch.float32)
        gram.addmm_(values, values.T)
    gram = gram.cpu()
    gram = (gram + gram.T) / 2.0  # exactly symmetric (BLAS may round G_ij and G_ji apart): equal pairs tie
    diagonal = gram.diagonal()
    sums = diagonal[:, None] + diagonal[None, :]
    return sums - 2.0 * gram, sums


def _below_cutoff(distances: torch.Tensor, sums: torch.Tensor) -> list[tuple[int, int]]:
    """Pairs (i < j) whose distance is at most :data:`RELATIVE_CUTOFF` times S_ij (or not finite)."""
    first, second = torch.triu_indices(len(distances), len(distances), offset=1)
    values, limits = distances[first, second], RELATIVE_CUTOFF * sums[first, second]
    flagged = (values <= limits) | ~torch.isfinite(values)
    return [(int(a), int(b)) for a, b in zip(first[flagged], second[flagged], strict=True)]


def _connected_groups(pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """The connected components (sorted indices, at least two each) of the graph with edges ``pairs``."""
    parent: dict[int, int] = {}

    def root(node: int) -> int:
        parent.setdefault(node, node)
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in pairs:
        parent[root(a)] = root(b)
    groups: dict[int, list[int]] = {}
    for node in sorted(parent):
        groups.setdefault(root(node), []).append(node)
    return list(groups.values())


def _exact_squared_distances(
    updates: RoundUpdates, rows: Sequence[int], pairs: Sequence[tuple[int, int]]
) -> list[float]:
    """Σ (x_a − x_b)² in float64 for each pair of positions in ``rows``, from differences, blockwise."""
    needed = sorted({position for pair in pairs for position in pair})
    where = {position: index for index, position in enumerate(needed)}
    first = torch.tensor([where[a] for a, _ in pairs], device=updates.device)
    second = torch.tensor([where[b] for _, b in pairs], device=updates.device)
    totals = torch.zeros(len(pairs), dtype=torch.float64, device=updates.device)
    for _, _, values in updates.blocks([rows[position] for position in needed], size=COORDINATE_BLOCK):
        for start in range(0, len(pairs), PAIRS_PER_PASS):
            stop = start + PAIRS_PER_PASS
            if values.device.type == "cpu":
                array = values.numpy()
                differences = array[first[start:stop].numpy()] - array[second[start:stop].numpy()]
                totals.numpy()[start:stop] += np.einsum("ij,ij->i", differences, differences)
            else:
                differences = values[first[start:stop]].sub_(values[second[start:stop]])
                totals[start:stop] += differences.square_().sum(dim=1)
    return totals.cpu().tolist()
