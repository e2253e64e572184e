"""The model audit (``fl-poison audit``): intervals, the blur, ART's attacks on a tiny trained model, the CLI.

The model is a small-cnn trained on the digits' training partitions for a few epochs in a plain
loop (no Flower run: a run folder is written by hand with a run's ``config.json`` and
``model.pt``), so the module's tests take seconds.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from audit_helpers import (
    one_torch_thread,  # noqa: F401 - autouse fixture
    trained_small_cnn,
    training_rows,
    write_run,
)

from fl_poison.apps.algorithms import experiment_config
from fl_poison.audit.evasion import (
    art_classifier,
    craft,
    next_class_targets,
    perturbation_norms,
    predict,
    seeded_starting_points,
)
from fl_poison.audit.input_defenses import gaussian_blur, gaussian_kernel
from fl_poison.audit.loading import load_subject
from fl_poison.audit.pipeline import AuditSettings, parse_eps, parse_names
from fl_poison.audit.report import DEFENSE_COLUMNS, DETECTOR_COLUMNS, EVASION_COLUMNS
from fl_poison.audit.statistics import difference_interval, proportion_interval
from fl_poison.cli import main
from fl_poison.core import data as core_data
from fl_poison.core.data import DataSpec
from fl_poison.core.settings import ConfigError

# --- intervals ------------------------------------------------------------------------------


def test_two_proportion_interval_matches_seed_003_hand_computation():
    # Seed 003 §3.2.1: FGSM 0.299 vs I-FGSM 0.2881 on 10,000 MNIST images, z = 1.96:
    # d = 0.0109, se = sqrt(0.299*0.701/1e4 + 0.2881*0.7119/1e4) = 0.006439700226,
    # CI = (-0.001721812443, 0.02352181244). Our z is 1.959964 (exact), 3.6e-5 below 1.96.
    interval = difference_interval(0.299, 10_000, 0.2881, 10_000)
    assert interval.estimate == pytest.approx(0.0109)
    assert interval.low == pytest.approx(-0.001721812443, abs=1e-6)
    assert interval.high == pytest.approx(0.02352181244, abs=1e-6)


def test_wilson_interval_by_hand():
    # 8 of 10, z = 1.959964: z^2 = 3.841459; centre = (0.8 + 0.192073) / 1.384146 = 0.716741;
    # half = 1.959964 * sqrt(0.016 + 0.0096036) / 1.384146 = 1.959964 * 0.160011 / 1.384146 = 0.226577
    # -> (0.490163, 0.943317); tables of Wilson intervals give (0.490, 0.943) for 8/10.
    interval = proportion_interval(8, 10)
    assert interval.estimate == 0.8
    assert interval.low == pytest.approx(0.490163, abs=2e-6)
    assert interval.high == pytest.approx(0.943317, abs=2e-6)
    everything = proportion_interval(50, 50)
    assert everything.high == 1.0 and 0.9 < everything.low < 1.0  # no collapse to a point at 1
    assert math.isnan(proportion_interval(0, 0).estimate)


# --- Gaussian blur --------------------------------------------------------------------------


def test_blur_kernel_and_a_hand_convolution():
    kernel = gaussian_kernel(1.0)
    raw = np.exp(-(np.arange(-3, 4) ** 2) / 2.0)
    np.testing.assert_allclose(kernel, raw / raw.sum())
    image = np.zeros((1, 1, 3, 3))
    image[0, 0, 0, 0] = 1.0  # a corner pixel; edges repeated: outside the image to the left/top it is 1 too
    blurred = gaussian_blur(image, 1.0)
    # separable: value at (i, j) = a(i) * a(j), where a(k) is the weight the row/column pass gives
    # to index 0 from position k with edge repetition: a(k) = sum of kernel weights of offsets
    # mapping to index 0, i.e. offsets o with k + o <= 0 (all clamped to 0).
    offsets = np.arange(-3, 4)
    a = [kernel[(k + offsets) <= 0].sum() for k in range(3)]
    expected = np.outer(a, a)
    np.testing.assert_allclose(blurred[0, 0], expected, atol=1e-12)
    constant = np.full((2, 3, 5, 5), 0.25, dtype=np.float32)
    np.testing.assert_allclose(gaussian_blur(constant), constant, atol=1e-6)
    assert gaussian_blur(constant).dtype == np.float32


# --- a tiny trained model -------------------------------------------------------------------

SETTINGS = {"dataset": "digits", "num-clients": 4, "seed": 3}


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A finished digits run's folder, made by hand: config.json, summary.json and model.pt."""
    state = trained_small_cnn(training_rows(experiment_config(SETTINGS)))
    return write_run(tmp_path_factory.mktemp("runs") / "tiny-run", SETTINGS, state)


@pytest.fixture(scope="module")
def attacked(run_folder):
    """The run's subject, ART's classifier and 120 test images with their classes."""
    subject = load_subject(run_folder)
    classifier = art_classifier(subject.model, subject.input_shape, subject.num_classes, "cpu")
    x = subject.test_set.x[:120].numpy().astype(np.float32)
    y = subject.test_set.y[:120].numpy()
    return subject, classifier, x, y


def test_the_subject_is_the_runs_model_and_test_set(attacked, run_folder):
    subject, classifier, x, y = attacked
    config = experiment_config({**SETTINGS, "output-dir": str(run_folder.parent), "run-name": run_folder.name})
    expected = core_data.test_data(DataSpec.from_config(config))
    assert torch.equal(subject.test_set.x, expected.x) and torch.equal(subject.test_set.y, expected.y)
    accuracy = float((predict(classifier, x) == y).mean())
    assert accuracy > 0.8  # the tiny model learned the digits


def test_eps_zero_leaves_accuracy_unchanged(attacked):
    _, classifier, x, y = attacked
    clean = predict(classifier, x)
    for name in ("fgsm", "bim", "bim-targeted", "pgd"):
        adversarial = craft(name, classifier, x, y, 0.0, 10, seed=1)
        np.testing.assert_array_equal(predict(classifier, adversarial.adversarial), clean)
        assert perturbation_norms(x, adversarial.adversarial)[1].max() == 0.0
        assert (adversarial.targets is not None) == (name == "bim-targeted")
        np.testing.assert_array_equal(adversarial.rows, np.arange(len(x)))


def test_fgsm_is_a_clipped_sign_step_of_size_eps(attacked):
    subject, classifier, x, y = attacked
    eps = 0.1
    adversarial = craft("fgsm", classifier, x, y, eps, 10, seed=1).adversarial
    inputs = torch.from_numpy(x).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(subject.model(inputs), torch.from_numpy(y), reduction="sum")
    (gradient,) = torch.autograd.grad(loss, inputs)
    expected = np.clip(x + eps * np.sign(gradient.numpy()), 0.0, 1.0)
    np.testing.assert_allclose(adversarial, expected, atol=1e-6)
    _, linf = perturbation_norms(x, adversarial)
    assert linf.max() == pytest.approx(eps, abs=1e-6)
    # where the step was not clipped away, the perturbation is exactly eps
    moved = np.abs(adversarial - x)
    free = (
        (gradient.numpy() != 0)
        & (x + eps * np.sign(gradient.numpy()) >= 0)
        & (x + eps * np.sign(gradient.numpy()) <= 1)
    )
    np.testing.assert_allclose(moved[free], eps, atol=1e-6)


def test_bim_does_at_least_as_well_as_fgsm_and_targeted_bim_hits_its_targets(attacked):
    _, classifier, x, y = attacked
    for eps in (0.05, 0.1, 0.2):
        fgsm = predict(classifier, craft("fgsm", classifier, x, y, eps, 10, seed=1).adversarial)
        bim_set = craft("bim", classifier, x, y, eps, 10, seed=1)
        bim = predict(classifier, bim_set.adversarial)
        assert (bim == y).mean() <= (fgsm == y).mean()
        assert perturbation_norms(x, bim_set.adversarial)[1].max() <= eps + 1e-6
    targeted = craft("bim-targeted", classifier, x, y, 0.3, 10, seed=1)
    np.testing.assert_array_equal(targeted.targets, next_class_targets(y, 10))
    assert (predict(classifier, targeted.adversarial) == targeted.targets).mean() >= 0.9


def test_minimal_attacks_scored_within_budget(attacked):
    _, classifier, x, y = attacked
    unbounded = craft("deepfool", classifier, x, y, None, 10, seed=1)
    _, linf = perturbation_norms(x, unbounded.adversarial)
    assert unbounded.within_budget(x, 0.0).adversarial.tolist() == x.tolist()
    budget = float(np.median(linf))
    kept = unbounded.within_budget(x, budget).adversarial
    inside = linf <= budget + 1e-6
    np.testing.assert_array_equal(kept[inside], unbounded.adversarial[inside])
    np.testing.assert_array_equal(kept[~inside], x[~inside])
    wrong = predict(classifier, x) != y
    assert wrong.any()
    np.testing.assert_array_equal(unbounded.adversarial[wrong], x[wrong])  # nothing to attack there
    assert (predict(classifier, unbounded.adversarial) == y).mean() < 0.2  # DeepFool flips the rest


# --- settings and the CLI -------------------------------------------------------------------


def test_option_parsing():
    assert parse_eps("0.3, 8/255,0") == (0.0, 8 / 255, 0.3)
    assert parse_names("--attacks", "pgd,fgsm,pgd", ("fgsm", "pgd")) == ("pgd", "fgsm")
    assert parse_names("--defenses", "none", ("blur",)) == ()
    with pytest.raises(ConfigError, match="--eps: bad value '2'"):
        parse_eps("0.1,2")
    with pytest.raises(ConfigError, match="--attacks: bad value 'cw'"):
        parse_names("--attacks", "fgsm,cw", ("fgsm",))


def _one_error_line(capsys, argv):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fl-poison: error: ")
    return lines[0]


def test_cli_refuses_what_is_not_a_finished_run_with_a_model(capsys, tmp_path, run_folder):
    assert "no such folder" in _one_error_line(capsys, ["audit", str(tmp_path / "missing")])
    assert "has no config.json" in _one_error_line(capsys, ["audit", str(tmp_path)])
    without_model = tmp_path / "no-model"
    without_model.mkdir()
    for name in ("config.json", "summary.json"):
        (without_model / name).write_bytes((run_folder / name).read_bytes())
    assert "save-model=true" in _one_error_line(capsys, ["audit", str(without_model)])
    (without_model / "model.pt").write_bytes(b"not a model")
    assert "is not a small-cnn state dict" in _one_error_line(capsys, ["audit", str(without_model)])
    payload = json.loads((run_folder / "config.json").read_text())
    payload["settings"]["dataset"] = str(tmp_path / "no-such-dataset")
    (without_model / "config.json").write_text(json.dumps(payload))
    assert "dataset" in _one_error_line(capsys, ["audit", str(without_model)])
    assert "--eps: bad value" in _one_error_line(capsys, ["audit", str(run_folder), "--eps", "0.1,x"])
    for folder in (tmp_path, without_model):
        assert not (folder / "audit").exists()


def test_cli_writes_the_promised_files_and_columns(capsys, run_folder):
    argv = ["audit", str(run_folder), "--eps", "0,0.1,0.3", "--samples", "60", "--hsj-samples", "4", "--seed", "5",
            "--parts", "evasion,defenses,detector"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fgsm" in out and "targeted BIM success" in out
    audit = run_folder / "audit"
    expected = {"audit.json", "evasion.csv", "defenses.csv", "detector.csv", "accuracy_vs_eps.png", "budgets.png",
                "examples.png"}  # fmt: skip
    assert {path.name for path in audit.iterdir()} == expected
    assert not [path for path in run_folder.iterdir() if path.name.endswith(".tmp")]
    tables = {}
    for name, columns in (("evasion", EVASION_COLUMNS), ("defenses", DEFENSE_COLUMNS), ("detector", DETECTOR_COLUMNS)):
        with open(audit / f"{name}.csv", newline="") as stream:
            reader = csv.DictReader(stream)
            assert tuple(reader.fieldnames or ()) == columns
            tables[name] = list(reader)
    evasion = tables["evasion"]
    assert {row["attack"] for row in evasion} == {"fgsm", "bim", "bim-targeted", "pgd", "deepfool", "hopskipjump"}
    for row in evasion:
        if row["eps"] == "0.0":
            assert row["adversarial_accuracy"] == row["clean_accuracy"]
        assert (
            float(row["adversarial_accuracy_low"])
            <= float(row["adversarial_accuracy"])
            <= float(row["adversarial_accuracy_high"])
        )
    assert all(row["targeted_success_rate"] for row in evasion if row["attack"] == "bim-targeted")
    hsj = [row for row in evasion if row["attack"] == "hopskipjump"]
    assert {row["samples"] for row in hsj} == {"4"} and any(row["budget"] == "unbounded" for row in hsj)
    assert {row["defense"] for row in tables["defenses"]} == {"blur", "spatial-smoothing", "feature-squeezing", "jpeg"}
    assert tables["detector"] and {row["trained_on"] for row in tables["detector"]} == {"fgsm"}
    settings = json.loads((audit / "audit.json").read_text())
    assert settings["seed"] == 5 and settings["samples"] == 60 and settings["attacks"]["hopskipjump"]["samples"] == 4
    # a second audit replaces the first whole
    assert main([*argv, "--attacks", "fgsm", "--defenses", "none", "--no-detector"]) == 0
    with open(audit / "evasion.csv", newline="") as stream:
        assert {row["attack"] for row in csv.DictReader(stream)} == {"fgsm"}
    assert not [path for path in run_folder.iterdir() if path.name.startswith(".audit")]


def test_default_settings_cover_every_attack_and_defense():
    settings = AuditSettings()
    assert settings.eps[0] == 0.0 and settings.eps[1] == pytest.approx(8 / 255)
    assert len(settings.attacks) == 6 and len(settings.defenses) == 4


def test_hopskipjump_is_reproducible_from_its_seed(attacked):
    """ART draws HopSkipJump's starting points unseeded; ours are seeded, so one seed gives one result."""
    _, classifier, x, y = attacked
    first = craft("hopskipjump", classifier, x[:6], y[:6], None, 10, seed=3).adversarial
    again = craft("hopskipjump", classifier, x[:6], y[:6], None, 10, seed=3).adversarial
    np.testing.assert_array_equal(first, again)


def test_seeded_starting_points_are_adversarial_and_follow_the_seed(attacked):
    _, classifier, x, _ = attacked
    starts, found = seeded_starting_points(classifier, x[:8], tries=20, seed=5, tolerance=1e-3)
    assert found.all()  # a random image is almost never the class of a digit
    predicted = predict(classifier, x[:8])
    assert (predict(classifier, starts) != predicted).all()
    same, _ = seeded_starting_points(classifier, x[:8], tries=20, seed=5, tolerance=1e-3)
    np.testing.assert_array_equal(starts, same)
    other, _ = seeded_starting_points(classifier, x[:8], tries=20, seed=6, tolerance=1e-3)
    assert not np.array_equal(starts, other)
