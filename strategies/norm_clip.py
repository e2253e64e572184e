"""Norm-difference clipping (Sun et al., 2019, "Can You Really Backdoor Federated Learning?";
seed 001 §2.3.2, seed 004 §III-C2).

Algorithm, per round:

1. compute every update Δ_k = w_k − w_global (float64) and its L2 norm;
2. the bound M is ``clip-norm``, or with ``auto`` the median update norm of the round;
3. every update with ‖Δ_k‖ > M is scaled to Δ_k · M / ‖Δ_k‖ (norm exactly M); the others are
   left alone;
4. the clipped updates go to the wrapped strategy (``clip-wrap``, FedAvg by default; any other
   registered defense), so clipping can be put in front of Krum, the median, etc.

A clipped update counts as a detection in the forensics (``decision = clipped``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg

from fl_poison.core.catalogue import PRE_AGGREGATOR, Catalogue
from fl_poison.core.config import ExperimentConfig, algorithm_name
from fl_poison.core.settings import ConfigError, Setting, auto_or, positive_number
from strategies.lab import ClientDecision, LabStrategy
from strategies.spec import BuildContext, DefenseSpec
from strategies.updates import replace_update, row_norms, update_matrix

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


def clip_rows(updates: np.ndarray, bound: float) -> np.ndarray:
    """Each row scaled down to L2 norm ``bound`` when longer; shorter rows unchanged.

    A clipped row's float64 norm never exceeds ``bound``: when rounding leaves it one ulp above,
    the factor is nudged down until it does not.
    """
    clipped = np.array(updates, dtype=np.float64, copy=True)
    for index, norm in enumerate(row_norms(clipped)):
        if norm <= bound:
            continue
        row = clipped[index]
        factor = bound / norm
        while row_norms(row[None, :] * factor)[0] > bound:
            factor = float(np.nextafter(factor, 0.0))
        clipped[index] = row * factor
    return clipped


def clipping_bound(norms: np.ndarray, configured: float | None) -> float:
    """``configured``, or the median of ``norms`` when it is None (``clip-norm=auto``)."""
    return float(configured) if configured is not None else float(np.median(norms))


class LabNormClip(LabStrategy, FedAvg):
    """Clip every update to a norm bound, then aggregate with a wrapped strategy.

    Parameters
    ----------
    clip_norm : float | None
        The bound M; None = the median update norm of each round.
    inner : LabStrategy
        The strategy that aggregates the clipped updates (it shares this strategy's round log).
    sampler, round_log :
        See :class:`~strategies.lab.LabStrategy`.
    """

    def __init__(self, *, clip_norm: float | None, inner: LabStrategy, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.clip_norm = clip_norm
        self.inner = inner

    def defend(
        self, server_round: int, replies: Sequence[Message], reference: Mapping[str, np.ndarray]
    ) -> tuple[ArrayRecord | None, MetricRecord | None, list[ClientDecision]]:
        """Clip in place, let the inner strategy aggregate, mark clipped updates."""
        updates = update_matrix(replies, reference)
        norms = row_norms(updates)
        bound = clipping_bound(norms, self.clip_norm)
        clipped = clip_rows(updates, bound)
        for message, update in zip(replies, clipped, strict=True):
            replace_update(message, reference, update)
        arrays, metrics, inner_decisions = self.inner.defend(server_round, replies, reference)
        decisions = []
        for decision, before, after in zip(inner_decisions, norms, row_norms(clipped), strict=True):
            was_clipped = before > bound
            kind = decision.decision
            if kind == "accepted" and was_clipped:
                kind = "clipped"
            norm_after = float(after) if decision.decision != "rejected" else 0.0
            decisions.append(ClientDecision(decision.partition_id, kind, norm_after, decision.weight, bound))
        return arrays, metrics, decisions

    def summary(self) -> None:
        """Log the clipping settings, then the wrapped strategy's."""
        bound = "median of the round" if self.clip_norm is None else f"{self.clip_norm:g}"
        print(f"[fl-poison] norm clipping (bound: {bound}) in front of {type(self.inner).__name__}")
        self.inner.summary()


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """``clip-wrap`` names another registered defense, whose own checks then apply."""
    wrapped = config[CLIP_WRAP]
    allowed = [name for name in catalogue.defense_names() if name != NAME]
    if wrapped not in allowed:
        raise ConfigError.bad_value(CLIP_WRAP.key, wrapped, " | ".join(allowed))
    inner = catalogue.defense(wrapped)
    if inner.check is not None:
        inner.check(config, catalogue)


def build(config: ExperimentConfig, context: BuildContext) -> LabStrategy:
    """Norm clipping with ``clip-norm`` in front of the ``clip-wrap`` strategy."""
    return LabNormClip(
        sampler=context.sampler,
        round_log=context.round_log,
        clip_norm=config[CLIP_NORM],
        inner=context.wrapped(config[CLIP_WRAP]),
    )


DEFENSE = DefenseSpec(
    name=NAME,
    kind=PRE_AGGREGATOR,
    summary="Scales every update longer than a bound down to it, then aggregates with clip-wrap (Sun et al., 2019).",
    settings=(CLIP_NORM, CLIP_WRAP),
    check=check,
    build=build,
)
