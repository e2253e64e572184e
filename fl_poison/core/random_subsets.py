"""Overlapping random client datasets: every client draws its own sample of the training split.

Seed 004 (Sun et al., "Semi-Targeted Model Poisoning Attack on Federated Learning via Backward
Error Analysis", Sec. V-B) gives each of its 100 clients "a total of 500 samples randomly drawn
from the training set": the clients' datasets are drawn independently, so they may share samples,
and there can be more client samples than training rows. flwr-datasets' partitioners all divide
the split into disjoint parts, hence this one.

Subclassing flwr-datasets' ``Partitioner`` imports flwr-datasets (and ``datasets``) with this
module, so :func:`fl_poison.core.partitioning.build_partitioner` imports it only when it builds a
partitioner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fl_poison.core.lazy_imports import defer_flwr_datasets_plotting

if TYPE_CHECKING:
    import datasets

defer_flwr_datasets_plotting()  # the base class below imports flwr_datasets: without its plotting package
from flwr_datasets.partitioner import Partitioner  # noqa: E402


class RandomSubsetPartitioner(Partitioner):
    """Partition k is ``samples_per_partition`` rows drawn without replacement, independently of the others.

    Parameters
    ----------
    num_partitions : int
        Number of clients.
    samples_per_partition : int
        Rows each client draws; at most the number of rows of the dataset.
    seed : int
        Seed of the draws; partition k uses the generator seeded with ``(seed, k)``, so a
        partition does not depend on how many others there are.
    """

    def __init__(self, num_partitions: int, samples_per_partition: int, seed: int) -> None:
        super().__init__()
        if num_partitions < 1 or samples_per_partition < 1:
            raise ValueError("num_partitions and samples_per_partition must be at least 1")
        self._num_partitions = num_partitions
        self.samples_per_partition = samples_per_partition
        self.seed = seed

    @property
    def num_partitions(self) -> int:
        """Number of partitions."""
        return self._num_partitions

    def partition_indices(self, partition_id: int) -> list[int]:
        """Row positions of ``partition_id`` in the assigned dataset, ascending.

        Parameters
        ----------
        partition_id : int
            The partition, in ``0 .. num_partitions - 1``.

        Raises
        ------
        ValueError
            For a partition id out of range, or more samples per partition than rows.
        """
        if not 0 <= partition_id < self._num_partitions:
            raise ValueError(f"partition_id {partition_id} is not in [0, {self._num_partitions})")
        rows = len(self.dataset)
        if self.samples_per_partition > rows:
            raise ValueError(f"samples per client ({self.samples_per_partition}) exceed the {rows} training rows")
        generator = np.random.default_rng([self.seed, partition_id])
        return sorted(generator.choice(rows, size=self.samples_per_partition, replace=False).tolist())

    def load_partition(self, partition_id: int) -> datasets.Dataset:
        """The rows of ``partition_id`` (see :meth:`partition_indices`).

        Parameters
        ----------
        partition_id : int
            The partition.
        """
        return self.dataset.select(self.partition_indices(partition_id))
