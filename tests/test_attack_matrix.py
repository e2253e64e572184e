"""The attack x rule tables of a sweep folder (experiments/attack_matrix.py) on a hand-made folder."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from experiments.attack_matrix import attack_label, attack_success, main, matrix_grid, matrix_rows
from experiments.seed_studies import cell_rows
from fl_poison.core.results import write_csv

# final accuracy per (strategy, attack, seed); each cell has 6 rounds climbing 0.05 a round to it
FINAL = {
    ("fedavg", "none", 1): 0.90,
    ("fedavg", "none", 2): 0.92,
    ("krum", "none", 1): 0.88,
    ("krum", "none", 2): 0.86,
    ("fedavg", "alie", 1): 0.50,
    ("fedavg", "alie", 2): 0.60,
    ("krum", "alie", 1): 0.30,
    ("krum", "alie", 2): 0.40,
}
WALL_SECONDS = 12.0


def build_folder(root: Path) -> Path:
    rows = []
    for number, ((strategy, attack, seed), final) in enumerate(FINAL.items()):
        cell_id = f"{number:08x}"
        folder = root / cell_id
        folder.mkdir(parents=True)
        rounds = [{"round": r, "accuracy": round(final - 0.05 * (6 - r), 6)} for r in range(0, 7)]
        write_csv(folder / "rounds.csv", rounds, ["round", "accuracy"])
        rows.append(
            {
                "cell_id": cell_id,
                "grid": "clean" if attack == "none" else "attacks",
                "num-malicious": 0 if attack == "none" else 2,
                "strategy": strategy,
                "update-attack": "auto" if attack == "none" else attack,
                "attack": "none",
                "seed": seed,
                "status": "ok",
                "accuracy": final,
                "asr": "",
                "ts_ata": "",
                "detection_precision": 0.5 if strategy == "krum" else "",
                "detection_recall": "",
                "detection_fpr": "",
                "wall_seconds": WALL_SECONDS,
                "folder": str(folder),
            }
        )
    write_csv(root / "sweep.csv", rows, list(rows[0]))
    return root


def read(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(path, newline="") as stream:
        return {(row["attack"], row["strategy"]): row for row in csv.DictReader(stream)}


def test_matrix_means_changes_and_intervals_by_hand(tmp_path, capsys):
    folder = build_folder(tmp_path / "sweep")
    assert main([str(folder), "--title", "Hand-made"]) == 0
    rows = read(folder / "matrix.csv")
    krum = rows[("alie", "krum")]
    assert int(krum["seeds"]) == 2
    assert float(krum["accuracy"]) == pytest.approx(0.35)
    assert float(krum["accuracy_std"]) == pytest.approx(math.sqrt(0.005))  # values 0.30, 0.40
    # last 5 rounds: final - 0.05 * (4, 3, 2, 1, 0) -> final - 0.1
    assert float(krum["last5_accuracy"]) == pytest.approx(0.25)
    # change paired by seed: (0.30 - 0.88, 0.40 - 0.86) = (-0.58, -0.46); t(1) = 12.706
    assert float(krum["accuracy_change"]) == pytest.approx(-0.52)
    half = 12.7062047 * math.sqrt(((0.06) ** 2 * 2) / 1) / math.sqrt(2)
    assert float(krum["accuracy_change_ci_low"]) == pytest.approx(-0.52 - half, abs=1e-6)
    assert float(krum["seconds_per_round"]) == pytest.approx(WALL_SECONDS / 6)
    assert float(krum["detection_precision"]) == pytest.approx(0.5)
    assert rows[("alie", "fedavg")]["detection_precision"] in ("", "nan")
    assert float(rows[("none", "fedavg")]["accuracy_change"]) == 0.0
    text = (folder / "matrix.md").read_text()
    assert text.startswith("# Hand-made")
    assert "| alie | 0.550 ± 0.071 | 0.350 ± 0.071 |" in text  # rules in sweep order: fedavg, krum


def test_the_figures_grids_hold_accuracy_its_change_and_the_attack_success(tmp_path):
    folder = build_folder(tmp_path / "sweep")
    rows = matrix_rows(cell_rows([folder]))
    attacks, strategies, accuracy = matrix_grid(rows, lambda row: row["accuracy"].mean)
    assert attacks == ["none", "alie"] and strategies == ["fedavg", "krum"]
    assert accuracy == pytest.approx(np.array([[0.91, 0.87], [0.55, 0.35]]))
    _, _, change = matrix_grid(rows, lambda row: row["accuracy_change"].mean)
    # paired by seed: fedavg (0.50 - 0.90, 0.60 - 0.92), krum (0.30 - 0.88, 0.40 - 0.86)
    assert change == pytest.approx(np.array([[0.0, 0.0], [-0.36, -0.52]]))
    _, _, success = matrix_grid(rows, attack_success)
    assert np.isnan(success).all()  # ALIE has neither ASR nor ts_ATA
    assert (folder / "matrix.png").exists() is False
    assert main([str(folder)]) == 0
    assert (folder / "matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](matrix.png)" in (folder / "matrix.md").read_text()


def test_attack_success_is_the_asr_else_the_ts_ata():
    from experiments.statistics import summarize

    assert attack_success({"asr": summarize([0.2, 0.4]), "ts_ata": summarize([])}) == pytest.approx(0.3)
    assert attack_success({"asr": summarize([]), "ts_ata": summarize([0.1, 0.3])}) == pytest.approx(0.2)
    assert math.isnan(attack_success({"asr": summarize([]), "ts_ata": summarize([])}))


def test_labels_and_a_folder_without_a_sweep(tmp_path, capsys):
    assert attack_label({"num-malicious": "0", "attack": "blend"}) == "none"
    assert attack_label({"num-malicious": "2", "attack": "blend", "update-attack": "scaling"}) == "blend+scaling"
    assert attack_label({"num-malicious": "2", "attack": "none", "update-attack": "alie"}) == "alie"
    assert attack_label({"num-malicious": "2", "attack": "none", "update-attack": "auto"}) == "honest"
    assert main([str(tmp_path)]) == 2
    assert "no sweep.csv" in capsys.readouterr().err


def test_byzantine_findings_are_judged_by_paired_intervals():
    from experiments.attack_matrix import byzantine_findings

    def group(values):
        return {seed: {"accuracy": value} for seed, value in zip((1, 2, 3), values, strict=True)}

    groups = {
        ("none", "krum"): group([0.90, 0.92, 0.91]),
        # Fang-Krum: 0.30 lower on every seed (+0.20 margin -> -0.10 +- 0.01: agrees)
        ("fang-krum", "krum"): group([0.60, 0.61, 0.62]),
        # Gaussian: FedAvg far below median and trimmed mean (agrees); Krum below FedAvg (differs)
        ("gaussian", "fedavg"): group([0.50, 0.40, 0.45]),
        ("gaussian", "median"): group([0.95, 0.96, 0.94]),
        ("gaussian", "trimmed-mean"): group([0.94, 0.95, 0.96]),
        ("gaussian", "krum"): group([0.30, 0.20, 0.25]),
    }
    lines = {line.split(" ")[0]: line for line in byzantine_findings(groups)}
    assert "**agrees**" in lines["Fang-Krum"]
    # per seed (0.50 - 0.95, 0.40 - 0.96, 0.45 - 0.94) = (-0.45, -0.56, -0.49): mean -0.500
    assert "median: -0.500" in lines["gaussian"] and "krum: +0.200" in lines["gaussian"]
    assert "**differs**" in lines["gaussian"]  # one claim differs: the finding differs
    assert "**not measured**" in lines["sign-flip"]  # no sign-flip cells


def test_defense_findings_use_the_clean_fedavg_run_and_the_stated_margins():
    from experiments.attack_matrix import defense_findings

    def group(accuracy, **other):
        return {
            seed: {"accuracy": value, **{name: values[i] for name, values in other.items()}}
            for i, (seed, value) in enumerate(zip((1, 2, 3), accuracy, strict=True))
        }

    groups = {
        ("none", "fedavg"): group([0.95, 0.96, 0.97]),
        # FLAME: ASR 0.01-0.03 (-0.05 -> about -0.03: agrees); accuracy 1 point below clean (+0.03 -> +0.02: agrees)
        ("badnets", "flame"): group([0.94, 0.95, 0.96], asr=[0.01, 0.02, 0.03]),
        ("blend+scaling", "flame"): group([0.94, 0.95, 0.96], asr=[0.02, 0.03, 0.01]),
        # FLTrust under ALIE: 20 points below clean on every seed (+0.05 -> -0.15: differs)
        ("alie", "fltrust"): group([0.75, 0.76, 0.77]),
        ("label-flip", "fedavg"): group([0.9, 0.9, 0.9], ts_ata=[0.5, 0.6, 0.7]),
        ("label-flip", "foolsgold"): group([0.9, 0.9, 0.9], ts_ata=[0.0, 0.1, 0.0]),
    }
    flame, fltrust, foolsgold, dnc = defense_findings(groups)
    assert "**agrees**" in flame and "badnets ASR − 0.05: -0.030" in flame
    assert "**differs**" in fltrust and "alie: -0.150" in fltrust  # one claim differs: the finding differs
    assert "minmax: – (no shared seed) → not measured" in fltrust  # its cells were not run
    assert "**agrees**" in foolsgold and "label-flip: -0.567" in foolsgold
    assert "**not measured**" in dnc


def test_rule_overview_joins_the_columns_a_reader_compares_rules_by():
    from experiments.attack_matrix import rule_overview
    from experiments.statistics import summarize

    def row(attack, strategy, **values):
        names = ("accuracy", "asr", "ts_ata", "detection_precision", "detection_recall", "detection_fpr")
        return {
            "attack": attack,
            "strategy": strategy,
            **{name: summarize(values.get(name, [])) for name in (*names, "seconds_per_round")},
        }

    rows = [
        row("none", "fedavg", accuracy=[0.97], seconds_per_round=[1.004]),
        row("none", "flame", accuracy=[0.95, 0.97], seconds_per_round=[1.5, 1.5]),
        row("blend+scaling", "fedavg", accuracy=[0.1], asr=[1.0], detection_recall=[0.0], detection_fpr=[0.0]),
        row("blend+scaling", "flame", accuracy=[0.96], asr=[0.0], detection_precision=[0.25], detection_recall=[1.0]),
    ]
    lines = rule_overview(rows).splitlines()
    # only the columns of attacks the rows have: clean, blend+scaling, its detection, seconds
    assert lines[0] == (
        "| rule | clean acc | blend+scaling acc / ASR | precision / recall / FPR (blend+scaling) | s / round (clean) |"
    )
    assert lines[2] == "| fedavg | 0.970 | 0.100 / 1.000 | – / 0.000 / 0.000 | 1.00 |"
    # two seeds: mean ± sample sd (0.95, 0.97 -> 0.960 ± 0.014); a metric the run lacks is "–"
    assert lines[3] == "| flame | 0.960 ± 0.014 | 0.960 / 0.000 | 0.250 / 1.000 / – | 1.50 ± 0.00 |"
    # none of the overview's attacks (ALIE is not one of its columns): no overview
    assert rule_overview([row("alie", "krum", accuracy=[0.5])]) == ""
    # one column only (BadNets ASR): no overview either
    assert rule_overview([row("badnets", "krum", asr=[0.5])]) == ""


def test_the_hand_made_folders_matrix_has_the_overview(tmp_path):
    folder = build_folder(tmp_path / "sweep")
    assert main([str(folder)]) == 0
    text = (folder / "matrix.md").read_text()
    # clean and ALIE accuracy (0.88, 0.86 and 0.30, 0.40); seconds per round: 12 s over 6 rounds in each seed
    assert "| krum | 0.870 ± 0.014 | 0.350 ± 0.071 | 2.00 ± 0.00 |" in text


def test_the_attack_metrics_mean_over_the_last_five_rounds(tmp_path):
    folder = tmp_path / "sweep"
    # BadNets under FLAME: ASR per round; the final round jumps (a one-round swing)
    asr_by_seed = {1: [0.9, 0.5, 0.02, 0.01, 0.03, 0.02, 0.12], 2: [0.8, 0.4, 0.01, 0.01, 0.01, 0.01, 0.01]}
    rows = []
    for seed, asr in asr_by_seed.items():
        cell = folder / f"cell{seed}"
        cell.mkdir(parents=True)
        rounds = [{"round": r, "accuracy": 0.9, "asr": value} for r, value in enumerate([0.0, *asr])]
        write_csv(cell / "rounds.csv", rounds, ["round", "accuracy", "asr"])
        rows.append(
            {
                "cell_id": f"cell{seed}",
                "num-malicious": 2,
                "strategy": "flame",
                "attack": "badnets",
                "update-attack": "auto",
                "seed": seed,
                "status": "ok",
                "accuracy": 0.9,
                "asr": asr[-1],
                "ts_ata": "",
                "wall_seconds": 7.0,
                "folder": str(cell),
            }
        )
    write_csv(folder / "sweep.csv", rows, list(rows[0]))
    assert main([str(folder)]) == 0
    flame = read(folder / "matrix.csv")[("badnets", "flame")]
    # final: (0.12, 0.01) -> 0.065; last 5 of rounds 1-7: seed 1 (0.02 + 0.01 + 0.03 + 0.02 + 0.12) / 5 = 0.04,
    # seed 2 (0.01 * 5) / 5 = 0.01 -> 0.025
    assert float(flame["asr"]) == pytest.approx(0.065)
    assert float(flame["last5_asr"]) == pytest.approx(0.025)
    assert float(flame["last5_asr_std"]) == pytest.approx(math.sqrt(2 * 0.015**2))
    assert flame["last5_ts_ata"] in ("", "nan")  # no ts_ATA in these runs
    header = next(
        line for line in (folder / "matrix.md").read_text().splitlines() if line.startswith("| attack | strategy")
    )
    # no clean run (no accuracy change), no ts_ATA, no detection: those columns are left out
    assert header == "| attack | strategy | seeds | asr | last5_asr | seconds_per_round |"


def test_a_long_title_is_wrapped_inside_a_narrow_figure(tmp_path, monkeypatch):
    import fl_poison.core.plots as plots
    from experiments.attack_matrix import plot_matrix

    drawn = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: drawn.append(figure) or [path])
    rows = matrix_rows(cell_rows([build_folder(tmp_path / "sweep")]))  # two rules: a narrow figure
    title = "A title far longer than a two-rule figure is wide, which used to run off both of its edges"
    plot_matrix(rows, title, tmp_path)
    (figure,) = drawn
    figure.canvas.draw()
    text = figure._suptitle
    assert "\n" in text.get_text() and text.get_text().replace("\n", " ") == title
    box = text.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= figure.bbox.x1  # inside the figure


def test_cells_without_rounds_csv_are_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    folder = build_folder(tmp_path / "sweep")
    for cell_id in ("00000002", "00000005"):
        (folder / cell_id / "rounds.csv").unlink()
    assert main([str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert error.startswith(f"attack_matrix: error: 2 of {len(FINAL)} finished cells have no rounds.csv")
    assert str(folder / "00000002" / "rounds.csv") in error
    assert not any((folder / name).exists() for name in ("matrix.csv", "matrix.md", "matrix.png"))
