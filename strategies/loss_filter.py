"""Loss-percentile filtering (seed 000 §2.3: loss-based anomaly detection).

Algorithm, per round:

1. collect the training loss every client reports;
2. the threshold is the ``loss-percentile`` (default 75th) percentile of those losses
   (``numpy.percentile``, linear interpolation);
3. drop the clients whose loss is above the threshold and average the rest with FedAvg.

Clients training on flipped labels report high losses; so do honest clients with hard (e.g.
strongly non-IID) data, which is why seed 000 found the filter helps on non-IID data and can hurt
on IID data. It trusts the reported loss: a lying attacker defeats it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.settings import Setting, number_in
from strategies.lab import ClientDecision, LabStrategy, weighted_decisions
from strategies.spec import BuildContext, DefenseSpec
from strategies.updates import reply_metric

LOSS_PERCENTILE: Setting[float] = Setting(
    "loss-percentile",
    75.0,
    "loss-filter drops clients whose reported loss is above this percentile of the round's losses.",
    number_in(0, 100, False, True),
)


def keep_below_percentile(losses: Sequence[float], percentile: float) -> list[bool]:
    """True for every loss at or below the ``percentile`` percentile of ``losses`` (NaN losses are dropped)."""
    values = np.asarray(losses, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [False] * len(values)
    threshold = np.percentile(finite, percentile)
    return [bool(np.isfinite(value) and value <= threshold) for value in values]


class LabLossFilter(LabStrategy, FedAvg):
    """FedAvg over the clients whose reported loss is not above a percentile of the round's losses.

    Parameters
    ----------
    loss_percentile : float
        The percentile in (0, 100] used as the threshold.
    sampler, round_log :
        See :class:`~strategies.lab.LabStrategy`.
    """

    def __init__(self, *, loss_percentile: float, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.loss_percentile = loss_percentile

    def defend(
        self, server_round: int, replies: Sequence[Message], reference: Mapping[str, np.ndarray]
    ) -> tuple[ArrayRecord | None, MetricRecord | None, list[ClientDecision]]:
        """Drop the high-loss clients; FedAvg over the rest."""
        keep = keep_below_percentile([reply_metric(m, "train_loss") for m in replies], self.loss_percentile)
        kept = [message for message, kept_flag in zip(replies, keep, strict=True) if kept_flag]
        decisions = weighted_decisions(self.round_log, replies, kept, self.weighted_by_key)
        if not kept:
            return None, None, decisions
        contents = [message.content for message in kept]
        return (
            aggregate_arrayrecords(contents, self.weighted_by_key),
            self.train_metrics_aggr_fn(contents, self.weighted_by_key),
            decisions,
        )


def build(config: ExperimentConfig, context: BuildContext) -> LabStrategy:
    """The loss filter with ``loss-percentile`` from ``config``."""
    return LabLossFilter(sampler=context.sampler, round_log=context.round_log, loss_percentile=config[LOSS_PERCENTILE])


DEFENSE = DefenseSpec(
    name="loss-filter",
    kind=AGGREGATION_RULE,
    summary="FedAvg over the clients whose reported training loss is not above a percentile of the round's.",
    settings=(LOSS_PERCENTILE,),
    build=build,
)
