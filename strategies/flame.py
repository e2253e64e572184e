"""FLAME, the backdoor defense (Nguyen et al., "FLAME: Taming Backdoors in Federated Learning", USENIX
Security 2022, §4, Algorithm 1).

Not the FLAME of the ADA paper (seed 004): that one is an attack step of the ``ada`` attack
(:mod:`clients.attacks.ada`), unrelated to this aggregation rule, which the ``strategy`` value
``flame`` selects.

Algorithm, per round, with the n updates W_i − G_{t−1} of the round (as the defense sees them):

1. **Clustering.** Pairwise cosine distances c_ij = 1 − cos(Δ_i, Δ_j) (float64,
   :mod:`strategies.cosine`) go to HDBSCAN (scikit-learn's ``sklearn.cluster.HDBSCAN``,
   ``metric="precomputed"``, ``min_cluster_size = n // 2 + 1``, ``min_samples = 1``, as in the
   paper, and ``allow_single_cluster=True``: the majority is one cluster, which HDBSCAN's default
   cluster selection never returns). The models of the largest cluster are admitted, the others
   rejected. With a majority minimum size there is at most one cluster; when HDBSCAN labels every
   update as noise (no majority agrees) every update is admitted, as in the public
   reimplementations, and the clipping and the noise below still bound each one's influence. One
   update alone is admitted without clustering. HDBSCAN labels the points of a single cluster only
   if they stay in it until it shrinks below ``min_cluster_size`` (scikit-learn's ``_do_labelling``,
   as in the ``hdbscan`` package), so the admitted set is often the bare majority n // 2 + 1 even
   when every update is benign (measured: 7 of 12 in 59 % of the rounds on digits, 78 % on MNIST).
   The paper clusters the local models W_i; their cosines are those of the updates shifted by the
   common G_{t−1}, which dominates every model and squeezes all angles near 0, so the updates are
   clustered here.
2. **Adaptive clipping.** S_t is the median of the Euclidean distances e_i = ‖W_i − G_{t−1}‖ of
   *all* n models (numpy's median: the mean of the two middle ones for even n); every admitted
   update is scaled by min(1, S_t / e_i) (:func:`strategies.norm_clip.clipped_scale`: its norm
   after clipping never exceeds S_t).
3. **Aggregation.** The mean (unweighted, as in the paper) of the clipped admitted updates.
4. **Adaptive noise.** Gaussian noise N(0, σ²), σ = λ · S_t, is added to every float coordinate of
   the aggregate (λ: ``flame-lambda``; default 0.001, the default of BackFed's reimplementation).
   The noise is drawn on the CPU (so that it does not depend on the device) from a generator
   seeded by the run's ``seed`` and the round.

Decisions: rejected (outside the cluster), clipped (admitted and scaled down), accepted (admitted
as it was); weight 1 / (number admitted); every row records S_t as its bound. The round's row of
``rounds.csv`` records the admitted count (``defense_majority_size``), S_t
(``defense_clipping_bound``) and σ (``defense_noise_sd``).
"""

from __future__ import annotations

import numpy as np
import torch

from fl_poison.core.catalogue import AGGREGATION_RULE
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import Setting, non_negative_number
from strategies.cosine import cosine_from_gram, update_gram
from strategies.norm_clip import clipped_scale
from strategies.spec import ACCEPTED, CLIPPED, REJECTED, BuildContext, ClientDecision, Defense, DefenseSpec, Outcome
from strategies.weighted_average import weighted_sum

NAME = "flame"
FLAME_LAMBDA: Setting[float] = Setting(
    "flame-lambda",
    0.001,
    "Noise level of the flame defense: Gaussian noise of sd flame-lambda x (median update norm) on every coordinate; 0 = none.",
    non_negative_number,
)
NOISE_SALT = 6841


def majority_cluster(distances: np.ndarray) -> list[int]:
    """The rows of HDBSCAN's largest cluster over precomputed distances; every row when it finds none.

    Parameters
    ----------
    distances : np.ndarray
        ``(n, n)`` symmetric non-negative distances with a zero diagonal.
    """
    count = len(distances)
    if count < 2:
        return list(range(count))
    from sklearn.cluster import HDBSCAN  # scikit-learn costs ~1 s to import: only when a round is clustered

    labels = (
        HDBSCAN(
            min_cluster_size=count // 2 + 1,
            min_samples=1,
            metric="precomputed",
            allow_single_cluster=True,
            copy=True,
        )
        .fit(distances)
        .labels_
    )
    clusters = [label for label in set(labels.tolist()) if label >= 0]
    if not clusters:
        return list(range(count))
    largest = max(clusters, key=lambda label: (int(np.sum(labels == label)), -label))
    return [row for row in range(count) if labels[row] == largest]


def cosine_distances(updates: RoundUpdates) -> np.ndarray:
    """``(n, n)`` float64 cosine distances 1 − cos between the rows as seen (zero diagonal, symmetric, ≥ 0).

    Parameters
    ----------
    updates : RoundUpdates
        The round's updates.
    """
    distances = (1.0 - cosine_from_gram(update_gram(updates))).clamp(min=0.0).numpy()
    np.fill_diagonal(distances, 0.0)
    return distances


def gaussian_noise(size: int, sd: float, seed: int, server_round: int) -> torch.Tensor:
    """``size`` float64 draws of N(0, sd²) on the CPU, from a generator seeded by ``(seed, salt, server_round)``.

    Parameters
    ----------
    size : int
        Number of coordinates.
    sd : float
        Standard deviation.
    seed : int
        The run's seed.
    server_round : int
        The round.
    """
    state = int(np.random.SeedSequence([seed, NOISE_SALT, server_round]).generate_state(1, dtype=np.uint64)[0])
    generator = torch.Generator().manual_seed(state)
    return torch.randn(size, dtype=torch.float64, generator=generator).mul_(sd)


class Flame(Defense):
    """HDBSCAN majority, median-norm clipping, mean and Gaussian noise (Nguyen et al., 2022).

    Parameters
    ----------
    noise_level : float
        λ: the noise's standard deviation is λ times the round's median update norm.
    seed : int
        The run's seed (the noise generator's seed, with the round).
    """

    def __init__(self, noise_level: float, seed: int) -> None:
        self.noise_level = noise_level
        self.seed = seed

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Cluster, clip, average and add noise (see the module docstring)."""
        admitted = majority_cluster(cosine_distances(updates))
        seen = updates.scaled_norms()
        bound = float(np.median(seen.cpu().numpy()))
        clipped = updates.rescaled(clipped_scale(updates.scale, updates.norms, bound))
        after = clipped.scaled_norms().tolist()
        long_rows = (seen > bound).tolist()
        share = 1.0 / len(admitted)
        chosen = set(admitted)
        decisions = tuple(
            ClientDecision(pid, CLIPPED if long_rows[row] else ACCEPTED, after[row], share, bound)
            if row in chosen
            else ClientDecision(pid, REJECTED, 0.0, 0.0, bound)
            for row, pid in enumerate(updates.partition_ids)
        )
        update = weighted_sum(clipped, admitted, [share] * len(admitted))
        sd = self.noise_level * bound
        if sd > 0:
            update += gaussian_noise(updates.size, sd, self.seed, updates.server_round).to(update.device)
        diagnostics = {"majority_size": len(admitted), "clipping_bound": bound, "noise_sd": sd}
        return Outcome(update=update, decisions=decisions, metric_rows=tuple(admitted), diagnostics=diagnostics)

    def describe(self) -> str:
        """``flame defense (Nguyen et al. 2022; lambda=...)``."""
        return (
            f"flame defense (Nguyen et al. 2022: HDBSCAN majority, median clipping, noise lambda={self.noise_level:g})"
        )


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """FLAME with ``flame-lambda`` and the run's seed.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Unused.
    """
    return Flame(config[FLAME_LAMBDA], config.seed)


DEFENSE = DefenseSpec(
    name=NAME,
    kind=AGGREGATION_RULE,
    summary=(
        "FLAME defense (Nguyen et al., USENIX Security 2022; not seed 004's ADA step): HDBSCAN majority of cosine "
        "distances, median-norm clipping, mean, Gaussian noise."
    ),
    settings=(FLAME_LAMBDA,),
    build=build,
)
