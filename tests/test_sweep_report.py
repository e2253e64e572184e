"""``fl-poison report DIR``: report.md holds the hand-made numbers, the failed cell's error and
links to figures that exist; a folder that is not a sweep is one line and exit 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.sweep import run_sweep
from experiments.sweep_report import markdown_table, write_report
from fl_poison.cli import main
from fl_poison.launch import CommandError
from tests.sweep_folder_helpers import (
    CLIP_CELL,
    FAILED,
    final_accuracy,
    final_asr,
    main_cell_id,
    run_on_sweep_folder,
)

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
        == "| cell | strategy | attack | num-malicious | status | accuracy | ASR | detection precision | wall s | error |"
    )
    row = table_row(grid, main_cell_id("fedavg", "badnets", 2))
    assert row[1:6] == ["fedavg", "badnets", "2", "ok", f"{final_accuracy('fedavg', 'badnets', 2):.3f}"]
    assert row[6:9] == [f"{final_asr('fedavg', 'badnets', 2):.3f}", "–", "12.5"]
    krum = table_row(grid, main_cell_id("krum", "label-flip", 1))
    assert krum[5:8] == ["0.820", "0.250", "0.500"]
    failed = table_row(grid, main_cell_id(*FAILED))
    assert failed[4:9] == ["failed", "–", "–", "–", "–"]
    assert failed[9] == r"run 7 finished:failed: boom \| the pipe is escaped"


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
