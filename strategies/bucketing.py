"""Bucketing (Karimireddy, He, Jaggi, 2022, "Byzantine-Robust Learning on Heterogeneous Datasets via
Bucketing", ICLR 2022).

A pre-aggregator: it rewrites the round's updates and hands them to another rule
(``bucketing-wrap``), like ``norm-clip`` does. Algorithm, per round, with n updates and bucket
size s (``bucket-size``, default 2, as in the authors' experiments):

1. draw a random permutation π of the n updates (in partition-id order, so the draw does not
   depend on arrival order): ``numpy.random.default_rng([seed, BUCKETING_SALT, round]).permutation(n)``
   with the run's ``seed`` and the server round, so a run is reproducible round by round;
2. cut π into ⌈n/s⌉ buckets of s consecutive updates (the last one holds the n mod s left over
   when s does not divide n, as ByzFL does);
3. replace every bucket by the mean of its updates, weighted by their example counts, and give
   the bucket the sum of its members' counts (with equal counts, or ``client-weighting=uniform``,
   this is the paper's plain mean; weighted, FedAvg behind bucketing is FedAvg; an attacker gains
   nothing from its weight inside a bucket, since it chooses its update anyway);
4. hand the ⌈n/s⌉ bucket means to the wrapped rule (``bucketing-wrap``, default ``median``: the
   authors' experiments pair bucketing with Krum, the coordinate-wise median, RFA and centered
   clipping; the median has no condition on the number of buckets, while Krum needs
   2f + 2 < ⌈n/s⌉, e.g. f = 1 at most with 10 clients and s = 2). The wrapped rule's own checks
   apply with ⌈n/s⌉ clients per round.

Decisions (:mod:`strategies.mixing`): every client takes the wrapped rule's decision on its
bucket (accepted, clipped, rejected or skipped); its weight is the bucket's weight times its share
of the bucket's examples; its norm after is its own norm, scaled down as the wrapped rule scaled
the bucket. A bucket row reports to the wrapped rule the partition id, reply contents and arrays
of its lowest member and the mean of its members' losses (the loss filter reads them). The
round's train metrics average those of the clients whose buckets made the aggregate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from fl_poison.core.catalogue import PRE_AGGREGATOR, Catalogue
from fl_poison.core.config import ExperimentConfig, algorithm_name
from fl_poison.core.round_updates import RoundUpdates
from fl_poison.core.settings import Setting, integer
from strategies.mixing import mixed_round, traced_decision
from strategies.spec import BuildContext, Defense, DefenseSpec, Outcome
from strategies.wrapping import check_wrapped_rule

NAME = "bucketing"
# Keeps the permutations apart from the other draws seeded by the run's seed.
BUCKETING_SALT = 0x6275636B
BUCKET_SIZE: Setting[int] = Setting("bucket-size", 2, "Updates per bucket of bucketing (s).", integer(1))
BUCKETING_WRAP: Setting[str] = Setting(
    "bucketing-wrap",
    "median",
    "Strategy that aggregates the bucket means of bucketing: any other registered strategy.",
    algorithm_name,
)


def buckets_of(permutation: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive runs of ``size`` entries of ``permutation`` (the last one shorter when ``size`` does not divide it).

    Parameters
    ----------
    permutation : Sequence[int]
        The rows in their drawn order.
    size : int
        s, rows per bucket.
    """
    return [list(permutation[start : start + size]) for start in range(0, len(permutation), size)]


def bucket_coefficients(buckets: Sequence[Sequence[int]], counts: Sequence[float]) -> torch.Tensor:
    """The ``(k, n)`` float64 matrix of the buckets' example-weighted means.

    Parameters
    ----------
    buckets : Sequence[Sequence[int]]
        The rows of every bucket.
    counts : Sequence[float]
        Every row's example count.
    """
    coefficients = torch.zeros((len(buckets), len(counts)), dtype=torch.float64)
    for bucket, members in enumerate(buckets):
        total = math.fsum(counts[row] for row in members)
        for row in members:
            coefficients[bucket, row] = counts[row] / total
    return coefficients


class Bucketing(Defense):
    """Average random buckets of s updates, then aggregate the bucket means with a wrapped rule.

    Parameters
    ----------
    bucket_size : int
        s.
    inner : Defense
        The rule that aggregates the bucket means.
    seed : int
        The run's seed; a round's permutation is drawn from ``[seed, BUCKETING_SALT, server_round]``.
    """

    def __init__(self, bucket_size: int, inner: Defense, seed: int) -> None:
        self.bucket_size = bucket_size
        self.inner = inner
        self.seed = seed

    def draw_buckets(self, count: int, server_round: int) -> list[list[int]]:
        """The buckets of row indices of ``count`` rows in round ``server_round``."""
        generator = np.random.default_rng([self.seed, BUCKETING_SALT, server_round])
        return buckets_of([int(row) for row in generator.permutation(count)], self.bucket_size)

    def aggregate(self, updates: RoundUpdates) -> Outcome:
        """Bucket, let the wrapped rule aggregate the means, give every client its bucket's decision."""
        buckets = self.draw_buckets(updates.count, updates.server_round)
        counts = updates.num_examples
        lowest = [min(members, key=lambda row: updates.partition_ids[row]) for members in buckets]
        means = mixed_round(
            updates,
            bucket_coefficients(buckets, counts),
            [updates.partition_ids[row] for row in lowest],
            [math.fsum(counts[row] for row in members) for members in buckets],
            [math.fsum(updates.reported_examples[row] for row in members) for members in buckets],
            [float(np.mean([updates.losses[row] for row in members])) for members in buckets],
            lowest,
        )
        outcome = self.inner.aggregate(means)
        bucket_of = {row: bucket for bucket, members in enumerate(buckets) for row in members}
        own_norms, bucket_norms = updates.scaled_norms().tolist(), means.scaled_norms().tolist()
        decisions = tuple(
            traced_decision(
                pid,
                own_norms[row],
                bucket_norms[bucket_of[row]],
                outcome.decisions[bucket_of[row]],
                counts[row] / means.num_examples[bucket_of[row]],
            )
            for row, pid in enumerate(updates.partition_ids)
        )
        metric_rows = tuple(sorted(row for bucket in outcome.metric_rows for row in buckets[bucket]))
        return dataclasses.replace(outcome, decisions=decisions, metric_rows=metric_rows, exact_row=None)

    def train_config(self) -> Mapping[str, bool | int | float | str]:
        """The wrapped rule's train config entries."""
        return self.inner.train_config()

    def describe(self) -> str:
        """s and the wrapped rule."""
        return f"bucketing (s={self.bucket_size}) in front of {self.inner.describe()}"


def check(config: ExperimentConfig, catalogue: Catalogue) -> None:
    """``bucketing-wrap`` names another registered defense (no loop), whose checks apply to ⌈n/s⌉ updates per round.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    catalogue : Catalogue
        The registered defenses.
    """
    buckets = math.ceil(config.sampled_per_round / config[BUCKET_SIZE])
    check_wrapped_rule(config, catalogue, NAME, BUCKETING_WRAP, rows=buckets)


def build(config: ExperimentConfig, context: BuildContext) -> Defense:
    """Bucketing with ``bucket-size`` in front of the ``bucketing-wrap`` rule, seeded by ``seed``.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    context : BuildContext
        Builds the wrapped rule.
    """
    return Bucketing(config[BUCKET_SIZE], context.wrapped(config[BUCKETING_WRAP]), config.seed)


DEFENSE = DefenseSpec(
    name=NAME,
    kind=PRE_AGGREGATOR,
    summary="Averages random buckets of bucket-size updates, then aggregates the means with bucketing-wrap (Karimireddy et al., 2022).",
    settings=(BUCKET_SIZE, BUCKETING_WRAP),
    check=check,
    build=build,
    wraps=BUCKETING_WRAP,
)
