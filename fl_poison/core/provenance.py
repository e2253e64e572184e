"""Where a run's results go and what produced them."""

from __future__ import annotations

import importlib.metadata
import platform
import time
from pathlib import Path

from fl_poison.core.config import ExperimentConfig

TRACKED_PACKAGES = ("fl-poison", "flwr", "flwr-datasets", "torch", "torchvision", "numpy", "scikit-learn", "ray")


def default_run_name(config: ExperimentConfig, now: float | None = None) -> str:
    """``YYYYmmdd-HHMMSS-<config hash>``: sortable by time, recognisable by settings."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{config.fingerprint()}"


def result_folder_path(config: ExperimentConfig) -> Path:
    """``output-dir/run-name`` (run-name defaults to :func:`default_run_name`)."""
    name = config.run_name or default_run_name(config)
    return Path(config.output_dir).expanduser().resolve() / name


def environment_versions() -> dict[str, str]:
    """Versions of Python and of the packages that shape results."""
    versions = {"python": platform.python_version()}
    for package in TRACKED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions
