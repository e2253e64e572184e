"""The contract every registered algorithm keeps, run over the whole catalogue.

A newly registered attack or defense is covered here without editing this file:

- each of its own settings refuses a bad value with one line naming the setting (while the
  algorithm is in use, so that its relation checks run too);
- each defense, built from its spec, aggregates a round of well-formed replies of seven clients
  (one of them an outlier) into a finite model of the global model's shape, whose every coordinate
  lies within the clients' and the global model's range (for RLR, which negates its learning rate
  on some coordinates by design: within the largest update's distance of the global model), and
  records a decision and the update norm of every client, the norm checked against a float64
  reference.

The attacks' own runs (every attack for an attacker, its evaluation) are in
``tests/test_attack_registry.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from strategy_helpers import client_weights, make_global, node_map, reply, root_training, start_round, true_update

from fl_poison.apps.algorithms import catalogue, experiment_config
from fl_poison.core.catalogue import UPDATE_ATTACK_KINDS, AlgorithmSpec
from fl_poison.core.round_log import RoundLog
from fl_poison.core.settings import ConfigError
from fl_poison.core.weights import record_to_numpy
from strategies.registry import build_strategy
from strategies.sampling import PartitionSampler

NUM_CLIENTS = 7
ATTACKER = 5
BAD_CANDIDATES: tuple[object, ...] = ("no-such-value", -7, 10**12, [1, 2])
DECISIONS = {"accepted", "rejected", "clipped", "skipped"}
# Rules that may move a coordinate outside the clients' range by design (RLR negates the learning
# rate where the clients disagree in sign); they stay within the largest update on each coordinate.
LEAVE_THE_CLIENTS_RANGE = {"rlr"}


def in_use(spec: AlgorithmSpec) -> dict[str, object]:
    """Settings that put ``spec`` to use in a run of seven clients with one attacker."""
    base: dict[str, object] = {"num-clients": NUM_CLIENTS, "malicious-ids": str(ATTACKER)}
    if spec in catalogue().defenses:
        return {**base, "strategy": spec.name}
    if spec.kind in UPDATE_ATTACK_KINDS:  # update transforms and model-poisoning attacks
        return {**base, "update-attack": spec.name}
    return {**base, "attack": spec.name}


def every_algorithm_setting() -> list[tuple[AlgorithmSpec, str]]:
    algorithms = catalogue().attacks + catalogue().defenses
    return [(spec, setting.key) for spec in algorithms for setting in spec.settings]


def test_the_catalogue_has_attacks_and_defenses_with_settings():
    assert len(catalogue().attacks) >= 9 and len(catalogue().defenses) >= 9
    assert len(every_algorithm_setting()) >= 15


@pytest.mark.parametrize(("spec", "key"), every_algorithm_setting(), ids=lambda item: getattr(item, "name", item))
def test_every_algorithm_setting_refuses_a_bad_value_with_one_line(spec, key):
    settings = in_use(spec)
    assert experiment_config(settings)  # the algorithm runs with its defaults
    refusals = []
    for bad in BAD_CANDIDATES:
        try:
            experiment_config({**settings, key: bad})
        except ConfigError as error:
            refusals.append(str(error))
    assert refusals, f"{key} accepts every one of {BAD_CANDIDATES}"
    for message in refusals:
        assert "\n" not in message
        assert message.split(":")[0] == key, message


def round_of_replies(global_arrays: dict[str, np.ndarray]) -> tuple[list, dict[int, np.ndarray]]:
    """Six honest updates N(0, 0.01) and one outlier of 10 per coordinate (partition ATTACKER)."""
    rng = np.random.default_rng(7)
    size = sum(value.size for value in global_arrays.values())
    updates, replies = {}, []
    for partition_id in range(NUM_CLIENTS):
        update = rng.normal(0.0, 0.01, size) if partition_id != ATTACKER else np.full(size, 10.0)
        weights = client_weights(global_arrays, update)
        updates[partition_id] = true_update(weights, global_arrays)
        loss = 0.5 + 0.1 * partition_id
        replies.append(
            reply(
                weights, partition_id, num_examples=10 + partition_id, loss=loss, attacked=int(partition_id == ATTACKER)
            )
        )
    return replies, updates


@pytest.mark.parametrize("name", catalogue().defense_names())
def test_every_defense_aggregates_a_round_and_records_every_client(name, server_task_identity):
    config = experiment_config(in_use(catalogue().defense(name)))
    sampler = PartitionSampler(node_map(NUM_CLIENTS), NUM_CLIENTS, seed=0)
    round_log = RoundLog(sampler.partition_of_node)
    strategy = build_strategy(config, sampler, round_log, root_training=root_training)
    global_arrays = make_global()
    start_round(strategy, global_arrays, NUM_CLIENTS)
    replies, updates = round_of_replies(global_arrays)

    arrays, _ = strategy.aggregate_train(1, replies)

    assert arrays is not None, f"{name} aggregated nothing from seven well-formed replies"
    result = record_to_numpy(arrays)
    assert set(result) == set(global_arrays)
    clients = [client_weights(global_arrays, update) for update in updates.values()]
    for key, value in global_arrays.items():
        assert result[key].shape == value.shape and result[key].dtype == value.dtype
        assert np.all(np.isfinite(result[key]))
        stacked = np.stack([value] + [weights[key] for weights in clients]).astype(np.float64)
        if name in LEAVE_THE_CLIENTS_RANGE:
            largest = np.max(np.abs(stacked - value), axis=0)
            assert np.all(np.abs(result[key] - value) <= largest + 1e-6), key
        else:
            assert np.all(result[key] >= stacked.min(axis=0) - 1e-6) and np.all(
                result[key] <= stacked.max(axis=0) + 1e-6
            ), key
    rows = {row.partition_id: row for row in round_log.for_round(1)}
    assert sorted(rows) == list(range(NUM_CLIENTS))
    for partition_id, row in rows.items():
        assert row.status == "ok" and row.decision in DECISIONS, (partition_id, row.decision)
        assert row.attacked == int(partition_id == ATTACKER)
        expected_norm = float(np.linalg.norm(updates[partition_id]))
        assert math.isclose(row.norm_before, expected_norm, rel_tol=1e-6), (
            partition_id,
            row.norm_before,
            expected_norm,
        )
