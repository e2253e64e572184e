"""The backdoor forensics wired into ``fl-poison audit``: the probed trigger, the server's split, the files, sweeps.

The subject is a small-cnn trained in a plain loop (no Flower run, so no e2e mark) on the digits'
training partitions with a BadNets patch stamped on a tenth of the rows; its run folder is
written by hand (``config.json`` of a BadNets run, ``summary.json``, ``model.pt``) with
``tests/audit_helpers.py``, as in ``tests/test_audit.py``. Expected values come from the attack
registry's own evaluation (the stamped test set the ServerApp scores), from hand-written
triggers, and from the model's predictions recomputed here on the rows the audit says it
evaluated on.
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from audit_helpers import (
    one_torch_thread,  # noqa: F401 - autouse fixture
    trained_small_cnn,
    training_rows,
    write_run,
)

from clients.attacks import badnets
from clients.backdoors import BackdoorEvaluation, poison_with_trigger
from clients.registry import evaluation_for
from fl_poison.apps.algorithms import experiment_config
from fl_poison.audit.forensics import (
    PROBE_NOTE,
    ForensicsSettings,
    backdoor_probe,
    run_forensics,
    server_split,
)
from fl_poison.audit.loading import load_subject
from fl_poison.audit.pipeline import AuditSettings, parse_fractions, parse_parts, planned_steps, run_audit
from fl_poison.audit.report import (
    ACTIVATION_CLUSTERING_COLUMNS,
    FINE_PRUNING_COLUMNS,
    NEURAL_CLEANSE_COLUMNS,
    STRIP_COLUMNS,
)
from fl_poison.audit.strip import StripSettings, strip_audit
from fl_poison.cli import main
from fl_poison.core.data import LabeledTensors
from fl_poison.core.results import write_json
from fl_poison.core.settings import ConfigError

TARGET = 0
BADNETS_RUN = {"dataset": "digits", "num-clients": 4, "seed": 3, "attack": "badnets", "num-malicious": 1}
CLEAN_RUN = {"dataset": "digits", "num-clients": 4, "seed": 3}
FAST_FORENSICS = ["--nc-steps", "6", "--fp-fractions", "0,0.5", "--fp-epochs", "1", "--strip-overlays", "8"]
FIGURE_LIMIT = 150_000


@pytest.fixture(scope="module")
def backdoored_state():
    """A small-cnn trained on the digits with the run's BadNets patch on a tenth of the rows, labelled 0."""
    config = experiment_config(BADNETS_RUN)
    poisoned = poison_with_trigger(training_rows(config), badnets.trigger(config, (1, 8, 8)), 0.1, TARGET, 0)
    return trained_small_cnn(poisoned)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, backdoored_state):
    """The backdoored model saved as a BadNets run and as a run without an attack (the probe's case)."""
    root = tmp_path_factory.mktemp("forensics-runs")
    return {
        "badnets": write_run(root / "badnets-run", BADNETS_RUN, backdoored_state),
        "clean": write_run(root / "clean-run", CLEAN_RUN, backdoored_state),
    }


# --- the probed trigger and the server's rows ----------------------------------------------------


def test_the_runs_trigger_and_target_are_what_the_server_scored_the_run_with(runs):
    subject = load_subject(runs["badnets"])
    probe = backdoor_probe(subject.config, subject.input_shape, subject.test_set, 10)
    evaluation = evaluation_for(subject.config, subject.test_set, 10)
    assert isinstance(evaluation, BackdoorEvaluation)
    assert probe.in_run and probe.target == evaluation.target == TARGET and probe.note == "the run's badnets trigger"
    torch.testing.assert_close(probe.trigger.apply(subject.test_set.x), evaluation.triggered["asr"].x)


def test_a_run_without_a_trigger_is_probed_with_badnets_default_patch(runs):
    subject = load_subject(runs["clean"])
    probe = backdoor_probe(subject.config, subject.input_shape, subject.test_set, 10)
    assert not probe.in_run and probe.note == PROBE_NOTE and probe.target == TARGET
    # BadNets' default on 8x8 digits: a 3x3 white square in the bottom-right corner
    expected = subject.test_set.x.clone()
    expected[:, :, 5:, 5:] = 1.0
    torch.testing.assert_close(probe.trigger.apply(subject.test_set.x), expected)


def test_dba_is_probed_with_its_global_trigger():
    config = experiment_config({**BADNETS_RUN, "attack": "dba", "num-malicious": 2})
    rows = LabeledTensors(torch.rand(12, 1, 8, 8), torch.arange(12) % 10)
    probe = backdoor_probe(config, (1, 8, 8), rows, 10)
    evaluation = evaluation_for(config, rows, 10)
    assert isinstance(evaluation, BackdoorEvaluation) and len(evaluation.triggered) == 3  # global + 2 strips
    torch.testing.assert_close(probe.trigger.apply(rows.x), evaluation.triggered["asr"].x)


def test_the_server_split_is_disjoint_seeded_and_is_strips_pool(runs):
    split = server_split(360, 100, 7)
    assert len(split.server_rows) == 100 and len(split.evaluation_rows) == 260
    assert sorted([*split.server_rows, *split.evaluation_rows]) == list(range(360))
    again = server_split(360, 100, 7)
    assert np.array_equal(split.server_rows, again.server_rows)
    assert not np.array_equal(split.server_rows, server_split(360, 100, 8).server_rows)
    subject = load_subject(runs["badnets"])
    rows = len(subject.test_set)
    strip = strip_audit(subject.model, subject.test_set, lambda x: x, TARGET, StripSettings(overlays=2, seed=7))
    assert np.array_equal(strip.pool_rows, server_split(rows, 100, 7).server_rows)
    with pytest.raises(ConfigError, match=r"^--server-rows: bad value 341;"):
        server_split(360, 341, 0)


# --- the forensics on the backdoored model -------------------------------------------------------


@pytest.fixture(scope="module")
def forensics(runs):
    subject = load_subject(runs["badnets"])
    probe = backdoor_probe(subject.config, subject.input_shape, subject.test_set, 10)
    labels = []
    result = run_forensics(subject.model, subject.test_set, probe, 10, ForensicsSettings(), 5, labels.append)
    return subject, result, labels


def test_accuracy_and_asr_are_measured_on_the_evaluation_rows_only(forensics):
    subject, result, _ = forensics
    rows = torch.from_numpy(result.split.evaluation_rows)
    images, labels = subject.test_set.x[rows], subject.test_set.y[rows]
    with torch.no_grad():
        clean = subject.model(images).argmax(1)
        triggered = subject.model(result.probe.trigger.apply(images)).argmax(1)
    assert result.clean_accuracy == pytest.approx(float((clean == labels).float().mean()))
    others = labels != TARGET
    assert result.attack_success_rate == pytest.approx(float((triggered[others] == TARGET).float().mean()))
    assert result.attack_success_rate > 0.9  # the planted backdoor took
    unpruned = next(row for row in result.fine_pruning if row.fraction == 0.0 and row.stage == "pruned")
    assert unpruned.clean_rows == len(rows) and unpruned.attack_rows == int(others.sum())
    assert unpruned.clean_accuracy == pytest.approx(result.clean_accuracy)
    assert unpruned.attack_success_rate == pytest.approx(result.attack_success_rate)
    assert set(result.strip.pool_rows) == set(result.split.server_rows)
    assert not set(result.strip.clean_rows) & set(result.split.server_rows)


def test_the_backdoor_is_found(forensics):
    _, result, _ = forensics
    assert TARGET in result.neural_cleanse.flagged
    assert int(np.argmin(result.neural_cleanse.mask_l1)) == TARGET
    assert result.reversed_success[TARGET] > 0.9
    assert result.strip.auroc > 0.75  # 0.87 measured; chance is 0.5
    before, after = result.largest_fraction()
    assert before is not None and after is not None and after.fraction == 0.9 and after.stage == "fine-tuned"
    block = result.block()
    assert [block["rows"][key] for key in ("held_out", "server", "evaluation")] == [360, 100, 260]
    assert block["neural_cleanse"]["target_flagged"] is True
    assert block["fine_pruning"]["asr_before"] == before.attack_success_rate


def test_progress_labels_one_per_step(forensics):
    _, result, labels = forensics
    assert len(labels) == ForensicsSettings().steps(10) == 10 + 1 + 5 + 1
    assert labels[0] == "neural cleanse class 0" and labels[10] == "strip" and labels[-1] == "activation clustering"
    assert [len(result.neural_cleanse_rows()), len(result.fine_pruning_rows())] == [10, 10]


def test_planned_steps_count_every_progress_call(runs):
    subject = load_subject(runs["badnets"])
    settings = AuditSettings(eps=(0.0, 0.1), samples=20, attacks=("fgsm", "deepfool"), defenses=("blur",),
                             hsj_samples=2, forensics=ForensicsSettings(server_rows=60))  # fmt: skip
    labels: list[str] = []
    result = run_audit(subject, settings, labels.append)
    assert len(labels) == planned_steps(settings, 10) == 2 + 1 + 1 + 1 + (10 + 1 + 5 + 1)
    assert result.settings["parts"] == ["evasion", "defenses", "detector", "forensics"]
    assert set(result.settings["seconds"]) == {"evasion", "defenses", "detector", "forensics"}
    with torch.no_grad():
        accuracy = float((subject.model(subject.test_set.x).argmax(1) == subject.test_set.y).float().mean())
    assert result.settings["clean_accuracy"] == pytest.approx(accuracy)


# --- the CLI -------------------------------------------------------------------------------------


def _one_error_line(capsys, argv):
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fl-poison: error: ")
    return lines[0]


def test_cli_writes_the_forensics_files(capsys, runs):
    folder = runs["badnets"]
    argv = ["audit", str(folder), "--attacks", "fgsm", "--eps", "0,0.1", "--samples", "30", "--defenses", "blur",
            "--no-detector", *FAST_FORENSICS]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trigger: the run's badnets trigger" in out and "Neural Cleanse: flagged classes" in out
    assert "STRIP: AUROC" in out and "fine-pruning at 0.5 (fine-tuned): ASR" in out and "activation clustering" in out
    audit = folder / "audit"
    names = {path.name for path in audit.iterdir()}
    assert names == {"audit.json", "evasion.csv", "defenses.csv", "accuracy_vs_eps.png", "budgets.png",
                     "examples.png", "neural_cleanse.csv", "fine_pruning.csv", "strip.csv",
                     "activation_clustering.csv", "neural_cleanse.png", "strip.png", "fine_pruning.png"}  # fmt: skip
    assert all((audit / name).stat().st_size < FIGURE_LIMIT for name in names if name.endswith(".png"))
    tables = {}
    for name, columns in (("neural_cleanse", NEURAL_CLEANSE_COLUMNS), ("fine_pruning", FINE_PRUNING_COLUMNS),
                          ("strip", STRIP_COLUMNS), ("activation_clustering", ACTIVATION_CLUSTERING_COLUMNS)):  # fmt: skip
        with open(audit / f"{name}.csv", newline="") as stream:
            reader = csv.DictReader(stream)
            assert tuple(reader.fieldnames or ()) == columns
            tables[name] = list(reader)
    assert [row["class"] for row in tables["neural_cleanse"]] == [str(k) for k in range(10)]
    assert [(row["fraction"], row["stage"]) for row in tables["fine_pruning"]] == [
        ("0.0", "pruned"), ("0.0", "fine-tuned"), ("0.5", "pruned"), ("0.5", "fine-tuned")
    ]  # fmt: skip
    settings = json.loads((audit / "audit.json").read_text())
    block = settings["forensics"]
    assert block["trigger_in_run"] is True and block["target"] == TARGET
    assert block["rows"]["server"] == 100 and block["rows"]["evaluation"] == 260
    assert block["neural_cleanse"]["settings"]["steps"] == 6 and block["strip"]["settings"]["overlays"] == 8
    assert block["strip"]["settings"]["pool_rows"] == 100 and block["fine_pruning"]["settings"]["fine_tune_epochs"] == 1
    pool = {int(row["test_row"]) for row in tables["strip"] if row["input"] == "pool"}
    scored = {int(row["test_row"]) for row in tables["strip"] if row["input"] != "pool"}
    assert pool == set(server_split(360, 100, 3).server_rows.tolist()) and not pool & scored


def test_cli_says_when_the_trigger_is_a_probe(capsys, runs):
    assert main(["audit", str(runs["clean"]), "--parts", "forensics", *FAST_FORENSICS]) == 0
    out = capsys.readouterr().out
    assert f"trigger: {PROBE_NOTE}" in out and "fgsm" not in out
    names = {path.name for path in (runs["clean"] / "audit").iterdir()}
    assert "evasion.csv" not in names and "neural_cleanse.csv" in names
    settings = json.loads((runs["clean"] / "audit" / "audit.json").read_text())
    assert settings["parts"] == ["forensics"] and settings["forensics"]["trigger"] == PROBE_NOTE


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--parts", "evasion,forensic"], "--parts: bad value 'forensic'"),
        (["--parts", "defenses,forensics"], "--parts: bad value 'defenses,forensics'"),
        (["--parts", ""], "--parts: bad value ''"),
        (["--server-rows", "0"], "--server-rows: bad value 0"),
        (["--server-rows", "341"], "--server-rows: bad value 341"),
        (["--nc-steps", "0"], "--nc-steps: bad value 0"),
        (["--strip-overlays", "0"], "--strip-overlays: bad value 0"),
        (["--fp-fractions", "0,1"], "--fp-fractions: bad value '1'"),
        (["--fp-fractions", "half"], "--fp-fractions: bad value 'half'"),
        (["--fp-epochs", "-1"], "--fp-epochs: bad value -1"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(capsys, runs, options, message):
    line = _one_error_line(capsys, ["audit", str(runs["clean"]), "--parts", "forensics", *options])
    assert message in line


def test_option_parsers():
    assert parse_parts("forensics, evasion") == ("evasion", "forensics")
    assert parse_fractions("--fp-fractions", "0.5,0,0.5") == (0.5, 0.0)
    with pytest.raises(ConfigError, match="--parts: bad value 'detector,forensics'; allowed: detector only with"):
        AuditSettings(parts=("detector", "forensics"))


# --- sweep folders -------------------------------------------------------------------------------

SWEEP_COLUMNS = ["cell_id", "grid", "strategy", "seed", "status", "accuracy", "folder", "error"]


def make_sweep(root, run, cells):
    """A sweep folder: sweep.csv and one folder per cell; ``ok`` cells are copies of ``run``."""
    root.mkdir()
    rows = []
    for cell_id, strategy, status in cells:
        if status == "ok":
            shutil.copytree(run, root / cell_id, ignore=shutil.ignore_patterns("audit"))
        else:
            (root / cell_id).mkdir()
            write_json(root / cell_id / "failed.json", {"status": "failed"})
        rows.append({"cell_id": cell_id, "grid": "g", "strategy": strategy, "seed": "3", "status": status,
                     "accuracy": "", "folder": str(root / cell_id), "error": ""})  # fmt: skip
    with open(root / "sweep.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, SWEEP_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_sweep_mode_audits_finished_cells_with_a_model_and_resumes(capsys, tmp_path, runs):
    sweep = make_sweep(
        tmp_path / "sweep", runs["badnets"], [("aaaa1111", "fedavg", "ok"), ("bbbb2222", "krum", "failed")]
    )
    argv = ["audit", str(sweep), "--parts", "forensics", *FAST_FORENSICS]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "[audit] 1/1 aaaa1111 (strategy=fedavg seed=3): audited in" in captured.err
    assert "bbbb2222: not audited: the run's status is 'failed'" in captured.err
    assert "1 cells audited, 0 already complete, 1 not auditable, 0 failed" in captured.out
    with open(sweep / "audit_summary.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1
    row = rows[0]
    assert (row["cell_id"], row["strategy"], row["seed"]) == ("aaaa1111", "fedavg", "3")
    block = json.loads((sweep / "aaaa1111" / "audit" / "audit.json").read_text())["forensics"]
    assert row["nc_flagged"] == " ".join(str(k) for k in block["neural_cleanse"]["flagged"])
    assert float(row["strip_auroc"]) == pytest.approx(block["strip"]["auroc"])
    assert float(row["fp_asr_after"]) == pytest.approx(block["fine_pruning"]["asr_after"])
    assert row["fp_fraction"] == "0.5" and row["ac_target_flagged"] in ("True", "False")
    assert not (sweep / "bbbb2222" / "audit").exists()
    written = (sweep / "aaaa1111" / "audit" / "audit.json").stat().st_mtime_ns

    assert main(argv) == 0  # a rerun skips the complete audit
    captured = capsys.readouterr()
    assert "aaaa1111 (strategy=fedavg seed=3): audit complete, skipped" in captured.err
    assert "0 cells audited, 1 already complete" in captured.out
    assert (sweep / "aaaa1111" / "audit" / "audit.json").stat().st_mtime_ns == written

    more = ["audit", str(sweep), "--parts", "evasion,forensics", "--attacks", "fgsm", "--eps", "0,0.2",
            "--samples", "20", *FAST_FORENSICS]  # fmt: skip
    assert main(more) == 0  # a part not yet done makes the audit incomplete
    assert "1 cells audited" in capsys.readouterr().out
    with open(sweep / "audit_summary.csv", newline="") as stream:
        (row,) = list(csv.DictReader(stream))
    assert row["eps_max"] == "0.2" and row["adversarial_accuracy_fgsm"] != ""

    assert main([*argv, "--force"]) == 0
    assert "1 cells audited" in capsys.readouterr().out


def test_sweep_without_an_auditable_cell_is_one_line(capsys, tmp_path, runs):
    sweep = make_sweep(tmp_path / "sweep", runs["badnets"], [("cccc3333", "fedavg", "ok")])
    (sweep / "cccc3333" / "model.pt").unlink()
    line = _one_error_line(capsys, ["audit", str(sweep)])
    assert "SWEEP_DIR: bad value" in line and "none of its 1 cells has status ok and model.pt" in line
    (sweep / "sweep.csv").write_text("a,b\n1,2\n")
    assert "has no cell_id and status columns" in _one_error_line(capsys, ["audit", str(sweep)])
