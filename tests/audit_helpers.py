"""Helpers of the audit tests: one torch thread per test module, and a finished run's folder made by hand.

The audit's subjects are small-cnns trained on the digits in a plain loop (no Flower run), saved in
a folder written as a run writes it (``config.json``, ``summary.json``, ``model.pt``), so that
``fl-poison audit`` and :func:`fl_poison.audit.loading.load_subject` read them as they read a run's.
A test module turns on the one-thread fixture by importing it::

    from audit_helpers import one_torch_thread  # noqa: F401 - autouse fixture
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import torch

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.data import DataSpec, LabeledTensors, client_data
from fl_poison.core.models import build_model
from fl_poison.core.results import write_json
from fl_poison.core.training import LocalTraining, train_locally

MODEL = "small-cnn"
INPUT_SHAPE = (1, 8, 8)
CLASSES = 10
TRAINING = LocalTraining(epochs=8, batch_size=32, learning_rate=0.05, momentum=0.9)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One torch thread, as the audit runs (see AuditSettings.threads): 20x faster on the busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def training_rows(config: ExperimentConfig) -> LabeledTensors:
    """Every client's training partition of the run ``config`` describes, in client order, as one set.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (its data settings and number of clients count).
    """
    spec = DataSpec.from_config(config)
    parts = [client_data(spec, partition) for partition in range(config.num_clients)]
    return LabeledTensors(torch.cat([part.x for part in parts]), torch.cat([part.y for part in parts]))


def trained_small_cnn(data: LabeledTensors) -> dict[str, torch.Tensor]:
    """The state of a small-cnn for 1x8x8 digits trained on ``data`` (torch seed 0, :data:`TRAINING`, on the CPU).

    Parameters
    ----------
    data : LabeledTensors
        The training rows.
    """
    torch.manual_seed(0)
    model = build_model(MODEL, INPUT_SHAPE, CLASSES)
    train_locally(model, data, TRAINING, torch.device("cpu"), 0)
    return model.state_dict()


def write_run(folder: Path, settings: Mapping[str, object], state: Mapping[str, torch.Tensor]) -> Path:
    """A finished small-cnn run's folder by hand (``config.json``, ``summary.json``, ``model.pt``); returns it.

    Parameters
    ----------
    folder : Path
        The run folder to create (its parent is the run's output folder, its name the run's name).
    settings : Mapping[str, object]
        The run's settings, as given to :func:`fl_poison.apps.algorithms.experiment_config`.
    state : Mapping[str, torch.Tensor]
        The model's state dict.
    """
    folder.mkdir(parents=True)
    config = experiment_config({**settings, "output-dir": str(folder.parent), "run-name": folder.name})
    write_json(folder / "config.json", {"settings": config.to_dict(), "model": MODEL, "num_classes": CLASSES,
                                        "input_shape": list(INPUT_SHAPE)})  # fmt: skip
    write_json(folder / "summary.json", {"accuracy": 0.0})
    torch.save(state, folder / "model.pt")
    return folder
