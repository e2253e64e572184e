"""Norm-difference clipping (Sun et al., 2019, "Can You Really Backdoor Federated Learning?";
seed 001 §2.3.2, seed 004 §III-C2).

Algorithm, per round:

1. take every update Δ_k = w_k − w_global and its L2 norm (float64, from the decoding);
2. the bound M is ``clip-norm``, or with ``auto`` the median update norm of the round (the mean
   of the two middle norms for an even number of clients);
3. every update with ‖Δ_k‖ > M is scaled to Δ_k · M / ‖Δ_k‖ (a factor on its row, applied in
   float64 by the wrapped rule; the recorded norm after clipping never exceeds M); the others
   are left alone;
4. the clipped updates go to the wrapped rule (``clip-wrap``: FedAvg by default, or any other
   registered defense, whose own checks then apply), so clipping can be put in front of Krum,
   the median, etc.

A clipped update that the wrapped rule accepts counts as a detection in the forensics
(``decision = clipped``); every client's row records the bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fl_poison.core.catalogue import PRE_AGGREGATOR, Catalogue
from fl_poison.core.config import ExperimentConfig, algorithm_name
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import Setting, auto_or, positive_number
from strategies.spec import ACCEPTED, CLIPPED, BuildContext, Defense, DefenseSpec, Outcome
from strategies.wrapping import check_wrapped_rule

NAME = "norm-clip"
CLIP_NORM: Setting[float | None] = Setting(
    "clip-norm",
    "auto",
    "Norm bound of norm-clip; auto = the median update norm of the round.",
    auto_or(positive_number, "a number > 0"),
)
CLIP_WRAP: Setting[str] = Setting(
    "clip-wrap",
    "fedavg",
    "Strategy that aggregates the clipped updates of norm-clip: any other registered strategy.",
    algorithm_name,
)


def clipping_bound(norms: Sequence[float], configured: float | None) -> float:
    """``configured``, or the median of ``norms`` when it is None (``clip-norm=auto``).

    Parameters
    ----------
    norms : Sequence[float]
        The round's update norms.
    configured : float | None
        The ``clip-norm`` setting.
    """
    return float(configured) if configured is not None else float(np.median(np.asarray(norms, dtype=np.float64)))


def clipped_scale(scale: torch.Tensor, norms: torch.Tensor, bound: float) -> torch.Tensor:
    """Row factors after clipping rows whose norm ``scale * norms`` exceeds ``bound`` down to it.

    A clipped row's factor is ``scale * bound / (scale * norms)``, lowered by an ulp at a time
    while ``factor * norms`` (the norm a rule sees) is still above ``bound``; other rows keep
    their factor.

    Parameters
    ----------
    scale : torch.Tensor
        The current float64 row factors.
    norms : torch.Tensor
        The float64 norms of the unscaled rows.
    bound : float
        The clipping bound M > 0.
    """
    seen = scale * norms
    long_rows = seen > bound
    factors = torch.where(long_rows, scale * (bound / seen), scale)
    too_long = long_rows & (factors * norms > bound)
    while bool(torch.any(too_long)):
        factors = torch.where(too_long, torch.nextafter(factors, torch.zeros_like(factors)), factors)
        too_long = long_rows & (factors * norms > bound)
    return factors


class NormClip(Defense):
    """Clip every update to a norm bound, then aggregate with a wrapped rule.

    Parameters
    ----------
    clip_norm : float | None
        The bound M; None = the median update norm of each round.
    inner : Defense
        The rule that aggregates the clipped updates.
    """

    def __init__(self, clip_norm: float | None, inner: Defense) -> None:
        self.clip_norm = clip_norm
        self.inner = inner

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Clip, let the wrapped rule aggregate, mark the clipped updates it accepted and record the bound."""
        seen = updates.scaled_norms()
        bound = clipping_bound(seen.tolist(), self.clip_norm)
        clipped = updates.rescaled(clipped_scale(updates.scale, updates.norms, bound))
        was_clipped = (seen > bound).tolist()
        outcome = self.inner.aggregate(clipped)
        decisions = tuple(
            dataclasses.replace(
                decision,
                decision=CLIPPED if decision.decision == ACCEPTED and long_row else decision.decision,
                bound=bound,
            )
            for decision, long_row in zip(outcome.decisions, was_clipped, strict=True)
        )
        return dataclasses.replace(outcome, decisions=decisions)

    def train_config(self) -> Mapping[str, bool | int | float | str]:
        """The wrapped rule's train config entries."""
        return self.inner.train_config()

    def describe(self) -> str:
        """The bound and the wrapped rule."""
        bound = "median of the round" if self.clip_norm is None else f"{self.clip_norm:g}"
        return f"norm clipping (bound: {bound}) in front of {self.inner.describe()}"


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """``clip-wrap`` names another registered defense (no loop of wrapped rules), whose own checks then apply.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        The registered defenses.
    """
    check_wrapped_rule(config, catalogue, NAME, CLIP_WRAP)


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """Norm clipping with ``clip-norm`` in front of the ``clip-wrap`` rule.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Builds the wrapped rule.
    """
    return NormClip(config[CLIP_NORM], context.wrapped(config[CLIP_WRAP]))


DEFENSE = DefenseSpec(
    name=NAME,
    kind=PRE_AGGREGATOR,
    summary="Scales every update longer than a bound down to it, then aggregates with clip-wrap (Sun et al., 2019).",
    settings=(CLIP_NORM, CLIP_WRAP),
    check=check,
    build=build,
    wraps=CLIP_WRAP,
)
