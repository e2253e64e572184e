"""FLTrust (Cao et al., NDSS 2021) against a hand transcription of its aggregation, its root set
(held-out rows, never a client's, recorded in config.json) and the server's training on it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e_helpers import fl_poison_run, read_rows
from strategy_helpers import as_numpy, decoded_round, lab_strategy, reply, start_round

from fl_poison.apps.algorithms import experiment_config
from fl_poison.apps.data_checks import check_run_against_data
from fl_poison.core.config import ConfigError
from fl_poison.core.data import DataSpec, all_partition_indices, client_data
from fl_poison.core.data import test_data as held_out_data  # not named test_*: pytest would collect it
from fl_poison.core.models import build_model
from fl_poison.core.root_dataset import (
    FROM_EVALUATED,
    FROM_UNEVALUATED,
    RootDataset,
    RootTraining,
    draw_root_rows,
    split_root_set,
)
from fl_poison.core.round_updates import UpdateLayout
from fl_poison.core.training import LocalTraining
from fl_poison.core.weights import float_state
from strategies.fltrust import FLTrust, build
from strategies.registry import build_defense
from strategies.spec import BuildContext


def reference_fltrust(rows: np.ndarray, server: np.ndarray) -> tuple[np.ndarray | None, list[float]]:
    """The paper's aggregate, transcribed: TS_i = ReLU(cos(g_i, g_0)), ĝ_i = ‖g_0‖/‖g_i‖ g_i, Σ TS_i ĝ_i / Σ TS_i."""
    server_norm = math.sqrt(sum(value * value for value in server))
    scores = []
    for row in rows:
        norm = math.sqrt(sum(value * value for value in row))
        cosine = sum(a * b for a, b in zip(row, server, strict=True)) / (norm * server_norm) if norm else 0.0
        scores.append(max(0.0, cosine))
    total = sum(scores)
    if total == 0:
        return None, scores
    aggregate = sum(score * (server_norm / np.linalg.norm(row)) * row for score, row in zip(scores, rows, strict=True))
    return aggregate / total, scores


def fixed_server_update(vector: np.ndarray, seen: list[int] | None = None):
    """A server update function returning ``vector`` (and noting the rounds it was asked for)."""

    def server_update(layout: UpdateLayout, server_round: int) -> torch.Tensor:
        assert layout.size == len(vector)
        if seen is not None:
            seen.append(server_round)
        return torch.tensor(vector, dtype=torch.float64)

    return server_update


def constructed_round(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six updates near the server's direction (of various lengths), two opposed to it, one orthogonal-ish."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(12)
    honest = [scale * direction + rng.normal(0.0, 0.3, 12) for scale in (0.5, 1.0, 2.0, 3.0, 0.2, 1.5)]
    opposed = [-4.0 * direction + rng.normal(0.0, 0.1, 12) for _ in range(2)]
    orthogonal = rng.standard_normal(12)
    orthogonal -= orthogonal @ direction / (direction @ direction) * direction
    rows = np.array([*honest, *opposed, orthogonal + 1e-3 * direction])
    server = 0.7 * direction + rng.normal(0.0, 0.05, 12)
    return np.zeros(12), rows, server


def test_scores_rescaling_and_aggregate_match_the_paper():
    global_vector, rows, server = constructed_round()
    updates = decoded_round(global_vector, rows)
    seen_rows = as_numpy(updates.matrix)  # the float32 updates the server sees
    expected, scores = reference_fltrust(seen_rows, server)

    outcome = FLTrust(fixed_server_update(server), 100).aggregate(updates)

    np.testing.assert_allclose(as_numpy(outcome.update), expected, rtol=1e-12, atol=1e-15)
    server_norm = float(np.linalg.norm(server))
    total = sum(scores)
    for decision, score in zip(outcome.decisions, scores, strict=True):
        if score == 0:
            assert (decision.decision, decision.weight, decision.norm_after) == ("rejected", 0.0, 0.0)
        else:
            assert decision.decision == "accepted"
            assert decision.weight == pytest.approx(score / total, rel=1e-12)
            assert decision.norm_after == pytest.approx(server_norm, rel=1e-12)
    assert [d.decision for d in outcome.decisions][6:8] == ["rejected", "rejected"]  # the opposed pair
    assert outcome.metric_rows == tuple(row for row, score in enumerate(scores) if score > 0)


def test_rows_are_taken_as_the_defense_sees_them():
    global_vector, rows, server = constructed_round(seed=3)
    updates = decoded_round(global_vector, rows)
    factors = torch.tensor([0.5, 2.0, 1.0, 0.25, 1.0, 3.0, 1.0, 1.0, 0.1], dtype=torch.float64)
    scaled = updates.rescaled(factors)
    expected, _ = reference_fltrust(as_numpy(updates.matrix) * factors.numpy()[:, None], server)

    outcome = FLTrust(fixed_server_update(server), 100).aggregate(scaled)

    np.testing.assert_allclose(as_numpy(outcome.update), expected, rtol=1e-12, atol=1e-15)


def test_no_trusted_update_keeps_the_global_model():
    global_vector, rows, server = constructed_round()
    updates = decoded_round(global_vector, [-rows[1], -rows[2], -rows[3], np.zeros(12)])
    outcome = FLTrust(fixed_server_update(server), 100).aggregate(updates)
    assert outcome.update is None and outcome.metric_rows == ()
    assert {d.decision for d in outcome.decisions} == {"rejected"}


def test_a_server_update_of_norm_zero_trusts_nobody():
    global_vector, rows, _ = constructed_round()
    outcome = FLTrust(fixed_server_update(np.zeros(12)), 100).aggregate(decoded_round(global_vector, rows))
    assert outcome.update is None and {d.decision for d in outcome.decisions} == {"rejected"}


def test_the_strategy_asks_for_the_server_update_of_its_round(server_task_identity):
    global_vector, rows, server = constructed_round()
    asked: list[int] = []
    strategy, log = lab_strategy(FLTrust(fixed_server_update(server, asked), 100), len(rows))
    global_arrays = {"w": global_vector.astype(np.float32)}
    start_round(strategy, global_arrays, len(rows), server_round=3)
    replies = [reply({"w": (global_vector + row).astype(np.float32)}, pid) for pid, row in enumerate(rows)]
    arrays, _ = strategy.aggregate_train(3, replies)
    assert asked == [3] and arrays is not None
    assert [row.decision for row in log.for_round(3)][6:8] == ["rejected", "rejected"]


def test_building_fltrust_without_the_server_training_fails_clearly():
    config = experiment_config({"strategy": "fltrust"})
    with pytest.raises(ValueError, match="fltrust needs the server's training on a root dataset"):
        build(config, BuildContext(wrapped=lambda name: pytest.fail("nothing wrapped")))
    with pytest.raises(ValueError, match="root_training"):
        build_defense(config)


def test_the_builder_asks_for_a_root_set_of_the_configured_size():
    sizes: list[int] = []

    def root_training(size: int):
        sizes.append(size)
        return fixed_server_update(np.ones(3))

    defense = build_defense(experiment_config({"strategy": "fltrust", "fltrust-root-size": 37}), root_training)
    assert sizes == [37] and isinstance(defense, FLTrust)
    assert "37" in defense.describe()


# ---------------------------------------------------------------- the root set


def test_root_rows_come_from_unevaluated_rows_when_there_are_enough():
    evaluated = tuple(range(0, 100, 2))  # 50 evaluated rows of 100
    root, evaluation, source = draw_root_rows(100, evaluated, 20, seed=5)
    assert source == FROM_UNEVALUATED and evaluation == evaluated
    assert len(root) == len(set(root)) == 20 and not set(root) & set(evaluated)
    assert draw_root_rows(100, evaluated, 20, seed=5)[0] == root  # seeded
    assert draw_root_rows(100, evaluated, 20, seed=6)[0] != root


def test_root_rows_otherwise_leave_the_evaluation_set():
    evaluated = tuple(range(100))
    root, evaluation, source = draw_root_rows(100, evaluated, 30, seed=1)
    assert source == FROM_EVALUATED and len(root) == 30 and len(evaluation) == 70
    assert sorted(root + evaluation) == list(evaluated)


@pytest.mark.parametrize(("evaluated", "size", "largest"), [(100, 100, 99), (100, 0, 99), (60, 61, 59), (40, 61, 60)])
def test_a_root_set_too_large_for_the_held_out_rows_is_refused_in_one_line(evaluated, size, largest):
    with pytest.raises(ConfigError) as caught:
        draw_root_rows(100, tuple(range(evaluated)), size, seed=0)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"fltrust-root-size: bad value {size}; allowed: ")
    assert f"between 1 and {largest} " in message


def test_the_digits_root_set_is_held_out_and_never_a_clients_row():
    config = experiment_config({"num-clients": 4, "seed": 3})
    spec = DataSpec.from_config(config)
    split = split_root_set(spec, 100, config.seed)
    full = held_out_data(spec)  # test-rows = 0: every test row is evaluated
    assert split.source == FROM_EVALUATED and len(split.root) == 100 and len(split.evaluation) == len(full) - 100
    assert not set(split.root_rows) & set(split.evaluation_rows)
    np.testing.assert_array_equal(split.root.x.numpy(), full.x.numpy()[list(split.root_rows)])
    np.testing.assert_array_equal(split.evaluation.y.numpy(), full.y.numpy()[list(split.evaluation_rows)])
    client_images = {
        image.numpy().tobytes() for pid in range(len(all_partition_indices(spec))) for image in client_data(spec, pid).x
    }
    assert not any(image.numpy().tobytes() in client_images for image in split.root.x)


def test_with_test_rows_the_evaluation_set_is_what_other_defenses_see():
    config = experiment_config({"num-clients": 4, "test-rows": 200})
    spec = DataSpec.from_config(config)
    split = split_root_set(spec, 100, config.seed)
    assert split.source == FROM_UNEVALUATED
    np.testing.assert_array_equal(split.evaluation.x.numpy(), held_out_data(spec).x.numpy())
    evaluated_images = {image.numpy().tobytes() for image in held_out_data(spec).x}
    assert not any(image.numpy().tobytes() in evaluated_images for image in split.root.x)


def test_the_data_check_refuses_a_root_set_larger_than_the_held_out_rows():
    with pytest.raises(ConfigError, match=r"^fltrust-root-size: bad value 400; allowed: an integer between 1 and 359 "):
        check_run_against_data(experiment_config({"strategy": "fltrust", "fltrust-root-size": 400}))
    check_run_against_data(experiment_config({"strategy": "fedavg", "fltrust-root-size": 400}))  # no root set drawn


def test_the_server_trains_from_the_rounds_global_model_with_the_clients_settings():
    config = experiment_config({"num-clients": 4, "local-epochs": 2, "learning-rate": 0.05})
    spec = DataSpec.from_config(config)
    input_shape, classes = (1, 8, 8), 10
    root = RootDataset(
        spec,
        held_out_data(spec),
        lambda: build_model("small-cnn", input_shape, classes),
        LocalTraining.from_config(config),
        torch.device("cpu"),
        config.seed,
    )
    server_update = root.server_update(50)
    assert isinstance(server_update, RootTraining) and server_update.training.epochs == 2
    assert len(root.evaluation_set) == len(held_out_data(spec)) - 50
    torch.manual_seed(0)
    global_arrays = {
        name: tensor.numpy() for name, tensor in float_state(build_model("small-cnn", input_shape, classes)).items()
    }
    layout = UpdateLayout(global_arrays)

    first = server_update(layout, 1)
    again = server_update(layout, 1)
    other_round = server_update(layout, 2)

    assert first.dtype == torch.float64 and first.shape == (layout.size,)
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # seeded by the round
    assert not torch.equal(first, other_round)
    # The update is the trained weights minus the global ones, in the layout's order.
    trained = float_state(server_update.model)
    for slot in layout.slots:
        expected = trained[slot.name].to(torch.float64).reshape(-1) - torch.from_numpy(global_arrays[slot.name]).to(
            torch.float64
        ).reshape(-1)
        torch.testing.assert_close(other_round[slot.start : slot.stop], expected, rtol=0, atol=0)
    record = root.record()
    assert record is not None and record["size"] == 50 and record["rows"] == list(root.split.root_rows)
    with pytest.raises(ValueError, match="a root set of 50 rows was drawn"):
        root.server_update(60)


@pytest.mark.e2e
def test_an_fltrust_run_records_its_root_set_and_evaluates_on_the_rest(warm_env, tmp_path):
    completed = fl_poison_run(
        warm_env,
        "strategy=fltrust",  # fltrust-root-size: its default, 100
        "num-clients=4",
        "num-rounds=2",
        "seed=11",
        f"output-dir={tmp_path}",
        "run-name=fltrust",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    folder = Path(completed.stdout.strip().splitlines()[-1])
    config = json.loads((folder / "config.json").read_text())
    root = config["root_set"]
    spec = DataSpec.from_config(experiment_config({"num-clients": 4, "seed": 11}))
    expected = split_root_set(spec, 100, 11)
    assert root["size"] == 100 and root["rows"] == list(expected.root_rows)
    assert root["drawn_from"] == FROM_EVALUATED and root["evaluation_rows"] == len(held_out_data(spec)) - 100
    client_images = {image.numpy().tobytes() for pid in range(4) for image in client_data(spec, pid).x}
    assert not any(image.numpy().tobytes() in client_images for image in expected.root.x)
    # The final model's accuracy in summary.json is measured on the test rows outside the root set.
    model = build_model("small-cnn", (1, 8, 8), 10)
    model.load_state_dict(torch.load(folder / "model.pt"))
    model.eval()
    with torch.no_grad():
        predicted = model(expected.evaluation.x).argmax(dim=1)
    accuracy = float((predicted == expected.evaluation.y).double().mean())
    assert json.loads((folder / "summary.json").read_text())["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    decisions = {row["decision"] for row in read_rows(folder / "clients.csv")}
    assert decisions <= {"accepted", "rejected"} and "accepted" in decisions
    assert len(read_rows(folder / "rounds.csv")) == 3
