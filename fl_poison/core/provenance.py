"""Where a run's results go and what produced them."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

from fl_poison.core.config import ExperimentConfig

TRACKED_PACKAGES = ("fl-poison", "flwr", "flwr-datasets", "torch", "torchvision", "numpy", "scikit-learn", "ray")
# The packages whose code runs in a federated run (the ServerApp, the ClientApp, the rules, the attacks).
RUN_PACKAGES = ("fl_poison", "clients", "strategies")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CPUINFO = Path("/proc/cpuinfo")
# The /proc/cpuinfo fields of the first processor that name its kind (the same on every core).
CPUINFO_FIELDS = {"vendor_id": "vendor", "cpu family": "family", "model": "model", "stepping": "stepping"}


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


def processor_description(cpuinfo: Path = CPUINFO) -> dict[str, object]:
    """The processor a run's arithmetic ran on, for telling apart runs that should agree but do not.

    The same code, settings and seed give the same numbers only on the same kind of processor:
    torch's CPU kernels (MKL, oneDNN, its own vectorised loops) choose their code paths by
    processor, so a loss can differ in its 11th digit between two machines, and training carries
    such a difference on until rounds later the accuracy differs by whole points (measured on two
    machines of this project: final accuracy up to 0.8 points apart after 20 rounds on digits).

    Parameters
    ----------
    cpuinfo : Path
        Linux's processor table (default ``/proc/cpuinfo``); where it cannot be read (another
        system) the kind is what :func:`platform.processor` says.

    Returns
    -------
    dict[str, object]
        ``name`` (the model name), ``kind`` (vendor, family, model and stepping; the name where
        there is no table), ``torch_capability`` (the vector instruction set torch's kernels
        dispatch to, e.g. ``AVX512``), ``logical_cpus`` and ``arch``; ``signature`` joins kind and
        capability: two runs with the same code, package versions and signature do the same
        arithmetic.
    """
    import torch

    fields: dict[str, str] = {}
    try:
        text = cpuinfo.read_text()
    except OSError:
        text = ""
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    name = fields.get("model name") or platform.processor() or "unknown"
    known = [f"{label} {fields[key]}" for key, label in CPUINFO_FIELDS.items() if fields.get(key)]
    kind = ", ".join(known) if known else name
    capability = str(torch.backends.cpu.get_cpu_capability())
    return {
        "name": name,
        "kind": kind,
        "torch_capability": capability,
        "logical_cpus": os.cpu_count() or 0,
        "arch": platform.machine(),
        "signature": f"{kind}; {capability}",
    }
