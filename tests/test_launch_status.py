"""When ``fl-poison run`` may skip asking the SuperLink for the run's status: only when the
ServerApp printed its last line for this run's folder and its summary is there."""

from __future__ import annotations

from fl_poison.launch import finished_by_output


def lines_for(folder) -> list[str]:
    return ["INFO : Starting\n", f"[fl-poison] done: accuracy=0.9750 -> {folder}\n", "INFO : \n"]


def test_done_line_and_summary_mean_finished(tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    assert finished_by_output(lines_for(tmp_path), tmp_path)


def test_anything_less_asks_the_superlink(tmp_path):
    assert not finished_by_output(lines_for(tmp_path), tmp_path)  # no summary
    (tmp_path / "summary.json").write_text("{}")
    assert not finished_by_output(lines_for(tmp_path / "other"), tmp_path)  # another run's line
    assert not finished_by_output(["[fl-poison] round 3/5 accuracy=0.5\n"], tmp_path)  # never done
    assert not finished_by_output([f"ERROR [fl-poison] done: -> {tmp_path}\n"], tmp_path)  # not a line of its own
    (tmp_path / "failed.json").write_text("{}")
    assert not finished_by_output(lines_for(tmp_path), tmp_path)
