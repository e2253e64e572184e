"""The README documents every setting with its current default."""

from __future__ import annotations

from pathlib import Path

from fl_poison.core.config import SETTINGS
from fl_poison.launch import toml_literal

README = Path(__file__).resolve().parents[1] / "README.md"


def settings_table_rows() -> dict[str, str]:
    """The rows of the README's settings table, by their first cell."""
    lines = README.read_text().splitlines()
    start = lines.index("| setting | default | meaning |")
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows[line.split("|")[1].strip()] = line
    return rows


def test_every_setting_has_a_row_with_its_default():
    rows = settings_table_rows()
    assert len(rows) == len(SETTINGS)
    for setting in SETTINGS:
        row = rows.get(f"`{setting.key}`")
        assert row is not None, setting.key
        assert f"`{toml_literal(setting.default)}`" in row, setting.key
