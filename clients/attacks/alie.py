"""A Little Is Enough (ALIE): every attacker sends the reference updates' mean shifted by z standard deviations.

Paper: Moran Baruch, Gilad Baruch and Yoav Goldberg, 2019, "A Little Is Enough: Circumventing
Defenses For Distributed Learning" (NeurIPS), §3 and Algorithm 1. The attackers estimate, per
coordinate j, the mean μ_j and standard deviation σ_j of the honest updates and all send

    p_j = μ_j − z · σ_j,

a small shift that stays within the spread of the benign updates, so that median, trimmed-mean
and Krum-like rules do not tell the attackers apart, while the shift accumulates over rounds.
The largest z that keeps enough benign "supporters" beyond the attackers' value (Algorithm 1,
steps 1-2), for n updates of which f are the attackers':

1. s = ⌊n/2 + 1⌋ − f, the benign updates that must lie farther from the mean than the attackers;
2. z = Φ⁻¹((n − s)/n), Φ the standard normal CDF.

Conventions of this lab, and how they compare with the references:

- n is the number of updates the defense receives in the round (the round's replies that are not
  error replies, :attr:`~clients.adversary.AdversaryView.num_sampled`) and f the attackers of the
  round; both change with client sampling, so z is computed per round (and recorded as
  ``adversary_z``). Blades and FLPoison use Φ⁻¹((n − f − s)/(n − f)) instead of the paper's
  (n − s)/n; ByzFL takes z as a fixed ``tau`` (default 1.5, the authors' code's default ``num_std``).
- When the attackers alone are a majority (s ≤ 0) the formula gives z = ∞; s is then taken as 1,
  i.e. z = Φ⁻¹((n − 1)/n), and z is never below 0 (n = f = 1 gives z = 0).
- σ is the sample standard deviation (divisor k − 1 over the k reference updates), as ByzFL's
  ``ALittleIsEnough`` (``ddof=1``); FLPoison uses the population one (divisor k), the paper does
  not say. With a single reference update σ = 0 and the attackers send the mean.
- The shift is μ − zσ; ByzFL and FLPoison send μ + zσ. Both lie at the edge of the range
  (μ_j − zσ_j, μ_j + zσ_j) the paper derives; the sign only chooses the side. ``alie-z`` = a
  number fixes z instead of the formula.
- Knowledge: ``colluding`` (the paper's setting: the attackers estimate μ and σ from their own
  honestly trained updates) or ``omniscient`` (from the benign updates of the round).

A model-poisoning attack: the attackers train honestly in the ClientApp and the server-side
adversary stage (simulation only) replaces their updates (:mod:`clients.adversary_stage`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch

from clients.adversary import COLLUDING, OMNISCIENT, AdversaryContext, AdversaryView, Forged
from clients.spec import AttackSpec
from fl_poison.core.catalogue import MODEL_POISONING
from fl_poison.core.settings import Setting, auto_or, non_negative_number

ALIE_Z = Setting(
    "alie-z",
    "auto",
    "ALIE's shift in standard deviations (mean - z * std per coordinate); auto = the paper's "
    "z = inverse normal CDF of (n - s) / n with s = floor(n / 2 + 1) - f, per round.",
    auto_or(non_negative_number, "a number >= 0"),
)


def supporters(num_updates: int, num_attackers: int) -> int:
    """``s = ⌊n/2 + 1⌋ − f``: the benign updates ALIE needs beyond its value (Algorithm 1, step 1).

    Parameters
    ----------
    num_updates : int
        ``n``, the updates the defense receives.
    num_attackers : int
        ``f``, the attackers among them.
    """
    return math.floor(num_updates / 2 + 1) - num_attackers


def alie_z(num_updates: int, num_attackers: int) -> float:
    """The paper's z = Φ⁻¹((n − s)/n) (Algorithm 1, step 2), with s at least 1 and z at least 0.

    Parameters
    ----------
    num_updates : int
        ``n``, the updates the defense receives (at least 1).
    num_attackers : int
        ``f``, the attackers among them.
    """
    s = max(supporters(num_updates, num_attackers), 1)
    probability = (num_updates - s) / num_updates
    return NormalDist().inv_cdf(probability) if probability > 0.5 else 0.0


def coordinate_std(rows: torch.Tensor) -> torch.Tensor:
    """The per-coordinate sample standard deviation (divisor k − 1) of ``rows``; zeros for a single row.

    Parameters
    ----------
    rows : torch.Tensor
        ``(k, d)``.
    """
    if rows.shape[0] < 2:
        return torch.zeros(rows.shape[1], dtype=rows.dtype)
    return rows.std(dim=0, correction=1)


@dataclass(frozen=True)
class ALittleIsEnough:
    """Forges ``μ − z σ`` of the reference updates for every attacker.

    Parameters
    ----------
    z : float | None
        The shift in standard deviations; None for the paper's per-round formula (:func:`alie_z`).
    """

    z: float | None

    def forge(self, view: AdversaryView) -> Forged:
        """The attackers' updates (see :class:`~clients.adversary.Adversary`).

        Parameters
        ----------
        view : AdversaryView
            The round as the knowledge level shows it.
        """
        reference = view.reference_updates()
        if reference.shape[0] == 0:  # omniscient with no benign reply: the attackers' own updates
            reference = view.own
        z = self.z if self.z is not None else alie_z(view.num_sampled, view.num_attackers)
        forged = reference.mean(dim=0) - z * coordinate_std(reference)
        return Forged(forged.expand(view.num_attackers, -1).clone(), {"z": z})


def alie(context: AdversaryContext) -> ALittleIsEnough:
    """ALIE with ``alie-z`` (None for ``auto``).

    Parameters
    ----------
    context : AdversaryContext
        The run's settings and threat model.
    """
    return ALittleIsEnough(context.config[ALIE_Z])


ATTACK = AttackSpec(
    name="alie",
    kind=MODEL_POISONING,
    summary="A Little Is Enough: mean - z * std of the reference updates per coordinate (Baruch et al., 2019).",
    settings=(ALIE_Z,),
    adversary=alie,
    knowledge=(COLLUDING, OMNISCIENT),
)
