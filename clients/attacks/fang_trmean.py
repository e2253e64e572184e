"""Fang's attack on trimmed mean and median: every coordinate pushed just beyond the benign extreme, against its direction of change.

Paper: Fang, Cao, Jia and Gong, 2020, "Local Model Poisoning Attacks to Byzantine-Robust Federated
Learning" (USENIX Security), §4.3 "Attacking Trimmed Mean" and "Attacking Median" (the same
attack). Adaptive to a named rule: it is tailored to coordinate-wise trimmed mean and median (Yin
et al., 2018) and, through them, to Bulyan's second stage; it runs against any rule.

**Full knowledge** (``omniscient``, the paper's default). The paper works on model parameters:
with s_j the sign of the change of parameter j without attack and w_max,j / w_min,j the largest /
smallest j-th parameter of the benign local models, each attacker samples its j-th parameter
uniformly from [w_max,j, b·w_max,j] (w_max,j > 0) or [w_max,j / b, w_max,j] (w_max,j ≤ 0) when
s_j = −1, and from [w_min,j / b, w_min,j] (w_min,j > 0) or [b·w_min,j, w_min,j] (w_min,j ≤ 0) when
s_j = 1, with b = 2 (``fang-b``). Every interval lies on the far side of the benign extreme
opposite to s_j, at most a factor b farther from 0, so that the c attackers' values are what
trimming removes on that side while the benign values left in are pushed against s_j.

In update space (update = local model − global model, as the adversary stage works) the same
rule is applied to the benign *updates*: u_max,j / u_min,j the largest / smallest j-th coordinate
of the reference updates and s_j = sign of their mean (the estimated change of parameter j):

- s_j < 0: uniform in [u_max,j, b·u_max,j] if u_max,j > 0, else in [u_max,j, u_max,j / b];
- s_j ≥ 0: uniform in [u_min,j / b, u_min,j] if u_min,j > 0, else in [b·u_min,j, u_min,j]

(intervals written low end first: the paper's [w_max,j / b, w_max,j] for w_max,j ≤ 0 is the same
segment as [w_max,j, w_max,j / b]).

This is not the parameter rule moved by the global model (b·w_max,j scales the parameter, b·u_max,j
the change; the two agree only where the global parameter is 0), but it keeps what the attack
rests on: every value lies beyond the benign extreme opposite to s_j, at most b times as far from
the global model as that extreme, whatever the global parameter's value (in model space, a value
of b·w_max,j is far or near depending on where the model happens to sit). A coordinate with
s_j = 0 (mean exactly 0) is pushed down.

**Partial knowledge** (``colluding``, the paper's own variant). The attackers estimate the mean
μ_j and the standard deviation σ_j (population) of every coordinate from their own honest updates
and s_j from the sign of μ_j; each samples uniformly from [μ_j + 3σ_j, μ_j + 4σ_j] when s_j < 0
and from [μ_j − 4σ_j, μ_j − 3σ_j] otherwise (the paper: the benign extremes are likely within
these bands). Shifting all models by the global model moves μ_j and leaves σ_j, so this variant
reads the same in update space as in the paper.

Every attacker draws its own values (independent uniforms from the round's generator). Nothing
is chosen per round beyond the draw: ``parameters`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.adversary import ATTACK_KNOWLEDGE, COLLUDING, OMNISCIENT, AdversaryContext, AdversaryView, Forged
from clients.spec import AttackSpec
from fl_poison.core.catalogue import MODEL_POISONING
from fl_poison.core.settings import Setting, number_in

PARTIAL_LOW, PARTIAL_HIGH = 3.0, 4.0  # the paper's band [3σ, 4σ] beyond the mean, for partial knowledge

FANG_B = Setting(
    "fang-b",
    2.0,
    "fang-trmean (omniscient): attackers' values lie between the benign extreme and b times it (b > 1).",
    number_in(1.0, float("inf"), False, False),
)


def full_knowledge_intervals(reference: torch.Tensor, b: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate, the interval ``(low, high)``, low ≤ high, the attackers sample from with full knowledge.

    Parameters
    ----------
    reference : torch.Tensor
        ``(k, d)`` benign updates, k ≥ 1.
    b : float
        The paper's b > 1.
    """
    rows = reference.to(torch.float64)
    largest, smallest = rows.max(dim=0).values, rows.min(dim=0).values
    push_up = rows.mean(dim=0) < 0  # s_j = −1: beyond the largest value
    above_high = torch.where(largest > 0, b * largest, largest / b)
    below_low = torch.where(smallest > 0, smallest / b, b * smallest)
    return torch.where(push_up, largest, below_low), torch.where(push_up, above_high, smallest)


def partial_knowledge_intervals(own: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate, the interval ``(low, high)`` the attackers sample from with partial knowledge.

    Parameters
    ----------
    own : torch.Tensor
        ``(c, d)`` the attackers' honest updates, c ≥ 1.
    """
    rows = own.to(torch.float64)
    mean, deviation = rows.mean(dim=0), rows.std(dim=0, correction=0)
    push_up = mean < 0
    low = torch.where(push_up, mean + PARTIAL_LOW * deviation, mean - PARTIAL_HIGH * deviation)
    high = torch.where(push_up, mean + PARTIAL_HIGH * deviation, mean - PARTIAL_LOW * deviation)
    return low, high


@dataclass(frozen=True)
class FangTrimmedMean:
    """Fang's attack on trimmed mean and median.

    Parameters
    ----------
    b : float
        The paper's b (full knowledge only).
    """

    b: float

    def forge(self, view: AdversaryView) -> Forged:
        """One draw per attacker and coordinate from the coordinate's interval (see :class:`~clients.adversary.Adversary`).

        The interval follows the view's knowledge: the benign updates' extremes when omniscient,
        the attackers' own mean ± 3..4 standard deviations otherwise. Without any benign update
        (an omniscient round without benign clients) the attackers send their honest updates.
        """
        if view.benign is not None:
            if len(view.benign) == 0:
                return Forged(view.own.to(torch.float64).clone(), {})
            low, high = full_knowledge_intervals(view.benign, self.b)
        else:
            low, high = partial_knowledge_intervals(view.own)
        draws = torch.rand(view.num_attackers, len(low), generator=view.generator, dtype=torch.float64)
        draws = draws.to(low.device)
        return Forged(low + draws * (high - low), {})


def fang_trmean(context: AdversaryContext) -> FangTrimmedMean:
    """Fang's trimmed-mean attack with the run's ``fang-b``.

    Parameters
    ----------
    context : AdversaryContext
        The run's settings (see :class:`~clients.adversary.AdversaryContext`).
    """
    return FangTrimmedMean(context.config[FANG_B])


ATTACK = AttackSpec(
    name="fang-trmean",
    kind=MODEL_POISONING,
    summary="Every coordinate just beyond the benign extreme against its direction of change, aimed at trimmed mean and median (Fang et al., 2020).",
    settings=(FANG_B, ATTACK_KNOWLEDGE),
    adversary=fang_trmean,
    knowledge=(OMNISCIENT, COLLUDING),
)
