"""The README documents every setting with its current default."""

from __future__ import annotations

from pathlib import Path

from fl_poison.cli import toml_literal
from fl_poison.config import SETTINGS

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_has_a_row_with_its_default():
    rows = {line.split("|")[1].strip(): line for line in README.read_text().splitlines() if line.startswith("| `")}
    for setting in SETTINGS:
        row = rows.get(f"`{setting.key}`")
        assert row is not None, setting.key
        assert f"`{toml_literal(setting.default)}`" in row, setting.key
