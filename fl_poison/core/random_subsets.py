"""Overlapping random client datasets: every client draws its own sample of the training split.

Seed 004 (Sun et al., "Semi-Targeted Model Poisoning Attack on Federated Learning via Backward
Error Analysis", Sec. V-B) gives each of its 100 clients "a total of 500 samples randomly drawn
from the training set": the clients' datasets are drawn independently, so they may share samples,
and there can be more client samples than training rows. flwr-datasets' partitioners all divide
the split into disjoint parts, hence this one.
"""

from __future__ import annotations

import datasets
import numpy as np
from flwr_datasets.partitioner import Partitioner


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
        """Row positions of ``partition_id`` in the assigned dataset, ascending."""
        if not 0 <= partition_id < self._num_partitions:
            raise ValueError(f"partition_id {partition_id} is not in [0, {self._num_partitions})")
        rows = len(self.dataset)
        if self.samples_per_partition > rows:
            raise ValueError(f"samples per client ({self.samples_per_partition}) exceed the {rows} training rows")
        generator = np.random.default_rng([self.seed, partition_id])
        return sorted(generator.choice(rows, size=self.samples_per_partition, replace=False).tolist())

    def load_partition(self, partition_id: int) -> datasets.Dataset:
        """The rows of ``partition_id``."""
        return self.dataset.select(self.partition_indices(partition_id))
