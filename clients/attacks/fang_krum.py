"""Fang's attack on Krum: a deviation against the direction of change, as large as still gets Krum to select it.

Paper: Fang, Cao, Jia and Gong, 2020, "Local Model Poisoning Attacks to Byzantine-Robust Federated
Learning" (USENIX Security), §4.2 "Attacking Krum". Adaptive to a named rule: it is tailored to
Krum (Blanchard et al., 2017) and, through Krum's selection, also aims at Multi-Krum and Bulyan;
it runs against any rule.

The paper, in model space, with m clients of which c are attackers, w_Re the global model the
clients received and s the sign vector of the direction in which the global model would change
without attack, solves

    max λ  subject to  w'_1 = Krum(w'_1, .., w'_c, w_{c+1}, .., w_m),  w'_1 = w_Re − λ s,  w'_i = w'_1 (i ≥ 2).

In update space (update = local model − w_Re) the first attacker sends −λ s. Steps, with
r_1 .. r_k the reference updates (the benign updates of the round with full knowledge, the
paper's default, ``omniscient``; the attackers' own honest updates with partial knowledge,
``colluding``, which the paper treats as the benign ones), d the number of coordinates and
m = c + k the size of the round the attackers simulate:

1. s = sign(mean of the r_i): the estimated direction of change of every coordinate.
2. The c − 1 other attackers send −λ s + e_i, with e_i drawn once per round uniformly from the
   ball of radius ε (``fang-krum-epsilon``; the paper samples "close to w'_1"; the default 0 sends
   copies, the constraint w'_i = w'_1 of the optimisation problem).
3. λ starts at the paper's upper bound

       λ_max = 1 / ((m − 2c − 1) √d) · min_i Σ_{l ∈ Γ_i} D(r_l, r_i)  +  1 / √d · max_i D(r_i, 0),

   Γ_i the m − c − 2 reference updates nearest r_i and D the Euclidean distance. When m − 2c − 1
   ≤ 0 (partial knowledge: the simulated round holds only the 2c updates of the attackers) the
   c − 1 supporters fill w'_1's whole Krum neighbourhood, no benign score bounds λ and the first
   term is left out.
4. λ is halved until Krum over the simulated round (the k reference updates, then the c forged
   ones; f = c, the paper's n − f − 2 neighbours at least 1, ties to the lower index so that a
   tie with a reference update goes against the attack) selects a forged update, or until
   λ < 10⁻⁵ (the paper's threshold), where the attack stops with that λ.

Recorded per round: ``lambda`` (the λ sent), ``lambda_bound`` (λ_max) and ``krum_selected`` (1 when
the simulated Krum selected a forged update at λ, else 0). Krum's rule is written here, not
imported (:mod:`clients` does not import :mod:`strategies`); the tests check that it selects the
same row as :mod:`strategies.krum`. The distances between a forged update and r_i are expanded
as λ²‖s‖² − 2λ⟨s, e − r_i⟩ + ‖e‖² − 2⟨e, r_i⟩ + ‖r_i‖² once (inner products in BLAS), so that each
halving costs O(m²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from clients.adversary import ATTACK_KNOWLEDGE, COLLUDING, OMNISCIENT, AdversaryContext, AdversaryView, Forged
from clients.spec import AttackSpec
from fl_poison.core.catalogue import MODEL_POISONING
from fl_poison.core.settings import Setting, non_negative_number

LAMBDA_THRESHOLD = 1e-5  # the paper's threshold on λ

FANG_KRUM_EPSILON = Setting(
    "fang-krum-epsilon",
    0.0,
    "fang-krum: the attackers after the first send its update plus noise of norm at most this (0 = copies).",
    non_negative_number,
)


def squared_distances(rows: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` squared Euclidean distances between ``rows`` (float64, from the Gram matrix of the centred rows).

    Parameters
    ----------
    rows : torch.Tensor
        ``(n, d)`` vectors.
    """
    centred = rows.to(torch.float64) - rows.to(torch.float64).mean(dim=0)
    gram = centred @ centred.T
    norms = gram.diagonal()
    distances = (norms[:, None] + norms[None, :] - 2.0 * gram).clamp_min(0.0)
    distances.fill_diagonal_(0.0)
    return distances


def krum_choice(distances: torch.Tensor, num_byzantine: int) -> int:
    """The row Krum selects: the lowest sum of squared distances to its n − f − 2 nearest other rows.

    At least one neighbour is counted (and at most n − 1); ties go to the lower index.

    Parameters
    ----------
    distances : torch.Tensor
        ``(n, n)`` squared distances.
    num_byzantine : int
        f.
    """
    count = len(distances)
    neighbours = min(max(1, count - num_byzantine - 2), count - 1)
    others = distances.clone()
    others.fill_diagonal_(float("inf"))
    scores = torch.sort(others, dim=1).values[:, :neighbours].sum(dim=1)
    return int(torch.sort(scores, stable=True).indices[0])


def lambda_bound(pairwise: torch.Tensor, norms: torch.Tensor, dimension: int, num_attackers: int) -> float:
    """The paper's upper bound λ_max on λ (see the module docstring) for the simulated round.

    Parameters
    ----------
    pairwise : torch.Tensor
        ``(k, k)`` squared distances between the reference updates.
    norms : torch.Tensor
        ``(k,)`` norms of the reference updates (their distances to the global model).
    dimension : int
        d, the number of coordinates.
    num_attackers : int
        c.
    """
    size = len(pairwise) + num_attackers
    root_d = math.sqrt(dimension)
    farthest = float(norms.max()) / root_d
    if size - 2 * num_attackers - 1 <= 0:
        return farthest
    distances = pairwise.sqrt()
    distances.fill_diagonal_(float("inf"))
    nearest = max(0, size - num_attackers - 2)
    sums = torch.sort(distances, dim=1).values[:, :nearest].sum(dim=1)
    return float(sums.min()) / ((size - 2 * num_attackers - 1) * root_d) + farthest


def supporter_offsets(num_attackers: int, dimension: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """``(c, d)`` offsets from w'_1: zero for the first attacker, uniform in the ball of ``radius`` for the others.

    Parameters
    ----------
    num_attackers : int
        c.
    dimension : int
        d.
    radius : float
        ε; 0 gives copies.
    generator : torch.Generator
        The round's generator (every draw comes from it).
    """
    offsets = torch.zeros(num_attackers, dimension, dtype=torch.float64)
    if radius == 0.0 or num_attackers < 2:
        return offsets
    directions = torch.randn(num_attackers - 1, dimension, generator=generator, dtype=torch.float64)
    directions /= torch.linalg.vector_norm(directions, dim=1, keepdim=True)
    radii = radius * torch.rand(num_attackers - 1, 1, generator=generator, dtype=torch.float64) ** (1.0 / dimension)
    offsets[1:] = radii * directions
    return offsets


@dataclass(frozen=True)
class FangKrum:
    """Fang's attack on Krum.

    Parameters
    ----------
    epsilon : float
        ε: the radius around the first attacker's update in which the others' updates lie.
    threshold : float
        The λ below which the halving stops (:data:`LAMBDA_THRESHOLD`).
    """

    epsilon: float
    threshold: float = LAMBDA_THRESHOLD

    def forge(self, view: AdversaryView) -> Forged:
        """The attackers' updates −λ s (+ e_i) and ``lambda``, ``lambda_bound``, ``krum_selected`` (see :class:`~clients.adversary.Adversary`).

        Without any reference update (an omniscient round without benign clients) the attackers
        send their honest updates and λ is recorded as 0.
        """
        reference = view.reference_updates().to(torch.float64)
        if len(reference) == 0:
            return Forged(
                view.own.to(torch.float64).clone(), {"lambda": 0.0, "lambda_bound": 0.0, "krum_selected": 0.0}
            )
        attackers, count = view.num_attackers, len(reference)
        direction = torch.sign(reference.mean(dim=0))
        offsets = supporter_offsets(attackers, reference.shape[1], self.epsilon, view.generator).to(reference.device)
        # ‖(−λs + e_a) − r_i‖² = λ²‖s‖² − 2λ⟨s, e_a − r_i⟩ + ‖e_a − r_i‖²; ‖(−λs + e_a) − (−λs + e_b)‖ = ‖e_a − e_b‖
        norms = torch.linalg.vector_norm(reference, dim=1)
        along = ((offsets @ direction)[:, None] - (reference @ direction)[None, :]).cpu()  # ⟨s, e_a − r_i⟩
        spread = (
            (offsets**2).sum(dim=1)[:, None] - 2.0 * (offsets @ reference.T) + (norms**2)[None, :]
        ).cpu()  # ‖e_a − r_i‖²
        length = float(direction @ direction)
        pairwise = squared_distances(reference).cpu()
        distances = torch.zeros(count + attackers, count + attackers, dtype=torch.float64)
        distances[:count, :count] = pairwise
        distances[count:, count:] = squared_distances(offsets).cpu()
        bound = lambda_bound(pairwise, norms.cpu(), reference.shape[1], attackers)
        scale = bound
        while True:
            across = (scale * scale * length - 2.0 * scale * along + spread).clamp_min(0.0)
            distances[count:, :count] = across
            distances[:count, count:] = across.T
            selected = krum_choice(distances, attackers) >= count
            if selected or scale < self.threshold:
                break
            scale /= 2.0
        updates = -scale * direction.unsqueeze(0) + offsets
        return Forged(updates, {"lambda": scale, "lambda_bound": bound, "krum_selected": float(selected)})


def fang_krum(context: AdversaryContext) -> FangKrum:
    """Fang's Krum attack with the run's ``fang-krum-epsilon``.

    Parameters
    ----------
    context : AdversaryContext
        The run's settings (see :class:`~clients.adversary.AdversaryContext`).
    """
    return FangKrum(context.config[FANG_KRUM_EPSILON])


ATTACK = AttackSpec(
    name="fang-krum",
    kind=MODEL_POISONING,
    summary="Minus lambda times the sign of the benign change, lambda halved until Krum selects it (Fang et al., 2020).",
    settings=(FANG_KRUM_EPSILON, ATTACK_KNOWLEDGE),
    adversary=fang_krum,
    knowledge=(OMNISCIENT, COLLUDING),
)
