"""Where a run's results go and what produced them."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from fl_poison.core.config import ExperimentConfig

TRACKED_PACKAGES = ("fl-poison", "flwr", "flwr-datasets", "torch", "torchvision", "numpy", "scikit-learn", "ray")
# The packages whose code runs in a federated run (the ServerApp, the ClientApp, the rules, the attacks).
RUN_PACKAGES = ("fl_poison", "clients", "strategies")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


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


def source_fingerprint(root: Path = PROJECT_ROOT, packages: Sequence[str] = RUN_PACKAGES) -> dict[str, object]:
    """A hash of the code a run executes, so that two runs' results can be told apart by code version.

    The SHA-256 over every ``*.py`` file of ``packages`` under ``root``, in sorted order of the
    relative path, each entered as its path, a NUL byte, its bytes and a NUL byte; the first 16 hex
    digits. The version number stays 0.1.0 from commit to commit and a Flower run executes a copy of
    the checkout (the FAB), so neither a version nor a git commit identifies the code; this does.

    Parameters
    ----------
    root : Path
        The folder holding the packages (default: the copy this module was imported from).
    packages : Sequence[str]
        The package folders hashed.

    Returns
    -------
    dict[str, object]
        ``sha256`` (16 hex digits) and ``files`` (how many files went into it).
    """
    digest = hashlib.sha256()
    files = sorted(path for package in packages for path in (root / package).rglob("*.py"))
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return {"sha256": digest.hexdigest()[:16], "files": len(files)}
