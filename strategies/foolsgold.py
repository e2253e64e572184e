"""FoolsGold (Fung, Yoon and Beschastnikh, "The Limitations of Federated Learning in Sybil Settings",
RAID 2020, §5, Algorithm 1).

Sybils pursuing one poisoning objective send updates that point the same way round after round;
honest clients with different data do not. FoolsGold keeps every client's history and lowers the
weight of clients whose histories are too alike. Per round, with the updates Δ_i of the round:

1. history H_i ← H_i + Δ_i for every client of the round (float64, on the aggregation device;
   clients not drawn this round keep theirs; the defense object lives for the whole run);
2. cs_ij = cos(H_i, H_j) between the histories of every client seen so far (those of this round
   and earlier ones: a sybil is recognised by a partner's history even when the partner is not
   drawn this round; with every client drawn every round, as in the paper, this is the paper's
   computation), with cs_ii = 0, and v_i = max_j cs_ij (so v_i ≥ 0: the reference implementation's
   ``cs − I``);
3. pardoning: cs_ij ← cs_ij · v_i / v_j wherever v_j > v_i;
4. α_i = 1 − max_j cs_ij, clipped to [0, 1], for the clients of this round;
5. α ← α / max(α) (all zero: nothing is aggregated and the global model stays as it was);
6. logit with confidence κ (``foolsgold-confidence``): α_i ← κ (ln(α_i / (1 − α_i)) + 0.5),
   clipped to [0, 1] (α_i = 1 gives +∞, hence 1; α_i = 0 gives −∞, hence 0);
7. the aggregate is the α-weighted mean Σ α_i Δ_i / Σ α_i of this round's updates. The paper's
   Algorithm 1 returns the weighted sum of gradients, scaled by the learning rate; with updates
   that are model differences the sum would multiply the step by about n, so the weights are
   normalised. Example counts play no part.

Features (``foolsgold-features``): ``all`` compares whole updates; ``output-layer`` compares only
the output layer's weight matrix (the last float array of two or more dimensions, the classifier's
weights in this project's models), the paper's "indicative features" of the output layer without
its importance weighting, which also keeps the history small (the whole-update history costs
8 × d bytes per client: 94 MB for a ResNet-18).

Decisions: weight α_i / Σ α (accepted); rejected when α_i = 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates, UpdateLayout
from fl_poison.core.settings import Setting, choice, positive_number
from strategies.cosine import cosine_from_gram, matrix_gram
from strategies.spec import ACCEPTED, REJECTED, BuildContext, ClientDecision, Defense, DefenseSpec, Outcome
from strategies.weighted_average import weighted_sum

NAME = "foolsgold"
ALL_FEATURES, OUTPUT_LAYER = "all", "output-layer"
FOOLSGOLD_CONFIDENCE: Setting[float] = Setting(
    "foolsgold-confidence",
    1.0,
    "Confidence kappa of foolsgold's logit weighting: weight = clip(kappa * (ln(a / (1 - a)) + 0.5), 0, 1).",
    positive_number,
)
FOOLSGOLD_FEATURES: Setting[str] = Setting(
    "foolsgold-features",
    ALL_FEATURES,
    "What foolsgold compares: all = whole updates, output-layer = the output layer's weights (the paper's features).",
    choice(ALL_FEATURES, OUTPUT_LAYER),
)


def foolsgold_weights(similarities: np.ndarray, rows: Sequence[int], confidence: float) -> np.ndarray:
    """Steps 2-6 of the module docstring: the weights α of ``rows`` from the histories' cosine similarities.

    Parameters
    ----------
    similarities : np.ndarray
        ``(m, m)`` cosine similarities between the histories of every client seen so far.
    rows : Sequence[int]
        The positions of this round's clients among them.
    confidence : float
        κ > 0.
    """
    cs = np.array(similarities, dtype=np.float64)
    np.fill_diagonal(cs, 0.0)
    largest = cs.max(axis=1)
    ratio = np.divide(largest[:, None], largest[None, :], out=np.ones_like(cs), where=largest[None, :] > 0)
    pardoned = np.where(largest[None, :] > largest[:, None], cs * ratio, cs)
    np.fill_diagonal(pardoned, 0.0)
    alpha = np.clip(1.0 - pardoned.max(axis=1), 0.0, 1.0)[list(rows)]
    top = alpha.max() if len(alpha) else 0.0
    if top <= 0:
        return np.zeros(len(alpha))
    alpha = alpha / top
    with np.errstate(divide="ignore"):
        logit = np.log(alpha) - np.log1p(-alpha)
    return np.clip(confidence * (logit + 0.5), 0.0, 1.0)


def output_layer_columns(layout: UpdateLayout) -> tuple[int, int]:
    """The coordinates of the last float array with two or more dimensions (all of them when there is none).

    Parameters
    ----------
    layout : UpdateLayout
        The round's layout.
    """
    matrices = [slot for slot in layout.slots if len(slot.shape) >= 2]
    if not matrices:
        return 0, layout.size
    return matrices[-1].start, matrices[-1].stop


class FoolsGold(Defense):
    """Weights from the dissimilarity of the clients' histories of updates, with pardoning and a logit.

    Parameters
    ----------
    confidence : float
        κ of the logit.
    features : str
        ``all`` or ``output-layer`` (see the module docstring).
    capacity : int
        Clients the history has room for before it grows (the run's number of clients).
    """

    def __init__(self, confidence: float, features: str, capacity: int) -> None:
        self.confidence = confidence
        self.features = features
        self.capacity = max(1, capacity)
        self.history: torch.Tensor | None = None
        self.position: dict[int, int] = {}
        self.columns: tuple[int, int] = (0, 0)

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Add the round to the histories, weigh this round's clients and take the weighted mean."""
        history, rows = self._record(updates)
        similarities = np.nan_to_num(cosine_from_gram(matrix_gram(history[: len(self.position)])).numpy(), nan=0.0)
        weights = foolsgold_weights(similarities, rows, self.confidence).tolist()
        total = math.fsum(weights)
        kept = [row for row, weight in enumerate(weights) if weight > 0]
        norms = updates.scaled_norms().tolist()
        decisions = tuple(
            ClientDecision(pid, ACCEPTED, norms[row], weights[row] / total)
            if weights[row] > 0
            else ClientDecision(pid, REJECTED, 0.0, 0.0)
            for row, pid in enumerate(updates.partition_ids)
        )
        if not kept:
            return Outcome(update=None, decisions=decisions, metric_rows=())
        shares = [weights[row] / total for row in kept]
        return Outcome(update=weighted_sum(updates, kept, shares), decisions=decisions, metric_rows=tuple(kept))

    def _record(self, updates: RoundUpdates) -> tuple[torch.Tensor, list[int]]:
        """Add every row to its client's history; the histories and the clients' positions in them, in row order."""
        start, stop = output_layer_columns(updates.layout) if self.features == OUTPUT_LAYER else (0, updates.size)
        history = self.history
        if history is None:
            self.columns = (start, stop)
            history = torch.zeros((self.capacity, stop - start), dtype=torch.float64, device=updates.device)
        elif self.columns != (start, stop) or history.device != updates.device:
            raise ValueError(
                f"foolsgold's histories hold coordinates {self.columns} on {history.device}; "
                f"this round's updates {(start, stop)} on {updates.device}"
            )
        positions = []
        for pid in updates.partition_ids:
            if pid not in self.position:
                if len(self.position) == len(history):
                    history = torch.cat([history, torch.zeros_like(history)])
                self.position[pid] = len(self.position)
            positions.append(self.position[pid])
        index = torch.tensor(positions, dtype=torch.long, device=updates.device)
        for block_start, block_stop, values in updates.blocks():
            low, high = max(block_start, start), min(block_stop, stop)
            if low < high:
                history[:, low - start : high - start].index_add_(
                    0, index, values[:, low - block_start : high - block_start]
                )
        self.history = history
        return history, positions

    def describe(self) -> str:
        """``foolsgold (kappa=..., features=...)``."""
        return f"foolsgold (kappa={self.confidence:g}, features: {self.features})"


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """FoolsGold with ``foolsgold-confidence`` and ``foolsgold-features``, room for ``num-clients`` histories.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return FoolsGold(config[FOOLSGOLD_CONFIDENCE], config[FOOLSGOLD_FEATURES], config.num_clients)


DEFENSE = DefenseSpec(
    name=NAME,
    kind=AGGREGATION_RULE,
    summary="Weights from how unlike each client's history of updates is to the others' (cosine, pardoning, logit; Fung et al., RAID 2020).",
    settings=(FOOLSGOLD_CONFIDENCE, FOOLSGOLD_FEATURES),
    build=build,
)
