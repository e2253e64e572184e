"""Helpers of the end-to-end tests: run ``fl-poison`` in a subprocess and read its CSV files."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

RUN_TIMEOUT = 300


def fl_poison_run(env: dict[str, str], *settings: str) -> subprocess.CompletedProcess:
    """``fl-poison run SETTINGS...`` in a subprocess, bounded in time."""
    return subprocess.run(
        ["fl-poison", "run", *settings], env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
    )


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV result file."""
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))
