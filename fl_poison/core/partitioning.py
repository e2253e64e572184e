"""Dividing a training split among clients with flwr-datasets partitioners.

``iid`` uses :class:`~flwr_datasets.partitioner.IidPartitioner`, ``dirichlet`` the label-skewed
:class:`~flwr_datasets.partitioner.DirichletPartitioner` (Hsu et al., 2019, "Measuring the Effects
of Non-Identical Data Distribution for Federated Visual Classification"), and ``pathological``
:class:`~flwr_datasets.partitioner.PathologicalPartitioner` (McMahan et al., 2017: each client
holds only ``classes-per-client`` labels; the first class of partition k is k mod C, so every
class is used when there are at least as many clients as classes), and ``random-subsets``
:class:`~fl_poison.core.random_subsets.RandomSubsetPartitioner` (each client draws
``samples-per-client`` rows of its own, possibly shared with others: seed 004's set-up). All are
seeded, so the same seed gives the same partitions in every process.

flwr-datasets (and with it ``datasets``) is imported by :func:`build_partitioner`, not with this
module, and without its plotting package (:mod:`fl_poison.core.lazy_imports`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from fl_poison.core.config import ConfigError
from fl_poison.core.lazy_imports import defer_flwr_datasets_plotting

if TYPE_CHECKING:
    import datasets
    from flwr_datasets.partitioner import Partitioner


def build_partitioner(
    partitioning: str,
    num_partitions: int,
    label_column: str,
    seed: int,
    dirichlet_alpha: float = 0.5,
    min_partition_size: int = 10,
    classes_per_client: int = 2,
    samples_per_client: int = 500,
) -> Partitioner:
    """Create the partitioner named by the ``partitioning`` setting.

    Parameters
    ----------
    partitioning : str
        ``iid``, ``dirichlet``, ``pathological`` or ``random-subsets``.
    num_partitions : int
        Number of clients.
    label_column : str
        Column whose values drive label-skewed partitioning.
    seed : int
        Seed of the partitioner's random draws.
    dirichlet_alpha : float
        Dirichlet concentration; smaller values give more skewed label distributions.
    min_partition_size : int
        Dirichlet draws are repeated until every partition has at least this many samples.
    classes_per_client : int
        Number of distinct labels per client for ``pathological``.
    samples_per_client : int
        Rows each client draws for ``random-subsets``.
    """
    defer_flwr_datasets_plotting()
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, PathologicalPartitioner

    from fl_poison.core.random_subsets import RandomSubsetPartitioner

    if partitioning == "iid":
        return IidPartitioner(num_partitions=num_partitions)
    if partitioning == "dirichlet":
        return DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by=label_column,
            alpha=dirichlet_alpha,
            min_partition_size=min_partition_size,
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    if partitioning == "pathological":
        return PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by=label_column,
            num_classes_per_partition=classes_per_client,
            class_assignment_mode="first-deterministic",
            shuffle=True,
            seed=seed,
        )
    if partitioning == "random-subsets":
        return RandomSubsetPartitioner(num_partitions, samples_per_client, seed)
    raise ConfigError.bad_value("partitioning", partitioning, "iid | dirichlet | pathological | random-subsets")


def assign_training_split(partitioner: Partitioner, train: datasets.Dataset, seed: int) -> None:
    """Give ``partitioner`` the training split it divides: ``train`` with a ``__row__`` column, shuffled.

    The rows are shuffled with ``seed`` before partitioning (IidPartitioner splits contiguous
    ranges), so that different seeds give different IID partitions and the same seed the same.

    Parameters
    ----------
    partitioner : Partitioner
        A partitioner from :func:`build_partitioner` that has no dataset yet.
    train : datasets.Dataset
        The training split.
    seed : int
        Seed of the shuffle.
    """
    partitioner.dataset = train.add_column("__row__", list(range(len(train)))).shuffle(seed=seed)


class PartitionError(ConfigError):
    """The partitioner could not divide the split; ``reason`` is the partitioner's own first line.

    Parameters
    ----------
    reason : str
        Why the partitioner failed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"partitioning: cannot build the partitions ({reason}); allowed: fewer clients or another partitioning"
        )
        self.reason = reason


def partition_rows(partitioner: Partitioner, train: datasets.Dataset, seed: int) -> list[list[int]]:
    """Row indices of ``train`` for every partition id, in partition-id order.

    The split is assigned with :func:`assign_training_split`.

    Parameters
    ----------
    partitioner : Partitioner
        A partitioner from :func:`build_partitioner` that has no dataset yet.
    train : datasets.Dataset
        The training split.
    seed : int
        Seed of the shuffle.

    Raises
    ------
    PartitionError
        When the partitioner fails (e.g. Dirichlet draws that never reach the minimum size).
    """
    assign_training_split(partitioner, train, seed)
    try:
        with warnings.catch_warnings():
            # flwr-datasets warns per failed Dirichlet draw and per unused class; the outcome is
            # what matters (an error below, or partitions that check_partition_plan checks)
            warnings.simplefilter("ignore", UserWarning)
            return [list(partitioner.load_partition(pid)["__row__"]) for pid in range(partitioner.num_partitions)]
    except (ValueError, IndexError) as error:
        raise PartitionError((str(error).splitlines() or [type(error).__name__])[0]) from None
