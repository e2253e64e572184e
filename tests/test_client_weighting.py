"""``client-weighting`` and the weight-inflation attack: the counts weights use, computed by hand;
a round with an inflated count through every weighted defense, against the same round reported
honestly; the forged count on the client side; the caps the ServerApp derives from the partition plan."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from strategy_helpers import (
    flatten,
    lab_strategy,
    make_global,
    node_map,
    reply,
    start_round,
    true_update,
    weighted_mean,
)

from clients.attacks.weight_inflation import WeightInflation
from clients.base import TrainingJob
from clients.malicious import CleanData, MaliciousClient
from clients.registry import behaviour_for
from fl_poison.apps.algorithms import experiment_config
from fl_poison.apps.server_app import Federation, justified_examples
from fl_poison.core.client_weighting import CAPPED, REPORTED, UNIFORM, ClientWeighting
from fl_poison.core.config import ConfigError
from fl_poison.core.data import DatasetInfo, DataSpec, LabeledTensors, client_data
from fl_poison.core.models import small_cnn
from fl_poison.core.reply_checks import MAX_NUM_EXAMPLES
from fl_poison.core.round_log import RoundLog
from fl_poison.core.training import LocalTraining
from fl_poison.core.weights import record_to_numpy
from strategies.lab import LabStrategy
from strategies.registry import build_defense
from strategies.sampling import PartitionSampler

pytestmark = pytest.mark.usefixtures("server_task_identity")

# ------------------------------------------------------------------------- the counts, by hand


def test_reported_counts_are_used_as_sent():
    weighting = ClientWeighting(REPORTED, {0: 10, 1: 10})
    assert weighting.used_counts([0, 1, 2], [10, 1e12, 7]) == (10.0, 1e12, 7.0)


def test_uniform_counts_are_one():
    assert ClientWeighting(UNIFORM).used_counts([0, 1, 2], [10, 1e12, 7]) == (1.0, 1.0, 1.0)


def test_capped_counts_stop_at_the_justified_size_and_keep_smaller_reports():
    weighting = ClientWeighting(CAPPED, {0: 10, 1: 15, 2: 20})
    assert weighting.used_counts([0, 1, 2], [5, 1e12, 20]) == (5.0, 15.0, 20.0)


def test_capped_counts_without_a_justified_size_stop_at_a_multiple_of_the_median():
    # median of (10, 20, 30, 1e12) is 25; twice it is 50; partition 0's justified size (8) still applies
    weighting = ClientWeighting(CAPPED, {0: 8}, median_multiple=2.0)
    assert weighting.used_counts([0, 1, 2, 3], [10, 20, 30, 1e12]) == (8.0, 20.0, 30.0, 50.0)
    assert ClientWeighting(CAPPED, median_multiple=1.0).used_counts([4, 5, 6], [1, 2, 9]) == (1.0, 2.0, 2.0)


def test_two_colluders_at_the_screening_ceiling_leave_finite_shares():
    counts = ClientWeighting(REPORTED).used_counts([0, 1, 2], [MAX_NUM_EXAMPLES, MAX_NUM_EXAMPLES, 10])
    total = math.fsum(counts)
    assert math.isfinite(total) and counts[2] / total == pytest.approx(10 / (2 * 2**53 + 10), rel=1e-12)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (("median",), "client-weighting"),
        ((CAPPED, {}, 0.5), "weight-cap-multiple"),
        ((CAPPED, {3: 0}), "partition 3"),
    ],
)
def test_bad_weightings_are_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        ClientWeighting(*arguments)


@pytest.mark.parametrize(
    "raw, key",
    [
        ({"client-weighting": "trusted"}, "client-weighting"),
        ({"weight-cap-multiple": 0.5}, "weight-cap-multiple"),
        ({"weight-cap-multiple": "inf"}, "weight-cap-multiple"),
        ({"update-attack": "weight-inflation", "inflation-factor": 0}, "inflation-factor"),
        ({"update-attack": "weight-inflation", "inflation-factor": 1e13}, "inflation-factor"),
    ],
)
def test_bad_weighting_settings_fail_in_one_line_naming_the_setting(raw, key):
    with pytest.raises(ConfigError) as error:
        experiment_config({"num-malicious": 1, **raw})
    assert str(error.value).startswith(key) and "\n" not in str(error.value)


# ------------------------------------------------------------ a round with an inflated count

CLIENTS = 5
INFLATED = 2
HONEST_COUNT = 10


def round_weights(seed: int = 1):
    """A global model and four clients' weights close to it."""
    global_arrays = make_global(seed)
    rng = np.random.default_rng(seed + 10)
    clients = [
        {
            name: (value + 0.05 * rng.standard_normal(value.shape)).astype(np.float32)
            for name, value in global_arrays.items()
        }
        for _ in range(CLIENTS)
    ]
    return global_arrays, clients


def aggregate(strategy_name: str, weighting: ClientWeighting, counts: list[float]):
    """The new global model and the round's rows after one round with the given reported counts."""
    config = experiment_config({"strategy": strategy_name, "num-clients": CLIENTS})
    sampler = PartitionSampler(node_map(CLIENTS), per_round=CLIENTS, seed=0)
    log = RoundLog(sampler.partition_of_node)
    strategy = LabStrategy(sampler=sampler, round_log=log, defense=build_defense(config), weighting=weighting)
    global_arrays, clients = round_weights()
    start_round(strategy, global_arrays, CLIENTS)
    replies = [reply(weights, pid, counts[pid], loss=0.1 * (pid + 1)) for pid, weights in enumerate(clients)]
    arrays, metrics = strategy.aggregate_train(1, replies)
    return record_to_numpy(arrays), metrics, log.for_round(1), global_arrays, clients


WEIGHTED_DEFENSES = ["fedavg", "multikrum", "norm-clip", "loss-filter"]
JUSTIFIED = {pid: HONEST_COUNT for pid in range(CLIENTS)}


@pytest.mark.parametrize("name", WEIGHTED_DEFENSES)
def test_capped_weighting_makes_an_inflated_count_count_as_an_honest_one(name):
    inflated = [HONEST_COUNT] * CLIENTS
    inflated[INFLATED] = HONEST_COUNT * 1e6
    honest_model, honest_metrics, _, _, _ = aggregate(
        name, ClientWeighting(CAPPED, JUSTIFIED), [HONEST_COUNT] * CLIENTS
    )
    model, metrics, rows, _, _ = aggregate(name, ClientWeighting(CAPPED, JUSTIFIED), inflated)
    for array in honest_model:
        np.testing.assert_array_equal(model[array], honest_model[array])
    assert metrics["train_loss"] == honest_metrics["train_loss"]
    row = next(row for row in rows if row.partition_id == INFLATED)
    assert (row.num_examples, row.used_examples) == (HONEST_COUNT * 1e6, HONEST_COUNT)


def test_reported_weighting_lets_the_inflated_client_take_over_fedavg():
    counts = [HONEST_COUNT] * CLIENTS
    counts[INFLATED] = HONEST_COUNT * 1e6
    model, metrics, rows, global_arrays, clients = aggregate("fedavg", ClientWeighting(REPORTED), counts)
    names = list(global_arrays)
    expected = flatten(global_arrays, names) + sum(
        (count / math.fsum(counts)) * true_update(weights, global_arrays)
        for count, weights in zip(counts, clients, strict=True)
    )
    np.testing.assert_allclose(flatten(model, names), expected.astype(np.float32), rtol=0, atol=1e-6)
    share = counts[INFLATED] / math.fsum(counts)
    assert share > 0.99999
    assert next(row for row in rows if row.partition_id == INFLATED).weight == pytest.approx(share, rel=1e-12)
    losses = [0.1 * (pid + 1) for pid in range(CLIENTS)]
    assert metrics["train_loss"] == pytest.approx(
        sum(c * x for c, x in zip(counts, losses, strict=True)) / sum(counts), rel=1e-12
    )


def test_uniform_weighting_is_the_plain_mean():
    counts = [1.0, 50.0, 1e9, 3.0, 7.0]
    model, _, rows, global_arrays, clients = aggregate("fedavg", ClientWeighting(UNIFORM), counts)
    expected = weighted_mean(clients, [1.0] * CLIENTS)
    for name in global_arrays:
        np.testing.assert_allclose(model[name], expected[name], rtol=0, atol=1e-6)
    assert [row.used_examples for row in rows] == [1.0] * CLIENTS
    assert [row.num_examples for row in rows] == counts


def test_the_default_strategy_caps_at_twice_the_median_report():
    strategy, log = lab_strategy(build_defense(experiment_config({"num-clients": 3})), 3)
    global_arrays, clients = round_weights()
    start_round(strategy, global_arrays, 3)
    strategy.aggregate_train(1, [reply(clients[pid], pid, count) for pid, count in enumerate([10, 30, 1e15])])
    assert [row.used_examples for row in log.for_round(1)] == [10.0, 30.0, 60.0]


def test_rejected_and_failed_clients_use_no_examples():
    strategy, log = lab_strategy(build_defense(experiment_config({"num-clients": 3})), 3)
    global_arrays, clients = round_weights()
    start_round(strategy, global_arrays, 3)
    broken = {name: np.full_like(value, np.nan) for name, value in clients[1].items()}
    strategy.aggregate_train(1, [reply(clients[0], 0, 10), reply(broken, 1, 10)])
    rows = {row.partition_id: row for row in log.for_round(1)}
    assert (rows[0].used_examples, rows[1].used_examples, rows[2].used_examples) == (10.0, 0.0, 0.0)
    assert (rows[1].status, rows[2].status) == ("rejected", "failed")


# ----------------------------------------------------------------------- the client's forged count


@pytest.mark.parametrize(
    "factor, count, expected",
    [(1e6, 150, 150_000_000), (2.5, 3, 8), (1e-3, 10, 1), (1e12, 10**5, MAX_NUM_EXAMPLES)],
)
def test_weight_inflation_reports_factor_times_the_count_within_the_screening_ceiling(factor, count, expected):
    assert WeightInflation(factor).reported_examples(None, count) == expected  # type: ignore[arg-type]


def test_an_inflating_client_sends_its_honest_weights_and_a_forged_count():
    torch.manual_seed(0)
    model = small_cnn(1, 8, 10)
    data = LabeledTensors(torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(5)), torch.arange(12) % 3)
    training = LocalTraining(epochs=1, batch_size=4, learning_rate=0.1, momentum=0.0)

    def job(copy_of):
        return TrainingJob(copy.deepcopy(copy_of), data, training, torch.device("cpu"), 7, 2, 1)

    honest = MaliciousClient(CleanData(), WeightInflation(1.0)).run(job(model))
    inflated = MaliciousClient(CleanData(), WeightInflation(1e6)).run(job(model))
    assert (honest.num_examples, inflated.num_examples) == (12, 12_000_000)
    for name, tensor in honest.model.state_dict().items():
        assert torch.equal(inflated.model.state_dict()[name], tensor)
    assert inflated.attacked and inflated.malicious


def test_the_registry_builds_weight_inflation_after_any_data_attack():
    info = DatasetInfo(num_classes=10, input_shape=(1, 8, 8))
    config = experiment_config(
        {"num-clients": 4, "malicious-ids": "1", "update-attack": "weight-inflation", "inflation-factor": 50}
    )
    behaviour = behaviour_for(config, 1, 1, info)
    assert behaviour == MaliciousClient(CleanData(), WeightInflation(50.0))
    flipped = behaviour_for(
        experiment_config({**config.to_dict(), "attack": "label-flip", "update-attack": "weight-inflation"}), 1, 1, info
    )
    assert isinstance(flipped, MaliciousClient) and flipped.transform == WeightInflation(50.0)


# ------------------------------------------------------------------- the caps the server justifies


def test_justified_sizes_are_the_partition_plan_and_own_data_declarations():
    config = experiment_config({"num-clients": 5, "partitioning": "dirichlet", "seed": 4})
    spec = DataSpec.from_config(config)
    federation = Federation(
        node_of_partition={pid: 100 + pid for pid in range(5)},
        cuda_partitions=(),
        own_data_partitions=(3, 4),
        declared_examples={0: 10**9, 3: 77},
    )
    justified = justified_examples(spec, federation)
    expected = {pid: len(client_data(spec, pid)) for pid in (0, 1, 2)}
    assert len(set(expected.values())) > 1  # Dirichlet sizes differ: the caps are per partition
    assert justified == {**expected, 3: 77}  # 0's declaration is ignored; 4 declared nothing
