"""Update transforms, the malicious client's composition, and the choice of behaviour per client and round."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

from clients.attacks.ada import AdaPoison
from clients.attacks.label_flip import SourceTargetFlip
from clients.attacks.label_flip_random import RandomLabelFlip
from clients.attacks.nan_weights import NanClient
from clients.attacks.scaling import Scaling
from clients.attacks.train_and_scale import TrainAndScale
from clients.backdoors import TriggerPoison
from clients.base import NO_TARGET, ClientUpdate, TrainingJob
from clients.benign import BenignClient
from clients.label_flipping import flip_source_to_target, random_labels
from clients.malicious import AttackerEpochs, CleanData, MaliciousClient, NoTransform
from clients.registry import behaviour_for
from clients.update_transforms import scale_to_norm, scale_update, update_norm_of
from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.config import ConfigError
from fl_poison.core.data import DatasetInfo, LabeledTensors
from fl_poison.core.models import small_cnn
from fl_poison.core.schedule import sampled_partitions
from fl_poison.core.training import LocalTraining, train_locally
from fl_poison.core.weights import float_state

CPU = torch.device("cpu")

# ---------------------------------------------------------------- transforms on state dicts


def random_state(seed: int, scale: float = 1.0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=generator) * scale,
        "conv.bias": torch.randn(4, generator=generator) * scale,
        "fc.weight": torch.randn(3, 5, generator=generator) * scale,
    }


def as_float64(state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {name: tensor.numpy().astype(np.float64) for name, tensor in state.items()}


def numpy_norm(local: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum((local[n] - reference[n]) ** 2) for n in reference)))


def test_update_norm_of_against_numpy():
    local, reference = random_state(1), random_state(2)
    expected = numpy_norm(as_float64(local), as_float64(reference))
    assert update_norm_of(local, reference) == pytest.approx(expected, rel=1e-12)
    assert update_norm_of(reference, reference) == 0.0


def test_update_norm_of_by_hand():
    local = {"a": torch.tensor([3.0, 0.0]), "b": torch.tensor([[1.0]])}
    reference = {"a": torch.tensor([0.0, 4.0]), "b": torch.tensor([[1.0]])}
    assert update_norm_of(local, reference) == 5.0


@pytest.mark.parametrize("gamma", [0.5, 1.0, 3.0, 10.0])
def test_scale_update_is_reference_plus_gamma_times_update(gamma):
    local, reference = random_state(3), random_state(4)
    scaled = scale_update(local, reference, gamma)
    local64, reference64 = as_float64(local), as_float64(reference)
    assert set(scaled) == set(reference)
    for name in reference:
        assert scaled[name].dtype == torch.float32
        expected = reference64[name] + gamma * (local64[name] - reference64[name])
        np.testing.assert_allclose(scaled[name].numpy(), expected, rtol=1e-6, atol=1e-6)
    # the input is left alone
    assert torch.equal(local["fc.weight"], random_state(3)["fc.weight"])


def test_scale_update_with_gamma_one_returns_local():
    local, reference = random_state(5), random_state(6)
    scaled = scale_update(local, reference, 1.0)
    for name in reference:
        np.testing.assert_allclose(scaled[name].numpy(), local[name].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("bound, reference_scale", [(0.7, 1.0), (5.0, 1.0), (250.0, 1.0), (1e-3, 0.0)])
def test_scale_to_norm_hits_the_bound(bound, reference_scale):
    # (the result is cast back to float32, so a bound far below the weights' magnitude loses
    # relative precision; the small bound is therefore checked around a zero reference)
    local, reference = random_state(7), random_state(8, reference_scale)
    scaled = scale_to_norm(local, reference, bound)
    scaled64, local64, reference64 = as_float64(scaled), as_float64(local), as_float64(reference)
    assert numpy_norm(scaled64, reference64) == pytest.approx(bound, rel=1e-6)
    # same direction as the original update
    direction = np.concatenate([(local64[n] - reference64[n]).ravel() for n in reference])
    sent = np.concatenate([(scaled64[n] - reference64[n]).ravel() for n in reference])
    cosine = direction @ sent / (np.linalg.norm(direction) * np.linalg.norm(sent))
    assert cosine == pytest.approx(1.0, abs=1e-6)


def test_scale_to_norm_keeps_a_zero_update_zero():
    reference = random_state(9)
    scaled = scale_to_norm({n: t.clone() for n, t in reference.items()}, reference, 4.0)
    for name in reference:
        assert torch.equal(scaled[name], reference[name])


# ---------------------------------------------------------------- the malicious client's composition

TRAINING = LocalTraining(epochs=2, batch_size=8, learning_rate=0.1, momentum=0.5)
SEED = 1234


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return small_cnn(1, 8, 10)


def tiny_data(n: int = 32) -> LabeledTensors:
    generator = torch.Generator().manual_seed(99)
    return LabeledTensors(torch.rand(n, 1, 8, 8, generator=generator), torch.arange(n) % 4)


def job_for(model: torch.nn.Module, data: LabeledTensors) -> TrainingJob:
    return TrainingJob(model=model, data=data, training=TRAINING, device=CPU, seed=SEED, server_round=3, partition_id=1)


def trained_copy(model: torch.nn.Module, data: LabeledTensors) -> dict[str, torch.Tensor]:
    clone = copy.deepcopy(model)
    train_locally(clone, data, TRAINING, CPU, SEED)
    return float_state(clone)


def test_scaling_client_sends_reference_plus_gamma_times_poisoned_update():
    model, data, gamma = tiny_model(), tiny_data(), 4.0
    reference = float_state(model)
    trained = trained_copy(model, random_labels(data, 10, SEED))
    clean_trained = trained_copy(model, data)

    update = MaliciousClient(RandomLabelFlip(10), Scaling(gamma)).run(job_for(copy.deepcopy(model), data))
    sent = float_state(update.model)
    for name in reference:
        ref64, trained64 = reference[name].double().numpy(), trained[name].double().numpy()
        np.testing.assert_allclose(
            sent[name].double().numpy(), ref64 + gamma * (trained64 - ref64), rtol=1e-5, atol=1e-6
        )
    # and not the clean-data result
    assert not all(
        torch.allclose(sent[n], reference[n] + gamma * (clean_trained[n] - reference[n]), atol=1e-4) for n in reference
    )
    assert update.malicious and update.attacked
    assert update.attack_target == NO_TARGET
    assert update.num_examples == len(data)


def test_label_flip_client_reports_its_target_and_trains_on_the_flipped_set():
    model, data = tiny_model(), tiny_data()
    poisoned = flip_source_to_target(data, source=2, target=0, rate=0.5, seed=SEED)
    expected = trained_copy(model, poisoned)
    update = MaliciousClient(SourceTargetFlip(2, 0, 0.5), NoTransform()).run(job_for(copy.deepcopy(model), data))
    sent = float_state(update.model)
    for name in expected:
        assert torch.equal(sent[name], expected[name])
    assert update.attack_target == 0 and update.attacked
    assert update.num_examples == len(data)  # the reported count is the clean partition's size


def test_train_and_scale_with_a_bound_sends_an_update_of_that_norm():
    model, data = tiny_model(), tiny_data()
    reference = float_state(model)
    update = MaliciousClient(SourceTargetFlip(2, 0, 0.5), TrainAndScale(0.37)).run(job_for(copy.deepcopy(model), data))
    sent = as_float64(float_state(update.model))
    assert numpy_norm(sent, as_float64(reference)) == pytest.approx(0.37, rel=1e-5)


def test_train_and_scale_without_a_bound_matches_an_honest_update_norm():
    model, data = tiny_model(), tiny_data()
    reference = float_state(model)
    honest_norm = numpy_norm(as_float64(trained_copy(model, data)), as_float64(reference))
    poisoned_norm = numpy_norm(
        as_float64(trained_copy(model, flip_source_to_target(data, 2, 0, 0.5, SEED))), as_float64(reference)
    )
    assert abs(poisoned_norm - honest_norm) > 1e-3 * honest_norm  # otherwise the test could not tell them apart

    update = MaliciousClient(SourceTargetFlip(2, 0, 0.5), TrainAndScale(None)).run(job_for(copy.deepcopy(model), data))
    sent = as_float64(float_state(update.model))
    assert numpy_norm(sent, as_float64(reference)) == pytest.approx(honest_norm, rel=1e-5)


def trained_with_epochs(model: torch.nn.Module, data: LabeledTensors, epochs: int) -> dict[str, torch.Tensor]:
    clone = copy.deepcopy(model)
    train_locally(clone, data, dataclasses.replace(TRAINING, epochs=epochs), CPU, SEED)
    return float_state(clone)


def test_attacker_epochs_train_the_poisoned_set_that_many_epochs():
    model, data = tiny_model(), tiny_data()
    poisoned = flip_source_to_target(data, source=2, target=0, rate=0.5, seed=SEED)
    expected = trained_with_epochs(model, poisoned, 5)  # the job's training has 2
    update = MaliciousClient(SourceTargetFlip(2, 0, 0.5), NoTransform(), epochs=5).run(
        job_for(copy.deepcopy(model), data)
    )
    sent = float_state(update.model)
    assert all(torch.equal(sent[name], expected[name]) for name in expected)
    two_epochs = trained_copy(model, poisoned)
    assert not all(torch.equal(sent[name], two_epochs[name]) for name in expected)


def test_attacker_epochs_reach_the_honest_estimate_of_train_and_scale():
    model, data = tiny_model(), tiny_data()
    reference = as_float64(float_state(model))
    honest_norm = numpy_norm(as_float64(trained_with_epochs(model, data, 4)), reference)
    update = MaliciousClient(SourceTargetFlip(2, 0, 0.5), TrainAndScale(None), epochs=4).run(
        job_for(copy.deepcopy(model), data)
    )
    assert numpy_norm(as_float64(float_state(update.model)), reference) == pytest.approx(honest_norm, rel=1e-5)


def test_a_round_the_poisoner_skips_trains_with_the_runs_epochs():
    class Skip:
        def poison(self, job):
            return None

    model, data = tiny_model(), tiny_data()
    update = MaliciousClient(Skip(), NoTransform(), epochs=5).run(job_for(copy.deepcopy(model), data))
    expected = trained_copy(model, data)  # TRAINING's 2 epochs, as a benign client
    assert all(torch.equal(float_state(update.model)[name], expected[name]) for name in expected)
    assert update.malicious and not update.attacked


def test_attacker_epochs_wrap_an_attacks_own_behaviour():
    seen = []

    class Recorder:
        def run(self, job):
            seen.append(job.training)
            return ClientUpdate(job.model, 0.0, len(job.data), malicious=True, attacked=True)

    job = job_for(tiny_model(), tiny_data(8))
    AttackerEpochs(Recorder(), 7).run(job)
    assert seen == [dataclasses.replace(TRAINING, epochs=7)]
    assert job.training == TRAINING  # the job itself is left alone


def test_nan_client_sends_only_nan():
    model, data = tiny_model(), tiny_data(8)
    update = NanClient().run(job_for(model, data))
    state = float_state(update.model)
    assert state and all(torch.isnan(tensor).all() for tensor in state.values())
    assert math.isnan(update.train_loss)
    assert update.malicious and update.attacked and update.num_examples == 8


# ---------------------------------------------------------------- choosing the behaviour

INFO = DatasetInfo(num_classes=10, input_shape=(1, 8, 8))


def config_with(**settings):
    base = {"num-clients": 10, "clients-per-round": 4, "malicious-ids": "1,3,5,7", "seed": 3}
    base.update({key.replace("_", "-"): value for key, value in settings.items()})
    return experiment_config(base)


def test_benign_partition_gets_a_benign_client():
    behaviour = behaviour_for(config_with(attack="label-flip"), 0, 5, INFO)
    assert behaviour == BenignClient() and behaviour.malicious is False


def test_node_config_turns_a_partition_malicious():
    behaviour = behaviour_for(config_with(attack="label-flip-random"), 0, 5, INFO, {"malicious": "true"})
    assert isinstance(behaviour, MaliciousClient)


def test_attacker_without_attack_trains_honestly_but_is_marked():
    assert behaviour_for(config_with(attack="none"), 1, 5, INFO) == BenignClient(malicious=True)


def test_attacker_sits_out_before_the_start_round():
    config = config_with(attack="label-flip", attack_start_round=4)
    for server_round in (1, 2, 3):
        assert behaviour_for(config, 3, server_round, INFO) == BenignClient(malicious=True)
    assert isinstance(behaviour_for(config, 3, 4, INFO), MaliciousClient)


def test_attacker_epochs_reach_attackers_in_attack_rounds_only():
    config = config_with(attack="label-flip", attack_start_round=4, attacker_epochs=6)
    assert config.attacker_epochs == 6 and config_with(attack="label-flip").attacker_epochs is None
    attacking = behaviour_for(config, 3, 4, INFO)
    assert isinstance(attacking, MaliciousClient) and attacking.epochs == 6
    assert behaviour_for(config, 3, 2, INFO) == BenignClient(malicious=True)  # before the start round
    assert behaviour_for(config, 0, 4, INFO) == BenignClient()  # a benign client
    assert behaviour_for(config_with(attack="label-flip"), 3, 4, INFO).epochs is None
    nan_client = behaviour_for(config_with(attack="nan-weights", attacker_epochs=2), 3, 4, INFO)
    assert nan_client == AttackerEpochs(NanClient(), 2)


@pytest.mark.parametrize("value", [0, -1, 1.5, "many"])
def test_attacker_epochs_refuses_what_is_not_auto_or_a_positive_integer(value):
    with pytest.raises(ConfigError, match="attacker-epochs"):
        config_with(attack="label-flip", attacker_epochs=value)


def test_attack_every_two_alternates_between_attacking_and_honest():
    config = config_with(attack="label-flip", attack_every=2)
    sampled_rounds = [r for r in range(1, 30) if 5 in sampled_partitions(10, 4, 3, r)]
    assert len(sampled_rounds) >= 4
    for index, server_round in enumerate(sampled_rounds):
        behaviour = behaviour_for(config, 5, server_round, INFO)
        if index % 2 == 0:
            assert isinstance(behaviour, MaliciousClient), server_round
        else:
            assert behaviour == BenignClient(malicious=True), server_round


@pytest.mark.parametrize(
    "settings, poisoner_type",
    [
        ({"attack": "label-flip-random"}, RandomLabelFlip),
        ({"attack": "label-flip", "source_class": 4, "target_class": 7, "poison_rate": 0.3}, SourceTargetFlip),
        ({"attack": "blend"}, TriggerPoison),
        ({"attack": "badnets"}, TriggerPoison),
        ({"attack": "dba"}, TriggerPoison),
        ({"attack": "ada"}, AdaPoison),
        ({"attack": "none", "update_attack": "scaling"}, CleanData),
    ],
)
def test_attack_picks_the_poisoner(settings, poisoner_type):
    behaviour = behaviour_for(config_with(**settings), 1, 2, INFO)
    assert isinstance(behaviour, MaliciousClient)
    assert type(behaviour.poisoner) is poisoner_type


def test_poisoner_parameters_come_from_the_config():
    flip = behaviour_for(config_with(attack="label-flip", source_class=4, target_class=7, poison_rate=0.3), 1, 2, INFO)
    assert flip.poisoner == SourceTargetFlip(4, 7, 0.3)
    assert behaviour_for(config_with(attack="label-flip-random"), 1, 2, INFO).poisoner == RandomLabelFlip(10)
    badnets = behaviour_for(config_with(attack="badnets", target_class=6, poison_rate=0.2), 1, 2, INFO).poisoner
    assert (badnets.target, badnets.rate) == (6, 0.2)
    expected_mask = torch.zeros(1, 8, 8)
    expected_mask[:, 5:, 5:] = 1.0  # 3 px (default at 8 px) bottom-right
    assert torch.equal(badnets.trigger.mask, expected_mask)
    ada = behaviour_for(
        config_with(attack="ada", ada_knowledge="partial", ada_start="converged", ada_patience=4), 1, 2, INFO
    ).poisoner
    chosen = (ada.knowledge, ada.source, ada.num_classes, ada.wait_for_convergence, ada.patience)
    assert chosen == ("partial", 2, 10, True, 4)


def test_dba_attackers_get_disjoint_parts_of_the_trigger_by_rank():
    config = config_with(attack="dba", trigger_size=4)
    masks = [behaviour_for(config, pid, 2, INFO).poisoner.trigger.mask for pid in (1, 3, 5, 7)]
    total = sum(masks)
    assert int(total.max()) == 1  # disjoint
    expected = torch.zeros(1, 8, 8)
    expected[:, 4:, 4:] = 1.0  # the 4 px global trigger in the bottom-right corner
    assert torch.equal(total, expected)
    for rank, mask in enumerate(masks):  # attacker k (in sorted id order) stamps column 4 + k
        assert torch.nonzero(mask.sum(dim=(0, 1))).flatten().tolist() == [4 + rank]


def test_dba_automatic_trigger_gives_every_attacker_a_non_empty_part():
    config = config_with(attack="dba")
    masks = [behaviour_for(config, pid, 2, INFO).poisoner.trigger.mask for pid in (1, 3, 5, 7)]
    assert all(int(mask.sum()) > 0 for mask in masks)
    total = sum(masks)
    assert int(total.max()) == 1
    side = int(round(float(total.sum()) ** 0.5))
    expected = torch.zeros(1, 8, 8)
    expected[:, 8 - side :, 8 - side :] = 1.0
    assert torch.equal(total, expected)  # together: one square in the bottom-right corner


def test_nan_attack_gives_a_nan_client():
    assert isinstance(behaviour_for(config_with(attack="nan-weights"), 7, 2, INFO), NanClient)


@pytest.mark.parametrize(
    "attack, update_attack, expected",
    [
        ("ada", "auto", TrainAndScale(None)),
        ("label-flip", "auto", NoTransform()),
        ("badnets", "auto", NoTransform()),
        ("ada", "none", NoTransform()),
        ("badnets", "train-and-scale", TrainAndScale(None)),
    ],
)
def test_update_attack_auto(attack, update_attack, expected):
    behaviour = behaviour_for(config_with(attack=attack, update_attack=update_attack), 3, 2, INFO)
    assert behaviour.transform == expected


def test_explicit_norm_bound_and_scale_factor():
    bound = behaviour_for(config_with(attack="badnets", update_attack="train-and-scale", norm_bound=2.5), 3, 2, INFO)
    assert bound.transform == TrainAndScale(2.5)
    scaled = behaviour_for(config_with(attack="badnets", update_attack="scaling", scale_factor=7), 3, 2, INFO)
    assert scaled.transform == Scaling(7.0)


def test_default_scaling_gamma_is_clients_per_round_over_attackers_sampled():
    config = config_with(attack="badnets", update_attack="scaling")
    malicious = {1, 3, 5, 7}
    gammas = set()
    for server_round in range(1, 16):
        drawn = sampled_partitions(10, 4, 3, server_round)
        attackers = len(malicious & set(drawn))
        expected = 4 / max(1, attackers)
        behaviour = behaviour_for(config, 1, server_round, INFO)
        assert behaviour.transform == Scaling(expected), server_round
        gammas.add(expected)
    assert len(gammas) >= 2  # the rounds exercise different attacker counts
