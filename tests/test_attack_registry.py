"""The contract every registered attack keeps: found without a list, declared completely, built and
run for an attacker, measured by the server with the summary's metric names."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import clients.attacks
from clients.adversary import ATTACK_KNOWLEDGE
from clients.base import TrainingJob
from clients.benign import BenignClient
from clients.malicious import Poisoned
from clients.registry import attack_named, behaviour_for, evaluation_for, registered_attacks
from clients.spec import AttackContext, AttackSpec
from fl_poison.apps.algorithms import catalogue, experiment_config
from fl_poison.core.catalogue import (
    CLIENT_BEHAVIOUR,
    DATA_POISONING,
    MODEL_POISONING,
    UPDATE_TRANSFORM,
    AlgorithmSpec,
    Catalogue,
    parse_config,
)
from fl_poison.core.data import DatasetInfo, LabeledTensors
from fl_poison.core.models import small_cnn
from fl_poison.core.results import ATTACK_CLASS_COLUMNS, ATTACK_SUMMARY_METRICS
from fl_poison.core.training import LocalTraining
from fl_poison.core.weights import float_state

CPU = torch.device("cpu")
ATTACK_MODULES = sorted(
    path.stem for path in Path(clients.attacks.__file__).parent.glob("*.py") if path.stem != "__init__"
)
INFO = DatasetInfo(num_classes=4, input_shape=(1, 8, 8))
BASE = {"num-clients": 4, "malicious-ids": "1,2", "seed": 7}


def by_name() -> dict[str, AttackSpec]:
    return {spec.name: spec for spec in registered_attacks()}


def test_every_module_of_the_package_is_a_registered_attack_in_name_order():
    specs = registered_attacks()
    assert [spec.name for spec in specs] == sorted(spec.name for spec in specs)
    # one module per attack, named after it
    assert sorted(spec.name.replace("-", "_") for spec in specs) == ATTACK_MODULES
    assert set(by_name()) >= {
        "ada",
        "alie",
        "badnets",
        "blend",
        "dba",
        "fang-krum",
        "fang-trmean",
        "gaussian",
        "ipm",
        "label-flip",
        "label-flip-random",
        "mimic",
        "minmax",
        "minsum",
        "nan-weights",
        "scaling",
        "sign-flip",
        "stealthy",
        "train-and-scale",
        "weight-inflation",
    }
    assert catalogue().attacks == specs


@pytest.mark.parametrize("name", ATTACK_MODULES)
def test_each_attack_module_cites_its_paper(name):
    module = __import__(f"clients.attacks.{name}", fromlist=["ATTACK"])
    assert module.__doc__ and re.search(r"\b(19|20)\d\d\b", module.__doc__), "the paper and its year on top"
    assert module.ATTACK.summary and "\n" not in module.ATTACK.summary


def test_kinds_and_their_builders():
    kinds = {name: spec.kind for name, spec in by_name().items()}
    expected = {
        "ada": DATA_POISONING,
        "alie": MODEL_POISONING,
        "badnets": DATA_POISONING,
        "blend": DATA_POISONING,
        "dba": DATA_POISONING,
        "fang-krum": MODEL_POISONING,
        "fang-trmean": MODEL_POISONING,
        "gaussian": UPDATE_TRANSFORM,
        "ipm": MODEL_POISONING,
        "label-flip": DATA_POISONING,
        "label-flip-random": DATA_POISONING,
        "mimic": MODEL_POISONING,
        "minmax": MODEL_POISONING,
        "minsum": MODEL_POISONING,
        "nan-weights": CLIENT_BEHAVIOUR,
        "scaling": UPDATE_TRANSFORM,
        "sign-flip": UPDATE_TRANSFORM,
        "stealthy": CLIENT_BEHAVIOUR,
        "train-and-scale": UPDATE_TRANSFORM,
        "weight-inflation": UPDATE_TRANSFORM,
    }
    assert {name: kinds[name] for name in expected} == expected
    assert {name: spec.knowledge for name, spec in by_name().items() if name in ("alie", "ipm", "mimic")} == {
        "alie": ("colluding", "omniscient"),
        "ipm": ("omniscient", "colluding"),
        "mimic": ("omniscient",),
    }
    for spec in by_name().values():  # every model-poisoning attack reads attack-knowledge, checked against its levels
        assert (ATTACK_KNOWLEDGE in spec.settings) == (spec.kind == MODEL_POISONING), spec.name
    assert {name for name, spec in by_name().items() if spec.trigger is not None} == {"blend", "badnets", "dba"}
    assert {name for name, spec in by_name().items() if spec.evaluation is not None} == {
        "ada",
        "badnets",
        "blend",
        "dba",
        "label-flip",
        "stealthy",
    }
    assert {
        name: spec.default_update_attack for name, spec in by_name().items() if spec.default_update_attack != "none"
    } == {"ada": "train-and-scale"}


def test_a_spec_must_give_exactly_the_builder_of_its_kind():
    with pytest.raises(ValueError, match="allowed: exactly 'poisoner'"):
        AttackSpec(name="x", kind=DATA_POISONING, summary="x")
    with pytest.raises(ValueError, match="allowed: exactly 'transform'"):
        AttackSpec(name="x", kind=UPDATE_TRANSFORM, summary="x", poisoner=lambda context: None)  # type: ignore[arg-type,return-value]


def test_shared_settings_are_one_object():
    declared: dict[str, object] = {}
    for spec in registered_attacks():
        for setting in spec.settings:
            assert declared.setdefault(setting.key, setting) is setting, setting.key
    assert {"source-class", "target-class", "poison-rate", "trigger-size"} <= set(declared)


def tiny_job(server_round: int = 2, partition_id: int = 1) -> TrainingJob:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(3)
    data = LabeledTensors(torch.rand(24, 1, 8, 8, generator=generator), torch.arange(24) % 4)
    training = LocalTraining(epochs=1, batch_size=8, learning_rate=0.1)
    return TrainingJob(
        model=small_cnn(1, 8, 4),
        data=data,
        training=training,
        device=CPU,
        seed=11,
        server_round=server_round,
        partition_id=partition_id,
    )


def attack_settings(spec: AttackSpec) -> dict[str, object]:
    if spec.kind in (UPDATE_TRANSFORM, MODEL_POISONING):
        return {"attack": "none", "update-attack": spec.name}
    return {"attack": spec.name, "update-attack": "none", "target-class": 1}


@pytest.mark.parametrize("name", [spec.name for spec in registered_attacks()])
def test_every_attack_runs_for_an_attacker_and_leaves_benign_clients_alone(name):
    spec = by_name()[name]
    config = experiment_config({**BASE, **attack_settings(spec)})
    assert behaviour_for(config, 0, 2, INFO) == BenignClient()
    job = tiny_job()
    reference = float_state(job.model)
    update = behaviour_for(config, 1, 2, INFO).run(job)
    assert update.malicious and update.attacked
    forged = {"weight-inflation": round(1e6 * len(job.data))}  # its default inflation-factor
    assert update.num_examples == forged.get(name, len(job.data))
    sent = float_state(update.model)
    assert any(not torch.equal(sent[key], reference[key]) for key in reference)  # it trained
    if name == "nan-weights":
        assert all(torch.isnan(tensor).all() for tensor in sent.values())
    else:
        assert all(torch.isfinite(tensor).all() for tensor in sent.values())


@pytest.mark.parametrize("name", [spec.name for spec in registered_attacks() if spec.evaluation is not None])
def test_every_evaluation_reports_summary_metrics(name):
    config = experiment_config({**BASE, **attack_settings(by_name()[name])})
    test_set = LabeledTensors(torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(5)), torch.arange(12) % 4)
    model = small_cnn(1, 8, 4)
    predictions = np.zeros(12, dtype=np.int64)
    metrics = evaluation_for(config, test_set, 4).metrics(model, predictions, CPU, 5, 3)
    assert "mta" in metrics
    for metric, value in metrics.items():
        if metric in ATTACK_CLASS_COLUMNS:  # a class: the target the attackers reported (3 in this call)
            assert isinstance(value, int) and value == 3, (metric, value)
            continue
        assert metric in ATTACK_SUMMARY_METRICS or re.fullmatch(r"asr_part_\d+", metric), metric
        assert isinstance(value, float) and (math.isnan(value) or 0.0 <= value <= 1.0)


def test_evaluation_of_a_run_without_attack_is_empty():
    config = experiment_config(BASE)
    assert attack_named(config.attack) is None
    assert (
        evaluation_for(config, LabeledTensors(torch.zeros(2, 1, 8, 8), torch.tensor([0, 1])), 4).metrics(
            small_cnn(1, 8, 4), np.zeros(2, np.int64), CPU, 2, -1
        )
        == {}
    )


@dataclasses.dataclass(frozen=True)
class OnlyClass:
    """A made-up poisoner: keeps the samples of one class."""

    label: int

    def poison(self, job: TrainingJob) -> Poisoned:
        kept = job.data.y == self.label
        return Poisoned(LabeledTensors(job.data.x[kept], job.data.y[kept]), self.label)


def only_class(context: AttackContext) -> OnlyClass:
    return OnlyClass(context.partition_id % context.info.num_classes)


def test_a_new_attack_needs_nothing_but_its_spec():
    made_up = AttackSpec(name="only-class", kind=DATA_POISONING, summary="Train on one class.", poisoner=only_class)
    attacks = (*registered_attacks(), made_up)
    fedavg = AlgorithmSpec(name="fedavg", kind="aggregation-rule", summary="FedAvg.")
    config = parse_config({**BASE, "attack": "only-class"}, Catalogue(attacks=attacks, defenses=(fedavg,)))
    behaviour = behaviour_for(config, 2, 3, INFO, attacks=attacks)
    update = behaviour.run(tiny_job(server_round=3, partition_id=2))
    assert update.attacked and update.attack_target == 2
    assert behaviour_for(config, 0, 3, INFO, attacks=attacks) == BenignClient()
