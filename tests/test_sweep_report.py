"""``fl-poison report DIR``: report.md holds the hand-made numbers, the failed cell's error and
links to figures that exist; a folder that is not a sweep is one line and exit 2."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from experiments.sweep import run_sweep
from experiments.sweep_report import markdown_table, write_report
from fl_poison.cli import main
from fl_poison.launch import CommandError
from tests.sweep_folder_helpers import (
    CLIP_CELL,
    FAILED,
    build_replicated_folder,
    final_accuracy,
    final_asr,
    main_cell_id,
    replicated_cell_id,
    run_on_sweep_folder,
)

T_975_1 = 12.706205  # t quantile 0.975, 1 degree of freedom (2 seeds)
T_975_2 = 4.302653  # 0.975, 2 degrees of freedom (3 seeds)

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")
LINK = re.compile(r"\]\(([^)]+)\)")


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """The hand-made sweep folder after ``fl-poison report``: the folder, the exit code, stdout."""
    return run_on_sweep_folder("report", tmp_path_factory.mktemp("report"))


def section(text: str, heading: str) -> str:
    """The lines of ``text`` from ``heading`` to the next heading of level 2."""
    start = text.index(heading + "\n")
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end >= 0 else len(text)]


def table_row(text: str, cell_id: str) -> list[str]:
    """The cells of the Markdown table row that starts with ``cell_id``'s link."""
    line = next(line for line in text.splitlines() if line.startswith(f"| [`{cell_id}`]"))
    return [part.strip() for part in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_report_prints_its_path_and_is_written(reported):
    folder, code, stdout = reported
    assert code == 0
    assert stdout.strip() == str(folder / "report.md")
    text = (folder / "report.md").read_text()
    assert text.startswith("# Sweep report: sweep\n")
    assert "13 cells, 12 finished, 1 failed" in text
    assert not list(folder.glob(".report.md.*"))  # no temporary file left behind


def test_base_settings_table_lists_the_base(reported):
    folder, _, _ = reported
    base = section((folder / "report.md").read_text(), "## Base settings")
    assert "| `num-clients` | `8` |" in base
    assert "| `dirichlet-alpha` | `0.5` |" in base


def test_grid_table_holds_the_hand_made_numbers(reported):
    folder, _, _ = reported
    grid = section((folder / "report.md").read_text(), "## Grid `main`")
    assert "- `num-malicious` = `0`, `1`, `2`" in grid
    header = next(line for line in grid.splitlines() if line.startswith("| cell |"))
    assert (
        header
        == "| cell | strategy | attack | num-malicious | status | accuracy | ASR | detection precision | rejection FPR"
        " | wall s | error |"
    )
    row = table_row(grid, main_cell_id("fedavg", "badnets", 2))
    assert row[1:6] == ["fedavg", "badnets", "2", "ok", f"{final_accuracy('fedavg', 'badnets', 2):.3f}"]
    assert row[6:10] == [f"{final_asr('fedavg', 'badnets', 2):.3f}", "–", "–", "12.5"]
    krum = table_row(grid, main_cell_id("krum", "label-flip", 1))
    assert krum[5:9] == ["0.820", "0.250", "0.500", "0.250"]
    failed = table_row(grid, main_cell_id(*FAILED))
    assert failed[4:10] == ["failed", "–", "–", "–", "–", "–"]
    assert failed[10] == r"run 7 finished:failed: boom \| the pipe is escaped"


def test_grid_without_detection_metrics_has_no_such_columns(reported):
    folder, _, _ = reported
    clip = section((folder / "report.md").read_text(), "## Grid `clip`")
    assert "- `strategy` = `norm-clip`" in clip  # an override of this grid only
    assert "| cell | num-malicious | status | accuracy | ASR | wall s |" in clip
    assert table_row(clip, CLIP_CELL)[1:] == ["1", "ok", "0.800", "0.200", "9.0"]


def test_failed_cells_section_names_the_error(reported):
    folder, _, _ = reported
    failed = section((folder / "report.md").read_text(), "## Failed cells")
    assert f"| `{main_cell_id(*FAILED)}` | main | run 7 finished:failed: boom \\| the pipe is escaped |" in failed


def test_every_link_points_to_an_existing_file_and_the_figures_are_there(reported):
    folder, _, _ = reported
    text = (folder / "report.md").read_text()
    images = IMAGE_LINK.findall(text)
    assert {
        "plots/malicious_main.png",
        "plots/heatmap_main.png",
        "plots/curves_main.png",
        "plots/curves_clip.png",
    } <= set(images)
    assert any(link.startswith("plots/labels/digits_dirichlet_8clients") for link in images)
    for link in LINK.findall(text):
        assert (folder / link).exists(), link
    cells = section(text, "## Figures of each cell")
    assert f"[update norms](plots/norms/{CLIP_CELL}.png)" in cells
    assert main_cell_id(*FAILED) not in cells


def test_markdown_table_escapes_pipes_and_line_breaks():
    assert markdown_table(["a", "b"], [["x|y", "one\ntwo"]]) == ["| a | b |", "|---|---|", r"| x\|y | one two |"]


def test_report_of_a_folder_without_sweep_csv_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"fl-poison: error: {tmp_path}: no sweep.csv; allowed: a folder written by fl-poison sweep\n"
    assert not (tmp_path / "report.md").exists()


SEED_STUDY = """
[base]
num-clients = 6
num-rounds = 2

[grid.ratios]
strategy = ["fedavg", "krum"]
attack = "blend"
num-malicious = [0, 1]

[grid.attacks]
strategy = "fedavg"
attack = ["blend", "dba"]
num-malicious = 1
"""


def stand_in_runner(settings: dict[str, object], cpus: float, gpus: float, verbose: bool) -> Path:
    """Writes what a finished run writes that the report reads; krum with 1 attacker fails."""
    if settings["strategy"] == "krum" and settings["num-malicious"] == 1:
        raise CommandError("run 3 finished:failed: krum exploded")
    folder = Path(str(settings["output-dir"])) / str(settings["run-name"])
    folder.mkdir(parents=True, exist_ok=True)
    accuracy = 0.9 - 0.1 * int(settings["num-malicious"])
    (folder / "summary.json").write_text(json.dumps({"accuracy": accuracy, "asr": 0.3, "wall_seconds": 4.0}))
    (folder / "rounds.csv").write_text(f"round,accuracy,loss,asr\n1,0.5,1.0,0.1\n2,{accuracy},0.5,0.3\n")
    return folder


def test_report_reads_a_folder_written_by_the_real_sweep_runner(tmp_path):
    sweep_file = tmp_path / "study.toml"
    sweep_file.write_text(SEED_STUDY)
    out = tmp_path / "study"
    run_sweep(sweep_file, out, runner=stand_in_runner, progress=lambda line: None)
    report = write_report(out, warn=lambda line: None).read_text()
    ratios = section(report, "## Grid `ratios`")
    assert "- `attack` = `blend`" in ratios  # fixed for this grid only
    rows = [line for line in ratios.splitlines() if line.startswith("| [`")]
    assert [row.split(" | ")[1:6] for row in rows] == [
        ["fedavg", "0", "ok", "0.900", "0.300"],
        ["fedavg", "1", "ok", "0.800", "0.300"],
        ["krum", "0", "ok", "0.900", "0.300"],
        ["krum", "1", "failed", "–", "–"],
    ]
    assert "krum exploded" in section(report, "## Failed cells")
    attacks = section(report, "## Grid `attacks`")
    assert [line.split(" | ")[1] for line in attacks.splitlines() if line.startswith("| [`")] == ["blend", "dba"]
    assert "![malicious_ratios](plots/malicious_ratios.png)" in ratios
    assert (out / "plots" / "malicious_ratios.pdf").is_file()
    assert not (out / "plots" / "malicious_attacks.png").exists()


def test_single_seed_groups_are_shown_without_an_interval(reported):
    folder, _, _ = reported
    grid = section((folder / "report.md").read_text(), "## Grid `main`")
    groups = grid[grid.index("### Groups over seeds") : grid.index("### Cells")]
    header = next(line for line in groups.splitlines() if line.startswith("| strategy |"))
    assert header == (
        "| strategy | attack | num-malicious | seeds | accuracy final | accuracy last 5 | ASR final | ASR last 5 |"
    )
    row = next(line for line in groups.splitlines() if line.startswith("| fedavg | badnets | 2 |"))
    # the hand-made rounds end at the final value and climb 0.1 a round: last 3 (all) rounds = final - 0.1
    assert (
        row
        == "| fedavg | badnets | 2 | 42 | 0.650 (1 seed, no CI) | 0.550 (1 seed, no CI) | 0.600 (1 seed, no CI) | 0.550 (1 seed, no CI) |"
    )
    failed = next(line for line in groups.splitlines() if line.startswith("| krum | badnets | 2 |"))
    assert failed == "| krum | badnets | 2 | none finished | – | – | – | – |"
    assert "One seed per group: no standard deviation, no interval and no paired difference" in groups
    assert "### Paired differences" not in grid


def test_single_seed_groups_csv_has_no_spread(reported):
    folder, _, _ = reported
    groups = pd.read_csv(folder / "groups.csv")
    row = groups[(groups.strategy == "krum") & (groups.attack == "label-flip") & (groups["num-malicious"] == 1)]
    accuracy = row[(row.metric == "accuracy") & (row.measure == "final")].iloc[0]
    assert accuracy.n == 1 and accuracy["mean"] == pytest.approx(0.82) and str(accuracy.seeds) == "42"
    assert math.isnan(accuracy["std"]) and math.isnan(accuracy.ci_low) and math.isnan(accuracy.ci_high)
    assert accuracy.cells == main_cell_id("krum", "label-flip", 1) and accuracy.grids == "main"
    assert not ((groups.strategy == "krum") & (groups.attack == "badnets") & (groups["num-malicious"] == 2)).any()


@pytest.fixture(scope="module")
def replicated_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The replicated sweep (FedAvg and Krum over seeds 1-3, Krum's seed 3 failed) after ``fl-poison report``."""
    folder = build_replicated_folder(tmp_path_factory.mktemp("replicated"))
    assert main(["report", str(folder)]) == 0
    return folder


def test_groups_table_puts_final_and_last_rounds_side_by_side(replicated_report):
    grid = section((replicated_report / "report.md").read_text(), "## Grid `seeds`")
    assert "- `seed` = `1`, `2`, `3`" in grid
    lines = grid.splitlines()
    assert "| strategy | seeds | accuracy final | accuracy last 5 | ASR final | ASR last 5 |" in lines
    # fedavg: 0.7 / 0.8 / 0.9 -> 0.800 ± 0.100, 0.8 ± 4.302653 · 0.1 / √3 = [0.552, 1.048]; last 5 rounds: final - 0.1
    assert (
        "| fedavg | 1, 2, 3 | 0.800 ± 0.100 [0.552, 1.048] | 0.700 ± 0.100 [0.452, 0.948] "
        "| 0.200 ± 0.100 [-0.048, 0.448] | 0.300 ± 0.100 [0.052, 0.548] |"
    ) in lines
    # krum: seeds 1 and 2 (seed 3 failed): 0.875 ± 0.106, 12.706205 · 0.075 = 0.953
    krum = next(line for line in lines if line.startswith("| krum | 1, 2 |"))
    assert "| 0.875 ± 0.106 [-0.078, 1.828] |" in krum


def test_paired_differences_name_the_pairs_and_the_seed_left_out(replicated_report):
    grid = section((replicated_report / "report.md").read_text(), "## Grid `seeds`")
    assert "| setting | first → second | with | metric | final | last 5 |" in grid
    # krum - fedavg per seed: 0.1, 0.15 -> +0.125 ± 12.706205 · 0.025 = [-0.193, +0.443]
    assert (
        "| strategy | fedavg → krum | – | accuracy | +0.125 [-0.193, +0.443] (2 pairs); unpaired seeds left out: 3 "
        "| +0.125 [-0.193, +0.443] (2 pairs); unpaired seeds left out: 3 |"
    ) in grid.splitlines()
    cells = grid[grid.index("### Cells") :]
    assert f"[`{replicated_cell_id('krum', 3)}`]" in cells


def test_groups_csv_loads_with_pandas_and_holds_the_hand_made_statistics(replicated_report):
    groups = pd.read_csv(replicated_report / "groups.csv")
    assert list(groups.columns) == [
        "group",
        "grids",
        "num-malicious",
        "strategy",
        "metric",
        "measure",
        "last_rounds",
        "n",
        "seeds",
        "mean",
        "std",
        "ci_low",
        "ci_high",
        "min",
        "max",
        "confidence",
        "cells",
    ]
    fedavg = groups[(groups.strategy == "fedavg") & (groups.metric == "accuracy")].set_index("measure")
    final, last = fedavg.loc["final"], fedavg.loc["last_rounds"]
    assert final.n == 3 and final.seeds == "1;2;3" and math.isnan(final.last_rounds)
    assert (final["mean"], final["std"], final["min"], final["max"]) == pytest.approx((0.8, 0.1, 0.7, 0.9))
    assert final.ci_low == pytest.approx(0.8 - T_975_2 * 0.1 / math.sqrt(3), abs=1e-6)
    assert final.ci_high == pytest.approx(0.8 + T_975_2 * 0.1 / math.sqrt(3), abs=1e-6)
    assert last.last_rounds == 5 and last["mean"] == pytest.approx(0.7)
    assert final.cells == ";".join(replicated_cell_id("fedavg", seed) for seed in (1, 2, 3))
    krum = groups[(groups.strategy == "krum") & (groups.metric == "accuracy") & (groups.measure == "final")].iloc[0]
    assert krum.n == 2 and krum.seeds == "1;2" and krum.group == 2
    assert krum.ci_high - krum["mean"] == pytest.approx(T_975_1 * 0.075, abs=1e-6)


def test_pairs_csv_holds_the_paired_differences(replicated_report):
    pairs = pd.read_csv(replicated_report / "pairs.csv")
    row = pairs[(pairs.metric == "accuracy") & (pairs.measure == "final")].iloc[0]
    assert (row.setting, row.first, row.second, row.first_group, row.second_group) == (
        "strategy",
        "fedavg",
        "krum",
        1,
        2,
    )
    assert row.pairs == 2 and row.seeds == "1;2" and str(row.unpaired_seeds) == "3"
    assert (row.first_mean, row.second_mean, row.difference) == pytest.approx((0.75, 0.875, 0.125))
    assert row["std"] == pytest.approx(0.05 / math.sqrt(2))
    assert (row.ci_low, row.ci_high) == pytest.approx((0.125 - T_975_1 * 0.025, 0.125 + T_975_1 * 0.025), abs=1e-6)
    assert math.isnan(row.strategy) and row["num-malicious"] == 1  # the differing setting is in first / second
    assert set(pairs.measure) == {"final", "last_rounds"} and set(pairs.metric) == {"accuracy", "asr"}


def test_last_rounds_option_changes_the_window(tmp_path, capsys):
    folder = build_replicated_folder(tmp_path)
    assert main(["report", str(folder), "--last-rounds", "3"]) == 0
    text = (folder / "report.md").read_text()
    # the last 3 of 6 rounds: final - 0.05 -> fedavg 0.750, krum 0.825
    assert "| fedavg | 1, 2, 3 | 0.800 ± 0.100 [0.552, 1.048] | 0.750 ± 0.100 [0.502, 0.998] |" in text
    assert "*last 3* the mean of its last 3 rounds" in text
    groups = pd.read_csv(folder / "groups.csv")
    assert set(groups.last_rounds.dropna()) == {3}
    assert main(["report", str(folder), "--last-rounds", "0"]) == 2
    assert capsys.readouterr().err.startswith("fl-poison: error: --last-rounds: bad value 0;")
