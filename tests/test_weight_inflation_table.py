"""The weight-inflation acceptance table: means and spreads over seeds against the no-attack
reference, computed by hand for a small made-up sweep folder."""

from __future__ import annotations

import math

import pytest

from experiments.weight_inflation import acceptance_rows, main
from fl_poison.core.results import read_csv, write_csv


def cell(tmp_path, cell_id, grid, strategy, accuracies, attack="none", weighting="capped"):
    folder = tmp_path / cell_id
    folder.mkdir()
    rows = [{"round": r, "accuracy": a} for r, a in enumerate(accuracies)]
    write_csv(folder / "rounds.csv", rows, ["round", "accuracy"])
    return {
        "cell_id": cell_id,
        "grid": grid,
        "strategy": strategy,
        "attack": attack,
        "client-weighting": weighting,
        "status": "ok",
        "accuracy": str(accuracies[-1]),
        "folder": str(folder),
    }


def test_groups_are_compared_with_the_mean_no_attack_final_accuracy(tmp_path):
    cells = [
        cell(tmp_path, "a", "no-attack", "fedavg", [0.1, 0.9, 0.96]),
        cell(tmp_path, "b", "no-attack", "fedavg", [0.1, 0.9, 0.98]),
        cell(tmp_path, "c", "inflation", "fedavg", [0.1, 0.5, 0.9], weighting="reported"),
        cell(tmp_path, "d", "inflation", "fedavg", [0.1, 0.7, 0.8], weighting="reported"),
        cell(tmp_path, "e", "inflation", "fedavg", [0.1, 0.9, 0.955]),
        {**cell(tmp_path, "f", "inflation", "fedavg", [0.1, 0.2, 0.3]), "status": "failed"},
    ]
    rows = {row["client_weighting"]: row for row in acceptance_rows(cells)}
    reported, capped = rows["reported"], rows["capped"]
    assert reported["seeds"] == 2
    assert reported["final_accuracy_mean"] == pytest.approx(0.85)
    assert reported["final_accuracy_std"] == pytest.approx(math.sqrt(0.005))  # sample std of 0.9, 0.8
    # last-5 mean over rounds 1..2 of each cell: (0.5 + 0.9) / 2 = 0.7, (0.7 + 0.8) / 2 = 0.75
    assert reported["last5_accuracy_mean"] == pytest.approx(0.725)
    assert reported["reference_final_accuracy"] == pytest.approx(0.97)
    assert reported["final_change"] == pytest.approx(-0.12) and reported["within_2_points"] == "false"
    assert capped["seeds"] == 1 and math.isnan(capped["final_accuracy_std"])
    assert capped["final_change"] == pytest.approx(-0.015) and capped["within_2_points"] == "true"


def test_main_writes_the_csv_and_markdown_and_refuses_a_folder_without_a_sweep(tmp_path, capsys):
    cells = [
        cell(tmp_path, "a", "no-attack", "multikrum", [0.1, 0.9]),
        cell(tmp_path, "b", "inflation", "multikrum", [0.1, 0.5], attack="label-flip-random", weighting="reported"),
    ]
    write_csv(tmp_path / "sweep.csv", cells, list(cells[0]))
    assert main([str(tmp_path)]) == 0
    written = read_csv(tmp_path / "acceptance.csv")
    assert [(row["strategy"], row["attack"], row["within_2_points"]) for row in written] == [
        ("multikrum", "label-flip-random", "false")
    ]
    assert "| multikrum | label-flip-random | reported | 1 |" in (tmp_path / "acceptance.md").read_text()
    assert main([str(tmp_path / "missing")]) == 2
    assert "run the sweep first" in capsys.readouterr().err


def test_main_refuses_cells_without_rounds_csv_in_one_line_and_writes_nothing(tmp_path, capsys):
    cells = [
        cell(tmp_path, "a", "no-attack", "multikrum", [0.1, 0.9]),
        cell(tmp_path, "b", "inflation", "multikrum", [0.1, 0.5], attack="label-flip-random", weighting="reported"),
    ]
    write_csv(tmp_path / "sweep.csv", cells, list(cells[0]))
    (tmp_path / "b" / "rounds.csv").unlink()
    assert main([str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("weight_inflation: error: 1 of 2 finished cells have no rounds.csv") and "\n" not in error
    assert not (tmp_path / "acceptance.csv").exists() and not (tmp_path / "acceptance.md").exists()
