"""Cosine similarities between updates, and of updates with one vector: float64, blockwise.

FLTrust scores every update by its cosine with the server's own update, FLAME clusters the updates
by their pairwise cosine distances and FoolsGold compares the clients' histories of updates. The
angles come from inner products accumulated in float64 over blocks of coordinates
(:data:`~fl_poison.core.round_updates.COORDINATE_BLOCK`), on the device the updates are on:
``cos(x, y) = x·y / (‖x‖ ‖y‖)``, with the norms taken from the same accumulation (the Gram
matrix's diagonal), clamped to [−1, 1]. A zero vector has no direction: its cosine with anything
(itself included) is 0.
"""

from __future__ import annotations

import torch

from fl_poison.core.round_updates import COORDINATE_BLOCK, RoundUpdates


def update_gram(updates: RoundUpdates) -> torch.Tensor:
    """The ``(n, n)`` float64 Gram matrix (on the CPU) of the rows as a defense sees them (``scale * matrix``).

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    """
    gram = torch.zeros((updates.count, updates.count), dtype=torch.float64, device=updates.device)
    for _, _, values in updates.blocks():
        gram.addmm_(values, values.T)
    gram = gram.cpu()
    return (gram + gram.T) / 2.0  # exactly symmetric: BLAS may round G_ij and G_ji apart


def matrix_gram(rows: torch.Tensor, block: int = COORDINATE_BLOCK) -> torch.Tensor:
    """The ``(n, n)`` float64 Gram matrix (on the CPU) of the rows of a 2-D tensor, blockwise in float64.

    Parameters
    ----------
    rows : torch.Tensor
        ``(n, d)`` values (any floating dtype, any device).
    block : int
        Coordinates per block.
    """
    gram = torch.zeros((rows.shape[0], rows.shape[0]), dtype=torch.float64, device=rows.device)
    for start in range(0, rows.shape[1], block):
        values = rows[:, start : start + block].to(torch.float64)
        gram.addmm_(values, values.T)
    gram = gram.cpu()
    return (gram + gram.T) / 2.0


def cosine_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarities from a Gram matrix (float64, clamped to [−1, 1]; 0 for a zero row).

    Parameters
    ----------
    gram : torch.Tensor
        ``(n, n)`` inner products.
    """
    norms = gram.diagonal().clamp(min=0.0).sqrt()
    denominator = norms[:, None] * norms[None, :]
    cosine = torch.where(denominator > 0, gram / torch.where(denominator > 0, denominator, 1.0), 0.0)
    return cosine.clamp(-1.0, 1.0)


def dots_with(updates: RoundUpdates, vector: torch.Tensor) -> torch.Tensor:
    """``(n,)`` float64 inner products (on the CPU) of the rows as seen with ``vector``, blockwise.

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    vector : torch.Tensor
        ``d`` float64 values on ``updates.device``.
    """
    totals = torch.zeros(updates.count, dtype=torch.float64, device=updates.device)
    for start, stop, values in updates.blocks():
        totals += values @ vector[start:stop]
    return totals.cpu()
