"""The README's settings table and pyproject's ``[tool.flwr.app.config]`` are what the catalogue generates."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fl_poison.apps.algorithms import catalogue
from fl_poison.core.settings import toml_literal
from fl_poison.core.settings_docs import (
    README_BEGIN,
    README_END,
    pyproject_with_table,
    readme_with_table,
    settings_markdown,
    settings_toml,
    write_settings_docs,
)

ROOT = Path(__file__).resolve().parents[1]


def test_readme_settings_table_is_the_generated_one():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_with_table(readme, catalogue()) == readme, "run `fl-poison settings --write-docs`"


def test_pyproject_config_table_is_the_generated_one():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert pyproject_with_table(pyproject, catalogue()) == pyproject, "run `fl-poison settings --write-docs`"


def test_generated_markdown_has_one_row_per_setting_with_its_default():
    lines = settings_markdown(catalogue()).splitlines()
    rows = {line.split("|")[1].strip(): line for line in lines[2:]}
    settings = catalogue().settings()
    assert len(rows) == len(settings) == len(lines) - 2
    for setting in settings:
        assert f"`{toml_literal(setting.default)}`" in rows[f"`{setting.key}`"], setting.key


def test_generated_toml_parses_to_every_default_with_its_type():
    table = tomllib.loads(settings_toml(catalogue()))["tool"]["flwr"]["app"]["config"]
    settings = catalogue().settings()
    assert list(table) == [setting.key for setting in settings]
    for setting in settings:
        assert table[setting.key] == setting.default and type(table[setting.key]) is type(setting.default), setting.key


def test_write_settings_docs_rewrites_stale_tables_and_keeps_the_rest(tmp_path):
    (tmp_path / "README.md").write_text(
        f"# Title\n\nbefore\n{README_BEGIN}\n| old | table |\n{README_END}\nafter\n", encoding="utf-8"
    )
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.flwr.app.config]\nold = 1\n\n[tool.other]\nkept = true\n', encoding="utf-8"
    )
    changed = write_settings_docs(tmp_path, catalogue())
    assert sorted(path.name for path in changed) == ["README.md", "pyproject.toml"]
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert readme.startswith("# Title\n\nbefore\n") and readme.endswith(f"{README_END}\nafter\n")
    assert "| old | table |" not in readme and settings_markdown(catalogue()) in readme
    parsed = tomllib.loads((tmp_path / "pyproject.toml").read_text(encoding="utf-8"))
    assert parsed["project"] == {"name": "x"} and parsed["tool"]["other"] == {"kept": True}
    assert "old" not in parsed["tool"]["flwr"]["app"]["config"]
    assert write_settings_docs(tmp_path, catalogue()) == []


def test_readme_without_markers_is_refused():
    with pytest.raises(ValueError, match="settings markers"):
        readme_with_table("# no table here\n", catalogue())
