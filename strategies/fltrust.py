"""FLTrust (Cao, Fang, Liu and Gong, "FLTrust: Byzantine-robust Federated Learning via Trust
Bootstrapping", NDSS 2021, §III, Algorithm 2).

The server holds a small clean root dataset and bootstraps its trust from it. Per round, with the
updates g_1 .. g_n of the round (``w_i − w_global``, as the defense sees them):

1. the server trains on its root dataset from the round's global model, with the clients' local
   training settings (epochs, batch size, optimizer, learning rate), and takes its own update g_0
   (:class:`fl_poison.core.root_dataset.RootTraining`);
2. trust score TS_i = ReLU(cos(g_i, g_0)) (float64, :mod:`strategies.cosine`; an update of norm 0
   has no direction and scores 0);
3. every update is rescaled to the server update's norm: ĝ_i = (‖g_0‖ / ‖g_i‖) · g_i;
4. the aggregate is Σ_i TS_i · ĝ_i / Σ_j TS_j (the clients' example counts play no part); when
   every score is 0 nothing is aggregated and the global model stays as it was.

The paper's global learning rate α multiplies the aggregate of gradients; with updates that are
model differences (the local learning rate already in them) the aggregate is applied as it is
(α = 1), as every other rule here applies its aggregate.

Decisions: a client with TS_i = 0 is rejected; the others are accepted with weight TS_i / Σ TS
and norm after ‖g_0‖ (the rescaling may lengthen a short update).

The root set (``fltrust-root-size`` rows, the paper's 100 by default) is held-out data drawn with
the run's seed, never a client's row; where it comes from and what the run then evaluates on is
described in :mod:`fl_poison.core.root_dataset` and recorded in ``config.json``. The ServerApp
provides the training (:attr:`strategies.spec.BuildContext.root_training`); building FLTrust
without it fails.
"""

from __future__ import annotations

import math

import torch

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import Setting, integer
from strategies.cosine import dots_with
from strategies.spec import (
    ACCEPTED,
    REJECTED,
    BuildContext,
    ClientDecision,
    Defense,
    DefenseSpec,
    Outcome,
    ServerUpdate,
)
from strategies.weighted_average import weighted_sum

NAME = "fltrust"
FLTRUST_ROOT_SIZE: Setting[int] = Setting(
    "fltrust-root-size",
    100,
    "Rows of fltrust's clean root dataset, drawn (seeded) from the held-out test split (recorded in config.json).",
    integer(1),
)


def trust_scores(updates: RoundUpdates, server_update: torch.Tensor) -> list[float]:
    """TS_i = ReLU(cos(g_i, g_0)) for every row (0 when g_i or g_0 has norm 0).

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates g_i (as seen: ``scale * matrix``).
    server_update : torch.Tensor
        g_0, float64 on ``updates.device``.
    """
    server_norm = float(torch.linalg.vector_norm(server_update))
    norms = updates.scaled_norms().tolist()
    dots = dots_with(updates, server_update).tolist()
    scores = []
    for dot, norm in zip(dots, norms, strict=True):
        cosine = dot / (norm * server_norm) if norm > 0 and server_norm > 0 else 0.0
        scores.append(max(0.0, min(1.0, cosine)) if math.isfinite(cosine) else 0.0)
    return scores


class FLTrust(Defense):
    """Trust-weighted mean of the updates rescaled to the server's own update.

    Parameters
    ----------
    server_update : ServerUpdate
        The server's update on its root dataset from a round's global model.
    root_size : int
        Rows of the root dataset (for the log).
    """

    def __init__(self, server_update: ServerUpdate, root_size: int) -> None:
        self.server_update = server_update
        self.root_size = root_size

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Score, rescale and average (see the module docstring)."""
        reference = self.server_update(updates.layout, updates.server_round).to(updates.device, torch.float64)
        server_norm = float(torch.linalg.vector_norm(reference))
        scores = trust_scores(updates, reference)
        total = math.fsum(scores)
        trusted = [row for row, score in enumerate(scores) if score > 0]
        decisions = tuple(
            ClientDecision(pid, ACCEPTED, server_norm, scores[row] / total)
            if row in trusted
            else ClientDecision(pid, REJECTED, 0.0, 0.0)
            for row, pid in enumerate(updates.partition_ids)
        )
        if not trusted:
            return Outcome(update=None, decisions=decisions, metric_rows=())
        norms = updates.scaled_norms().tolist()
        coefficients = [scores[row] / total * server_norm / norms[row] for row in trusted]
        return Outcome(
            update=weighted_sum(updates, trusted, coefficients), decisions=decisions, metric_rows=tuple(trusted)
        )

    def describe(self) -> str:
        """``fltrust (root set: N rows)``."""
        return f"fltrust (root set: {self.root_size} held-out rows)"


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """FLTrust with the server's update on a root set of ``fltrust-root-size`` rows.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Its ``root_training`` draws the root set and gives the server's update function.

    Raises
    ------
    ValueError
        When ``context`` has no ``root_training`` (the ServerApp always provides one).
    """
    if context.root_training is None:
        raise ValueError(
            "fltrust needs the server's training on a root dataset: build the strategy with root_training "
            "(the ServerApp provides it)"
        )
    size = config[FLTRUST_ROOT_SIZE]
    return FLTrust(context.root_training(size), size)


DEFENSE = DefenseSpec(
    name=NAME,
    kind=AGGREGATION_RULE,
    summary="Trust score ReLU(cos) with the server's update on a clean root set; updates rescaled to its norm (Cao et al., NDSS 2021).",
    settings=(FLTRUST_ROOT_SIZE,),
    build=build,
)
