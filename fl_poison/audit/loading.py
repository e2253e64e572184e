"""The audited subject: a run folder's final global model and the test set the run was evaluated on.

A run folder (written by ``fl-poison run``) holds ``config.json`` (the resolved settings, the
model's name, classes and input shape) and, with ``save-model=true`` (the default), ``model.pt``
(the final global state dict; see :meth:`fl_poison.core.results.ResultFolder.save_model`). The
settings are parsed again with the registries (:func:`fl_poison.apps.algorithms.experiment_config`),
the data settings turned into a :class:`~fl_poison.core.data.DataSpec` and the held-out test set
read as the run read it (:func:`fl_poison.core.data.test_data`, ``test-rows`` included). When a
defense drew a root set from the evaluated rows (FLTrust), those rows are left out again, as the
run left them out (:func:`fl_poison.core.root_dataset.split_root_set`), so that the model is never
audited on rows the server trained on.

Every failure a user can cause (not a run folder, a failed or unfinished run, no saved model, a
model file that does not fit the run's architecture, a dataset that cannot be read) is one
:class:`~fl_poison.core.settings.ConfigError` line naming ``RUN_DIR``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.data import DataSpec, LabeledTensors, test_data
from fl_poison.core.models import SplitClassifier, build_model
from fl_poison.core.results import FAILED_FILE
from fl_poison.core.root_dataset import FROM_EVALUATED, split_root_set
from fl_poison.core.settings import ConfigError

CONFIG_FILE = "config.json"
MODEL_FILE = "model.pt"


@dataclass(frozen=True)
class AuditSubject:
    """What an audit examines.

    Attributes
    ----------
    folder : Path
        The run folder.
    config : ExperimentConfig
        The run's settings.
    model_name : str
        The architecture (a key of :data:`fl_poison.core.models.MODEL_BUILDERS`).
    model : SplitClassifier
        The final global model, in evaluation mode on the CPU.
    test_set : LabeledTensors
        The rows the run evaluated on.
    num_classes : int
        Number of classes.
    input_shape : tuple[int, int, int]
        Channels, height, width.
    """

    folder: Path
    config: ExperimentConfig
    model_name: str
    model: SplitClassifier
    test_set: LabeledTensors
    num_classes: int
    input_shape: tuple[int, int, int]


def _bad_folder(folder: Path, reason: str) -> ConfigError:
    return ConfigError(f"RUN_DIR: bad value {str(folder)!r}; allowed: a run folder written by fl-poison run ({reason})")


def read_run_config(folder: Path) -> dict[str, Any]:
    """``config.json`` of the run folder ``folder``, checked to be a finished run's.

    Parameters
    ----------
    folder : Path
        The run folder.

    Raises
    ------
    ConfigError
        One line naming ``RUN_DIR`` when ``folder`` is not a finished run's folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise _bad_folder(folder, "no such folder")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise _bad_folder(folder, f"it has no {CONFIG_FILE}")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _bad_folder(folder, f"its {CONFIG_FILE} cannot be read: {' '.join(str(error).split())}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("settings"), dict) or "model" not in payload:
        raise _bad_folder(folder, f"its {CONFIG_FILE} has no settings and model")
    if (folder / FAILED_FILE).exists():
        raise _bad_folder(folder, f"this run failed, see {FAILED_FILE}")
    if not (folder / "summary.json").exists():
        raise _bad_folder(folder, "this run has not finished: it has no summary.json")
    return payload


def evaluation_rows(config: ExperimentConfig, spec: DataSpec, run_config: dict[str, Any]) -> LabeledTensors:
    """The test rows the run evaluated on (the test set, less a root set drawn from it).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    spec : DataSpec
        The run's data settings.
    run_config : dict[str, Any]
        The run's ``config.json``.
    """
    root_set = run_config.get("root_set")
    if isinstance(root_set, dict) and root_set.get("drawn_from") == FROM_EVALUATED:
        split = split_root_set(spec, int(root_set["size"]), config.seed)
        if list(split.root_rows) != list(root_set.get("rows", [])):
            raise ConfigError(
                f"RUN_DIR: the root set drawn again differs from the one in {CONFIG_FILE}; allowed: a run of this "
                "version of fl-poison"
            )
        return split.evaluation
    return test_data(spec)


def load_subject(folder: Path) -> AuditSubject:
    """The run folder's final model and evaluation rows (see the module docstring).

    Parameters
    ----------
    folder : Path
        The run folder.

    Raises
    ------
    ConfigError
        One line: not a finished run's folder, no ``model.pt``, a model that does not load, or a
        dataset that cannot be read.
    """
    folder = Path(folder)
    run_config = read_run_config(folder)
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        raise ConfigError(
            f"RUN_DIR: {str(folder)!r} has no {MODEL_FILE}; allowed: a run that saved its final model "
            "(rerun it with save-model=true)"
        )
    config = experiment_config(run_config["settings"])
    spec = DataSpec.from_config(config)
    try:
        test_set = evaluation_rows(config, spec, run_config)
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001  (a data source fails in many ways; each is the user's dataset)
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ConfigError(
            f"dataset: bad value {config.dataset!r}; allowed: a dataset this machine can read ({reason})"
        ) from None
    num_classes = int(run_config.get("num_classes", 0))
    input_shape = tuple(int(size) for size in run_config.get("input_shape", ()))
    if len(input_shape) != 3 or tuple(test_set.x.shape[1:]) != input_shape:
        raise _bad_folder(
            folder, f"its input shape {list(input_shape)} is not the test set's {list(test_set.x.shape[1:])}"
        )
    model_name = str(run_config["model"])
    model = build_model(model_name, input_shape, num_classes)
    try:
        state = torch.load(model_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as error:  # noqa: BLE001  (a truncated or foreign file fails in many ways)
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise ConfigError(
            f"RUN_DIR: {str(model_path)!r} is not a {model_name} state dict of this run; allowed: the run's own "
            f"{MODEL_FILE} ({reason})"
        ) from None
    model.eval()
    return AuditSubject(
        folder=folder,
        config=config,
        model_name=model_name,
        model=model,
        test_set=test_set,
        num_classes=num_classes,
        input_shape=input_shape,
    )
