"""Every sweep file shipped in ``experiments/sweeps`` expands into valid, distinct cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.sweep import expand_sweep, load_sweep
from fl_poison.apps.algorithms import experiment_config

SWEEPS = sorted((Path(__file__).resolve().parents[1] / "experiments" / "sweeps").glob("*.toml"))


def test_the_sweep_folder_is_found():
    assert len(SWEEPS) >= 10


@pytest.mark.parametrize("path", SWEEPS, ids=[path.stem for path in SWEEPS])
def test_a_shipped_sweep_expands_into_valid_distinct_cells(path):
    base, grids = load_sweep(path, {})
    cells = expand_sweep(base, grids)
    assert cells
    assert len({cell.cell_id for cell in cells}) == len(cells)
    for cell in cells:
        config = experiment_config(cell.settings)
        assert config.fingerprint() == cell.cell_id
    header = path.read_text().splitlines()[0]
    assert header.startswith("#"), "a sweep file starts with a comment saying what it is for"


def test_the_mnist_tables_of_issues_14_and_15_share_one_scale():
    """byzantine-mnist and defenses-mnist are read together: same clients, rows, rounds and training."""
    folder = SWEEPS[0].parent
    byzantine, _ = load_sweep(folder / "byzantine-mnist.toml", {})
    defenses, _ = load_sweep(folder / "defenses-mnist.toml", {})
    shared = ("dataset", "num-clients", "clients-per-round", "partitioning", "samples-per-client", "num-rounds")
    shared += ("local-epochs", "batch-size", "optimizer", "learning-rate", "test-rows", "seed")
    assert {key: byzantine[key] for key in shared} == {key: defenses[key] for key in shared}
