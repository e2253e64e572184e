"""Random-subset partitions (seed 004's clients: independent draws from the training split)."""

from __future__ import annotations

import datasets
import numpy as np
import pytest

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.data import DataSpec, all_partition_indices, client_data
from fl_poison.core.partitioning import build_partitioner
from fl_poison.core.random_subsets import RandomSubsetPartitioner
from fl_poison.core.settings import ConfigError


def numbered(rows: int) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"value": list(range(rows)), "label": [v % 3 for v in range(rows)]})


def test_each_partition_is_the_seeded_draw_without_replacement():
    partitioner = RandomSubsetPartitioner(num_partitions=4, samples_per_partition=7, seed=5)
    partitioner.dataset = numbered(20)
    for pid in range(4):
        expected = sorted(np.random.default_rng([5, pid]).choice(20, size=7, replace=False).tolist())
        values = partitioner.load_partition(pid)["value"]
        assert values == expected and len(set(values)) == 7


def test_partitions_overlap_and_exceed_the_split_together():
    partitioner = RandomSubsetPartitioner(num_partitions=5, samples_per_partition=15, seed=0)
    partitioner.dataset = numbered(20)
    drawn = [set(partitioner.load_partition(pid)["value"]) for pid in range(5)]
    total = sum(len(rows) for rows in drawn)
    assert total == 5 * 15 and total > len(partitioner.dataset)
    assert all(drawn[0] & other for other in drawn[1:])


def test_a_partition_does_not_depend_on_the_number_of_partitions():
    few, many = RandomSubsetPartitioner(2, 6, seed=3), RandomSubsetPartitioner(9, 6, seed=3)
    few.dataset = many.dataset = numbered(30)
    assert few.load_partition(1)["value"] == many.load_partition(1)["value"]


@pytest.mark.parametrize(("pid", "size"), [(4, 3), (-1, 3), (0, 21)])
def test_bad_requests_are_refused(pid, size):
    partitioner = RandomSubsetPartitioner(4, size, seed=0)
    partitioner.dataset = numbered(20)
    with pytest.raises(ValueError):
        partitioner.load_partition(pid)


def test_the_setting_builds_it_and_digits_clients_get_their_rows():
    assert isinstance(
        build_partitioner("random-subsets", 3, "label", 1, samples_per_client=40), RandomSubsetPartitioner
    )
    config = experiment_config({"partitioning": "random-subsets", "samples-per-client": 300, "num-clients": 100})
    spec = DataSpec.from_config(config)
    rows = all_partition_indices(spec)
    assert len(rows) == 100 and all(len(part) == 300 == len(set(part)) for part in rows)
    assert len(client_data(spec, 99)) == 300


def test_more_samples_than_training_rows_is_a_setting_error():
    spec = DataSpec.from_config(experiment_config({"partitioning": "random-subsets", "samples-per-client": 5000}))
    with pytest.raises(ConfigError) as caught:
        all_partition_indices(spec)
    assert str(caught.value).startswith("samples-per-client: bad value 5000;")
