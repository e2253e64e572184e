"""The checks of a run against its data, made once before any training.

Settings are checked one by one when they are parsed (:func:`fl_poison.apps.algorithms.experiment_config`);
what they mean for a particular dataset is known only once its size, labels and images are read:
whether the partition plan gives every client samples, whether the attack's classes exist, whether
the model fits the images, whether the held-out rows hold the root set a defense trains the server
on (FLTrust). :func:`check_run_against_data` checks all of it and fails with one line
naming the setting at fault. ``fl-poison run`` calls it before Flower starts for data this machine
holds (digits, local folders); the ServerApp calls it before round 1 for every dataset.
"""

from __future__ import annotations

import warnings

import torch

from fl_poison.apps.algorithms import check_attack_classes
from fl_poison.core.config import ConfigError, ExperimentConfig
from fl_poison.core.data import DatasetInfo, DataSpec, check_data, test_data
from fl_poison.core.models import build_model, resolve_model_name
from fl_poison.core.root_dataset import RootDataset
from fl_poison.core.training import LocalTraining
from strategies.registry import build_defense

# Replies carry the whole model from every client every round: 1e8 float32 parameters are 400 MB
# per reply (ResNet-18 has 1.1e7). A larger model means images far larger than the lab's models
# are sized for (small-cnn's last layer grows with the image area).
MAX_MODEL_PARAMETERS = 100_000_000


def check_model_fits(config: ExperimentConfig, info: DatasetInfo) -> None:
    """Count the run's model's parameters without memory (PyTorch's meta device), then pass two inputs through it.

    The forward pass runs on a CPU copy of the model (only when it is within
    :data:`MAX_MODEL_PARAMETERS`): on the meta device it would import PyTorch's tracing machinery
    (torch._dynamo, a second and a half) for a check of a few milliseconds.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (``model``, ``dataset``).
    info : DatasetInfo
        The data's number of classes and input shape.

    Raises
    ------
    ConfigError
        When the model cannot take the data's inputs or would exceed :data:`MAX_MODEL_PARAMETERS`.
    """
    name = resolve_model_name(config.model, config.dataset)
    shape = info.input_shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Initializing zero-element tensors is a no-op": the error below says it
        try:
            with torch.device("meta"):
                parameters = sum(
                    parameter.numel() for parameter in build_model(name, shape, info.num_classes).parameters()
                )
            logits = None
            if parameters <= MAX_MODEL_PARAMETERS:
                with torch.no_grad():
                    logits = build_model(name, shape, info.num_classes).eval()(torch.zeros((2, *shape)))
        except (RuntimeError, ValueError) as error:
            first_line = (str(error).splitlines() or [type(error).__name__])[0]
            raise ConfigError(
                f"model: bad value {name!r} for inputs shaped {shape} ({first_line[:160]}); allowed: a model that takes the data's images"
            ) from None
    if logits is None:
        raise ConfigError(
            f"model: bad value {name!r} for inputs shaped {shape}: {parameters:,} parameters; allowed: a model of at most "
            f"{MAX_MODEL_PARAMETERS:,} parameters (smaller images or another model)"
        )
    if tuple(logits.shape) != (2, info.num_classes):
        raise ConfigError(
            f"model: bad value {name!r}: outputs shaped {tuple(logits.shape)}; allowed: one logit per class"
        )


def check_root_set(config: ExperimentConfig, info: DatasetInfo) -> None:
    """The root set the run's defense asks for (``fltrust-root-size``) fits the held-out rows.

    The defense is built as the ServerApp builds it, with a :class:`~fl_poison.core.root_dataset.RootDataset`
    (on the CPU), so that the check draws exactly the rows the run will draw; a defense that
    trains no server draws none.

    Parameters
    ----------
    config : ExperimentConfig
        The run's validated settings.
    info : DatasetInfo
        The data's number of classes and input shape.

    Raises
    ------
    ConfigError
        Naming ``fltrust-root-size`` when the held-out rows cannot hold the root set.
    """
    spec = DataSpec.from_config(config)
    name = resolve_model_name(config.model, config.dataset)
    root = RootDataset(
        spec,
        test_data(spec),
        lambda: build_model(name, info.input_shape, info.num_classes),
        LocalTraining.from_config(config),
        torch.device("cpu"),
        config.seed,
    )
    build_defense(config, root.server_update)


def check_run_against_data(config: ExperimentConfig) -> DatasetInfo:
    """Check ``config`` against its dataset before any training; return the data's classes and input shape.

    In order: the data itself (labels, images, the partition plan: see
    :func:`fl_poison.core.data.check_data`), the model against the input shape, the attack's
    class settings against the number of classes, and the defense's root set against the held-out
    rows (:func:`check_root_set`).

    Parameters
    ----------
    config : ExperimentConfig
        The run's validated settings.

    Raises
    ------
    ConfigError
        One line naming the setting at fault, its value and what is allowed.
    """
    info = check_data(DataSpec.from_config(config))
    check_model_fits(config, info)
    check_attack_classes(config, info.num_classes)
    check_root_set(config, info)
    return info
