"""The server-side adversary stage on constructed replies: what each knowledge level sees, what is
replaced, what is recorded, and that rounds without attackers pass untouched.

The expected views are computed here from the constructed weights in float64 (reply minus global),
independently of the stage's decoding; a recording adversary keeps the view it was handed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from flwr.app import Array, Message
from strategy_helpers import (
    NODE_OFFSET,
    client_weights,
    flatten,
    make_global,
    node_map,
    reply,
    start_round,
    true_update,
)

from clients.adversary import COLLUDING, OMNISCIENT, OWN, AdversaryView, Forged
from clients.adversary_stage import ModelPoisoningStage, parameter_column, round_seed
from fl_poison.core.round_log import RoundLog
from fl_poison.core.weights import record_to_numpy
from strategies.fedavg import FedAvg
from strategies.geomed import GeometricMedian
from strategies.lab import LabStrategy
from strategies.sampling import PartitionSampler

ATTACKERS = (1, 3)
NUM_CLIENTS = 5


@dataclass
class RecordingAdversary:
    """Forges ``shift`` + a draw of the view's generator on every coordinate, and keeps every view it saw."""

    shift: float = 0.25
    views: list[AdversaryView] = field(default_factory=list)

    def forge(self, view: AdversaryView) -> Forged:
        self.views.append(view)
        draw = float(torch.rand(1, generator=view.generator, dtype=torch.float64))
        updates = torch.full_like(view.own, self.shift)
        return Forged(updates, {"shift": self.shift, "draw": draw, "target-partition": 4})


def partition_of(message: Message) -> int:
    return message.metadata.src_node_id - NODE_OFFSET


def round_of(seed: int = 3) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]], np.ndarray]:
    """The global model, the weights of 5 clients and their float64 updates (weights - global)."""
    global_arrays = make_global(seed)
    size = sum(value.size for value in global_arrays.values())
    rng = np.random.default_rng(seed + 1)
    weights = [client_weights(global_arrays, rng.normal(0, 0.1, size)) for _ in range(NUM_CLIENTS)]
    exact = np.stack([flatten(w, global_arrays) - flatten(global_arrays, global_arrays) for w in weights])
    return global_arrays, weights, exact


def replies_of(weights: list[dict[str, np.ndarray]], attackers=ATTACKERS) -> list[Message]:
    return [reply(w, pid, attacked=int(pid in attackers)) for pid, w in enumerate(weights)]


@pytest.mark.parametrize("knowledge", [OWN, COLLUDING])
def test_own_and_colluding_see_the_attackers_honest_updates_only(knowledge):
    global_arrays, weights, exact = round_of()
    adversary = RecordingAdversary()
    stage = ModelPoisoningStage(adversary, knowledge, seed=7)
    stage.rewrite(2, replies_of(weights), global_arrays, partition_of)
    (view,) = adversary.views
    assert view.knowledge == knowledge and view.server_round == 2
    assert view.benign is None and view.benign_ids == ()
    assert view.own.dtype == torch.float64
    np.testing.assert_array_equal(view.own.numpy(), exact[list(ATTACKERS)])
    assert view.own_ids == ATTACKERS and view.num_attackers == 2
    assert view.num_sampled == NUM_CLIENTS
    np.testing.assert_array_equal(view.reference_updates().numpy(), exact[list(ATTACKERS)])


def test_omniscient_sees_every_benign_update_too():
    global_arrays, weights, exact = round_of()
    adversary = RecordingAdversary()
    ModelPoisoningStage(adversary, OMNISCIENT, seed=7).rewrite(2, replies_of(weights), global_arrays, partition_of)
    (view,) = adversary.views
    benign = [0, 2, 4]
    assert view.benign is not None and view.benign.dtype == torch.float64
    np.testing.assert_array_equal(view.benign.numpy(), exact[benign])
    assert view.benign_ids == (0, 2, 4)
    np.testing.assert_array_equal(view.own.numpy(), exact[list(ATTACKERS)])
    np.testing.assert_array_equal(view.reference_updates().numpy(), exact[benign])


def test_the_attackers_weights_are_replaced_by_global_plus_the_forged_update_and_the_others_kept():
    global_arrays, weights, _ = round_of()
    replies = replies_of(weights)
    before = [record_to_numpy(next(iter(m.content.array_records.values()))) for m in replies]
    forged = ModelPoisoningStage(RecordingAdversary(0.25), COLLUDING, seed=7).rewrite(
        2, replies, global_arrays, partition_of
    )
    assert forged is not None and forged.attackers == ATTACKERS
    for pid, message in enumerate(replies):
        sent = record_to_numpy(next(iter(message.content.array_records.values())))
        for name, base in global_arrays.items():
            if pid in ATTACKERS:
                expected = (base.astype(np.float64) + 0.25).astype(np.float32)
                assert sent[name].dtype == np.float32
                np.testing.assert_array_equal(sent[name], expected)
            else:
                np.testing.assert_array_equal(sent[name], before[pid][name])


def test_the_round_parameters_and_knowledge_are_returned_as_snake_case_columns():
    global_arrays, weights, _ = round_of()
    forged = ModelPoisoningStage(RecordingAdversary(0.25), COLLUDING, seed=7).rewrite(
        2, replies_of(weights), global_arrays, partition_of
    )
    assert forged is not None
    generator = torch.Generator().manual_seed(round_seed(7, 2))
    draw = float(torch.rand(1, generator=generator, dtype=torch.float64))
    assert dict(forged.columns) == {
        "adversary_knowledge": "colluding",
        "adversary_shift": 0.25,
        "adversary_draw": draw,
        "adversary_target_partition": 4,
    }
    assert parameter_column("Target-Partition") == "adversary_target_partition"


def test_the_generator_depends_on_seed_and_round_only():
    global_arrays, weights, _ = round_of()

    def draw(seed: int, server_round: int) -> float:
        forged = ModelPoisoningStage(RecordingAdversary(), COLLUDING, seed).rewrite(
            server_round, replies_of(weights), global_arrays, partition_of
        )
        assert forged is not None
        return float(forged.columns["adversary_draw"])

    assert draw(7, 2) == draw(7, 2)
    assert len({draw(7, 2), draw(7, 3), draw(8, 2)}) == 3


def test_a_round_without_attackers_passes_untouched_and_unseen():
    global_arrays, weights, _ = round_of()
    replies = replies_of(weights, attackers=())
    payloads = [[bytes(a.data) for a in next(iter(m.content.array_records.values())).values()] for m in replies]
    adversary = RecordingAdversary()
    assert ModelPoisoningStage(adversary, OMNISCIENT, seed=7).rewrite(2, replies, global_arrays, partition_of) is None
    assert adversary.views == []
    assert payloads == [[bytes(a.data) for a in next(iter(m.content.array_records.values())).values()] for m in replies]


def test_a_malicious_client_outside_its_attack_rounds_is_not_forged():
    """``malicious=1, attacked=0``: an honest update this round, among the benign rows for omniscient."""
    global_arrays, weights, exact = round_of()
    replies = replies_of(weights, attackers=(3,))
    next(iter(replies[1].content.metric_records.values()))["malicious"] = 1
    adversary = RecordingAdversary()
    forged = ModelPoisoningStage(adversary, OMNISCIENT, seed=7).rewrite(2, replies, global_arrays, partition_of)
    assert forged is not None and forged.attackers == (3,)
    np.testing.assert_array_equal(adversary.views[0].benign.numpy(), exact[[0, 1, 2, 4]])


def test_an_unusable_attacker_reply_is_left_for_the_screening():
    global_arrays, weights, exact = round_of()
    replies = replies_of(weights)
    record = next(iter(replies[1].content.array_records.values()))
    record["w"] = Array(np.zeros((2, 2), dtype=np.float32))  # wrong shape: the screening rejects it
    adversary = RecordingAdversary()
    forged = ModelPoisoningStage(adversary, COLLUDING, seed=7).rewrite(2, replies, global_arrays, partition_of)
    assert forged is not None and forged.attackers == (3,)
    np.testing.assert_array_equal(adversary.views[0].own.numpy(), exact[[3]])
    assert record_to_numpy(record)["w"].shape == (2, 2)


def test_a_forged_matrix_of_the_wrong_shape_is_a_bug():
    global_arrays, weights, _ = round_of()

    class Short:
        def forge(self, view: AdversaryView) -> Forged:
            return Forged(view.own[:1], {})

    with pytest.raises(ValueError, match="shape"):
        ModelPoisoningStage(Short(), COLLUDING, seed=7).rewrite(2, replies_of(weights), global_arrays, partition_of)


def test_the_strategy_screens_aggregates_and_records_the_forged_updates(server_task_identity):
    """Through LabStrategy: norms, the FedAvg aggregate and clients.csv rows see the forged update."""
    global_arrays, weights, _ = round_of()
    sampler = PartitionSampler(node_map(NUM_CLIENTS), per_round=NUM_CLIENTS, seed=0)
    log = RoundLog(sampler.partition_of_node)
    adversary = RecordingAdversary(0.25)
    stage = ModelPoisoningStage(adversary, COLLUDING, seed=7)
    strategy = LabStrategy(sampler=sampler, round_log=log, defense=FedAvg(), adversary=stage)
    start_round(strategy, global_arrays, NUM_CLIENTS)
    arrays, _ = strategy.aggregate_train(1, replies_of(weights))

    forged_weights = {name: (base.astype(np.float64) + 0.25).astype(np.float32) for name, base in global_arrays.items()}
    sent = [forged_weights if pid in ATTACKERS else weights[pid] for pid in range(NUM_CLIENTS)]
    updates = np.stack([true_update(w, global_arrays) for w in sent])
    expected = flatten(global_arrays, global_arrays) + updates.mean(axis=0)
    assert arrays is not None
    np.testing.assert_allclose(flatten(record_to_numpy(arrays), global_arrays), expected, rtol=0, atol=1e-6)

    rows = {row["partition_id"]: row for row in log.rows(1)}
    for pid, row in rows.items():
        assert row["norm_before"] == pytest.approx(float(np.linalg.norm(updates[pid])), rel=1e-12)
        if pid in ATTACKERS:
            assert row["adversary_knowledge"] == "colluding" and row["adversary_shift"] == 0.25
        else:
            assert not any(key.startswith("adversary_") for key in row)
    round_columns = log.adversary_columns(1)
    assert round_columns["adversary_knowledge"] == "colluding" and round_columns["adversary_shift"] == 0.25
    assert log.adversary_columns(2) == {}


def test_without_an_adversary_the_strategy_records_no_adversary_columns(server_task_identity):
    global_arrays, weights, _ = round_of()
    sampler = PartitionSampler(node_map(NUM_CLIENTS), per_round=NUM_CLIENTS, seed=0)
    log = RoundLog(sampler.partition_of_node)
    strategy = LabStrategy(sampler=sampler, round_log=log, defense=FedAvg())
    start_round(strategy, global_arrays, NUM_CLIENTS)
    strategy.aggregate_train(1, replies_of(weights))
    assert log.adversary_columns(1) == {}
    assert all(not any(key.startswith("adversary_") for key in row) for row in log.rows(1))
    assert all(not math.isnan(row["norm_before"]) for row in log.rows(1))


def test_the_strategy_records_the_defenses_round_diagnostics(server_task_identity):
    """A rule's ``Outcome.diagnostics`` become the round's ``defense_*`` columns (geomed's iterations)."""
    global_arrays, weights, _ = round_of()
    sampler = PartitionSampler(node_map(NUM_CLIENTS), per_round=NUM_CLIENTS, seed=0)
    log = RoundLog(sampler.partition_of_node)
    rule = GeometricMedian(iterations=3, tolerance=0.0, nu=1e-5)
    strategy = LabStrategy(sampler=sampler, round_log=log, defense=rule)
    start_round(strategy, global_arrays, NUM_CLIENTS)
    strategy.aggregate_train(1, replies_of(weights))
    assert log.defense_columns(1) == {"defense_iterations": 3}  # tolerance 0: the whole budget runs
    assert log.defense_columns(2) == {}
    fedavg_log = RoundLog(sampler.partition_of_node)
    fedavg = LabStrategy(sampler=sampler, round_log=fedavg_log, defense=FedAvg())
    start_round(fedavg, global_arrays, NUM_CLIENTS)
    fedavg.aggregate_train(1, replies_of(weights))
    assert fedavg_log.defense_columns(1) == {}
