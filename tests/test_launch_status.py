"""When ``fl-poison run`` may skip asking the SuperLink for the run's status: only when the
ServerApp printed its last line for this run's folder and its summary is there."""

from __future__ import annotations

import os
import time

import pytest

from fl_poison.launch import finished_by_output, follow


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


def test_following_stops_at_the_done_line_and_ends_the_stream(tmp_path):
    """A stream that would go on for a minute after the done line is cut there, its process ended."""
    (tmp_path / "summary.json").write_text("{}")
    pid_file = tmp_path / "pid"
    script = (
        f"echo $$ > {pid_file}; echo 'Successfully started run 42'; "
        f"echo '[fl-poison] done: accuracy=0.9750 -> {tmp_path}'; exec sleep 60"
    )
    started = time.monotonic()
    code, run_id, lines = follow(["sh", "-c", script], dict(os.environ), False, None, tmp_path)
    assert time.monotonic() - started < 30
    assert (code, run_id) == (0, "42")
    assert lines[-1].startswith("[fl-poison] done:")
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_without_a_finished_run_it_follows_to_the_end(tmp_path):
    """No summary: the done line does not count, the stream is read to its end and its exit code kept."""
    script = f"echo '[fl-poison] done: accuracy=0.5 -> {tmp_path}'; echo 'teardown'; exit 3"
    code, run_id, lines = follow(["sh", "-c", script], dict(os.environ), False, None, tmp_path)
    assert (code, run_id) == (3, "")
    assert lines[-1] == "teardown\n"
