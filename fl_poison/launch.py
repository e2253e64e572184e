"""Running one experiment through the real Flower runtime.

:func:`run_experiment` is what ``fl-poison run KEY=VALUE ...`` and every sweep cell call: it
validates the settings (one line per bad setting, before anything starts), checks the class
settings against data held on this machine, then runs ``flwr run <app> --stream`` against the
local SuperLink (started on first use, in simulation mode) with ``num-supernodes`` set from
``num-clients``. It follows the log, echoing fl_poison's progress lines, asks the SuperLink
whether the run completed (``flwr run --stream`` exits 0 even when it failed), stops the run when
interrupted, saves Flower's log as ``flower.log`` in the result folder and returns that folder.

It also holds the ``KEY=VALUE`` parsing shared by the command line and the sweep tools
(:func:`parse_assignments`, :func:`parse_value`, :func:`toml_literal`) and :class:`CommandError`,
the one-line failure of a run. It sits above the Flower apps and below the sweep tools and the
command line (:mod:`fl_poison.cli`), which both import it.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.provenance import default_run_name
from fl_poison.core.results import DONE_MARKER, FAILED_FILE, check_new_run_folder
from fl_poison.core.settings import ConfigError, toml_literal

RUN_ID_PATTERN = re.compile(r"Successfully started run (\d+)")
# What fl_poison's Flower processes run with (a value already in the environment wins in
# ``fl-poison run``): no dependency installation, no telemetry, and the SuperExec that launches each
# simulation (and, on SuperNodes, each ClientApp process) polling for work every 0.1 s instead of
# Flower's 1 s, which measured 0.5 s less from a run's creation to its start on average here.
FLOWER_ENVIRONMENT = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
}


class CommandError(RuntimeError):
    """A failure to report as one line and a non-zero exit."""


def parse_assignments(items: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings to a mapping; values are TOML literals, bare words are strings.

    Parameters
    ----------
    items : Sequence[str]
        ``KEY=VALUE`` strings; the first ``=`` splits key from value, spaces around both are dropped.

    Raises
    ------
    ConfigError
        When an item has no ``=`` or no key.
    """
    values: dict[str, object] = {}
    for item in items:
        key, separator, raw = item.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(f"{item}: not a KEY=VALUE setting; allowed: e.g. num-rounds=20 strategy=fedprox")
        values[key] = parse_value(raw.strip())
    return values


def parse_value(raw: str) -> object:
    """A TOML literal (``20``, ``0.5``, ``true``, ``"text"``), or the raw text when it is none.

    Parameters
    ----------
    raw : str
        The text after ``=`` of a ``KEY=VALUE`` setting.
    """
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def app_directory() -> Path:
    """The folder holding fl_poison's ``pyproject.toml`` (the Flower app that ``flwr run`` builds).

    Raises
    ------
    CommandError
        When fl_poison is not installed from a clone of the repository (no ``pyproject.toml``).
    """
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise CommandError(
            f"cannot find the Flower app's pyproject.toml next to {root}; install with `pip install -e .` "
            "from a clone of the repository"
        )
    return root


def run_overrides(config: ExperimentConfig, given: dict[str, object]) -> dict[str, object]:
    """The settings to pass to ``flwr run``: the ones given, plus an absolute output-dir and a run-name.

    Parameters
    ----------
    config : ExperimentConfig
        The validated settings of ``given``.
    given : dict[str, object]
        The settings as the user gave them.
    """
    overrides = dict(given)
    overrides["output-dir"] = str(Path(config.output_dir).expanduser().resolve())
    overrides["run-name"] = config.run_name or default_run_name(config)
    return overrides


def flower_command(app: Path, overrides: dict[str, object], num_clients: int, cpus: float, gpus: float) -> list[str]:
    """The ``flwr run`` command line for one experiment.

    Parameters
    ----------
    app : Path
        The Flower app's folder (see :func:`app_directory`).
    overrides : dict[str, object]
        Settings passed as ``--run-config``.
    num_clients : int
        Number of simulated SuperNodes.
    cpus : float
        Ray CPUs per virtual client.
    gpus : float
        GPU share per virtual client (0: CPU only).
    """
    run_config = " ".join(f"{key}={toml_literal(value)}" for key, value in overrides.items())
    federation = f"num-supernodes={num_clients} client-resources-num-cpus={cpus:g} client-resources-num-gpus={gpus:g}"
    return ["flwr", "run", str(app), "--run-config", run_config, "--federation-config", federation, "--stream"]


def run_status(run_id: str, environment: dict[str, str]) -> tuple[str, str]:
    """The SuperLink's status of ``run_id`` (e.g. ``finished:completed``) and its details.

    Parameters
    ----------
    run_id : str
        The Flower run id.
    environment : dict[str, str]
        Environment of the ``flwr list`` process.

    Raises
    ------
    CommandError
        When ``flwr list`` gives no readable answer or does not know the run.
    """
    completed = subprocess.run(
        ["flwr", "list", "--run-id", run_id, "--format", "json"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
        check=False,
    )
    try:
        runs = json.loads(completed.stdout)["runs"]
    except (json.JSONDecodeError, KeyError):
        raise CommandError(
            f"cannot read the status of run {run_id}: {completed.stdout.strip() or completed.stderr.strip()}"
        ) from None
    run = next((entry for entry in runs if str(entry.get("run-id")) == run_id), None)
    if run is None:
        raise CommandError(f"the SuperLink does not know run {run_id}")
    return str(run.get("status", "")), str(run.get("status-details", ""))


def run_environment(base: Mapping[str, str]) -> dict[str, str]:
    """The environment ``flwr run`` gets: ``base`` with :data:`FLOWER_ENVIRONMENT`'s values where ``base`` has none.

    Parameters
    ----------
    base : Mapping[str, str]
        This process's environment.
    """
    return {**FLOWER_ENVIRONMENT, **base}


def flower_home(environment: dict[str, str]) -> Path:
    """Flower's home folder for ``environment`` (``FLWR_HOME``, else Flower's default), absolute, created if missing.

    ``flwr run`` runs with this folder as its working directory: the local SuperLink it starts on
    first use inherits it and keeps it for as long as it runs, and so does every simulation it
    launches. A folder that is removed later (a temporary checkout, a deleted work folder) would
    leave a SuperLink whose simulations cannot start (see :func:`stale_superlinks`). The caller
    passes the absolute path on as ``FLWR_HOME``: a relative one would otherwise be resolved a
    second time inside that working directory.

    Parameters
    ----------
    environment : dict[str, str]
        The environment ``flwr`` runs with.
    """
    from flwr.supercore.utils import get_flwr_home

    given = environment.get("FLWR_HOME")
    home = (Path(given).expanduser() if given else get_flwr_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def local_control_address(environment: dict[str, str]) -> str:
    """The Control API address of the local SuperLink ``flwr`` manages for ``environment`` (Flower's default port 39093).

    Parameters
    ----------
    environment : dict[str, str]
        The environment ``flwr`` runs with (``FLWR_LOCAL_CONTROL_API_PORT`` moves the port).
    """
    return f"127.0.0.1:{environment.get('FLWR_LOCAL_CONTROL_API_PORT', '39093')}"


def stale_superlinks(proc_root: Path, control_address: str) -> list[int]:
    """Process ids of ``flower-superlink`` processes serving ``control_address`` whose working folder was removed.

    Such a SuperLink still answers, so ``flwr run`` reuses it, but the simulation process it
    launches inherits a working folder that no longer exists, fails before its first heartbeat,
    and every run ends a minute later as ``finished:failed: No heartbeat received from the task``.
    Linux shows a removed working folder as ``<path> (deleted)``; elsewhere (no ``/proc``) nothing
    is found.

    Parameters
    ----------
    proc_root : Path
        The process table (``/proc``).
    control_address : str
        The local SuperLink's ``--control-api-address``.
    """
    found = []
    for entry in proc_root.glob("[0-9]*") if proc_root.is_dir() else ():
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            working = os.readlink(entry / "cwd")
        except OSError:  # gone meanwhile, or another user's process
            continue
        words = [word.decode(errors="replace") for word in arguments]
        if not any(Path(word).name == "flower-superlink" for word in words[:2]):
            continue
        if _option_value(words, "--control-api-address") != control_address:
            continue
        if not Path(working).is_dir():
            found.append(int(entry.name))
    return found


def _option_value(words: Sequence[str], option: str) -> str | None:
    """The word after ``option`` in a command line (None when absent or last)."""
    if option not in words[:-1]:
        return None
    return words[words.index(option) + 1]


def stop_stale_superlinks(environment: dict[str, str], proc_root: Path = Path("/proc")) -> list[int]:
    """Stop the local SuperLinks of :func:`stale_superlinks` (``flwr run`` then starts a fresh one); their ids.

    Parameters
    ----------
    environment : dict[str, str]
        The environment ``flwr`` runs with (which local SuperLink it uses).
    proc_root : Path
        The process table.
    """
    stale = stale_superlinks(proc_root, local_control_address(environment))
    for pid in stale:
        print(
            f"[fl-poison] stopping the local SuperLink (pid {pid}): the folder it was started in no longer "
            "exists, so no simulation can start in it; flwr run starts a fresh one",
            file=sys.stderr,
            flush=True,
        )
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15.0
    while any(_running(pid) for pid in stale) and time.monotonic() < deadline:
        time.sleep(0.2)
    return stale


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (an exited process not yet reaped by its parent does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    except IndexError:
        return True
    return state not in ("Z", "X")


def follow(
    command: list[str],
    environment: dict[str, str],
    verbose: bool,
    working_directory: Path | None = None,
    result_folder: Path | None = None,
) -> tuple[int, str, list[str]]:
    """Run ``command``, echoing fl_poison's progress lines (all lines when ``verbose``).

    With ``result_folder``, it stops following once the ServerApp has finished that run's work
    (its ``done`` line for the folder, and the summary written: :func:`is_done_line`): the
    ``flwr run --stream`` process is then terminated, which only ends the log stream. The run
    itself ends in the SuperLink's simulation process, whose remaining teardown (Ray's shutdown,
    the run's status reaching the SuperLink: about 3.5 s measured here) can no longer change the
    results, so the caller does not wait for it.

    Parameters
    ----------
    command : list[str]
        The ``flwr run`` command line.
    environment : dict[str, str]
        Its environment.
    verbose : bool
        Echo every line to stderr, not only fl_poison's progress lines and errors.
    working_directory : Path | None
        Its working directory (None: this process's).
    result_folder : Path | None
        The run's result folder, to stop following once its work is done (None: follow to the end).

    Returns
    -------
    tuple[int, str, list[str]]
        The exit code (0 when it stopped following a finished run), the Flower run id (empty
        when the run never started) and every line read. When interrupted it terminates the
        command and stops the run on the SuperLink.
    """
    lines: list[str] = []
    run_id = ""
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        bufsize=1,
        cwd=working_directory,
    ) as process:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                lines.append(line)
                match = RUN_ID_PATTERN.search(line)
                if match:
                    run_id = match.group(1)
                if verbose or "[fl-poison]" in line or "ERROR" in line:
                    sys.stderr.write(line)
                    sys.stderr.flush()
                if result_folder is not None and is_done_line(line, result_folder):
                    process.terminate()
                    process.wait()
                    return 0, run_id, lines
        except BaseException:
            process.terminate()
            if run_id:
                stop_run(run_id, environment)
            raise
        return process.wait(), run_id, lines


def stop_run(run_id: str, environment: dict[str, str]) -> None:
    """Ask the SuperLink to stop ``run_id`` (an interrupted ``fl-poison run`` leaves no run behind).

    Parameters
    ----------
    run_id : str
        The Flower run id.
    environment : dict[str, str]
        Environment of the ``flwr stop`` process.
    """
    subprocess.run(["flwr", "stop", run_id], capture_output=True, env=environment, timeout=60, check=False)


def check_against_data(config: ExperimentConfig) -> None:
    """For data on this machine (digits, local folders), check the run against its data before starting Flower.

    The labels, images and partition plan, the model against the input shape and the attack's
    classes (see :func:`fl_poison.apps.data_checks.check_run_against_data`). Hub datasets are
    checked by the ServerApp, which loads them anyway, before the first round.

    Parameters
    ----------
    config : ExperimentConfig
        The validated settings.
    """
    if config.dataset != "digits" and not os.path.isdir(config.dataset):
        return
    from fl_poison.apps.data_checks import check_run_against_data

    check_run_against_data(config)


def check_client_resources(cpus: float, gpus: float) -> None:
    """Check the Ray resources of a virtual client (``--cpus-per-client``, ``--gpus-per-client``).

    Ray cannot place a client that asks for more CPUs than the machine has (the run would wait
    for ever), nor use a GPU the machine lacks; a client trains on one device, so it never needs
    more than one GPU.

    Parameters
    ----------
    cpus : float
        CPUs per virtual client: finite, > 0 and at most the machine's cores.
    gpus : float
        GPU share per virtual client: finite, in [0, 1], and 0 without a visible GPU.

    Raises
    ------
    ConfigError
        Naming the option, the value and what is allowed.
    """
    cores = os.cpu_count() or 1
    if isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not math.isfinite(cpus) or not 0 < cpus <= cores:
        raise ConfigError.bad_value("--cpus-per-client", cpus, f"a number in (0, {cores}] (this machine's CPU cores)")
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or not 0 <= gpus <= 1:
        raise ConfigError.bad_value("--gpus-per-client", gpus, "a number in [0, 1] (a share of one GPU; 0 = CPU)")
    if gpus > 0:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError.bad_value("--gpus-per-client", gpus, "0 (this machine has no visible GPU)")


def check_output_dir(output_dir: Path) -> None:
    """Check that a run's folder can be created under ``output_dir``, without creating anything.

    ``output_dir`` must be a folder, or not exist yet under a folder (its nearest existing
    ancestor), that this user can write into.

    Parameters
    ----------
    output_dir : Path
        The absolute ``output-dir``.

    Raises
    ------
    ConfigError
        Naming ``output-dir`` when it is a file, lies under a file, or cannot be written.
    """
    existing = output_dir
    while not existing.exists():
        if existing.is_symlink():
            raise ConfigError.bad_value(
                "output-dir", str(output_dir), f"a writable folder ({str(existing)!r} is a broken link)"
            )
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError.bad_value("output-dir", str(output_dir), f"a writable folder ({str(existing)!r} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError.bad_value(
            "output-dir", str(output_dir), f"a folder this user can write ({str(existing)!r} is not writable)"
        )


def run_experiment(
    given: dict[str, object], cpus: float, gpus: float, verbose: bool, environment: Mapping[str, str] | None = None
) -> Path:
    """Validate ``given``, run it through ``flwr run``, and return the result folder.

    Everything that can be checked here is checked before Flower starts: every setting, the
    client resources, the output folder (writable, and the run's folder not existing yet: an
    earlier run is never overwritten) and, for data on this machine, the run against its data.

    Parameters
    ----------
    given : dict[str, object]
        Settings by key, as for ``fl-poison run`` (see ``fl-poison settings``).
    cpus : float
        Ray CPUs per virtual client.
    gpus : float
        GPU share per virtual client (0: CPU only).
    verbose : bool
        Echo Flower's whole log, not only fl_poison's progress lines.
    environment : Mapping[str, str] | None
        The environment ``flwr run`` starts from (None: this process's); a sweep passes the one
        of its warm runtime (:func:`fl_poison.warm_runtime.warm_runtime`).

    Raises
    ------
    ConfigError
        A bad setting, before anything starts.
    CommandError
        When the run did not start or did not complete.
    """
    config = experiment_config(given)
    check_client_resources(cpus, gpus)
    overrides = run_overrides(config, given)
    output_dir = Path(str(overrides["output-dir"]))
    check_output_dir(output_dir)
    folder = output_dir / str(overrides["run-name"])
    check_new_run_folder(folder)
    check_against_data(config)
    flower_environment = run_environment(os.environ if environment is None else environment)
    command = flower_command(app_directory(), overrides, config.num_clients, cpus, gpus)
    home = flower_home(flower_environment)
    flower_environment["FLWR_HOME"] = str(home)
    stop_stale_superlinks(flower_environment)
    code, run_id, lines = follow(command, flower_environment, verbose, home, folder)
    if not run_id:
        tail = "".join(lines[-15:]).strip()
        raise CommandError(f"flwr run did not start the run (exit {code}):\n{tail}")
    status, details = (
        ("finished:completed", "") if finished_by_output(lines, folder) else run_status(run_id, flower_environment)
    )
    save_flower_log(folder, lines)
    if status != "finished:completed":
        raise CommandError(f"run {run_id} {status}: {details.splitlines()[0] if details else 'no details'}")
    return folder


def finished_by_output(lines: Sequence[str], folder: Path) -> bool:
    """Whether the ServerApp finished its work: it printed its ``done`` line for ``folder`` and wrote the summary.

    The ServerApp prints ``[fl-poison] done: ... -> <folder>`` after writing ``summary.json`` and
    the final files, as the last thing it does; after that only Flower's own teardown is left,
    which cannot change the results. Asking the SuperLink for the run's status (``flwr list``,
    another Python process: about a second) is then not needed; in any other case it is.

    Parameters
    ----------
    lines : Sequence[str]
        The ``flwr run`` output.
    folder : Path
        The run's result folder.
    """
    return any(is_done_line(line, folder) for line in lines)


def is_done_line(line: str, folder: Path) -> bool:
    """Whether ``line`` is the ServerApp's ``done`` line for ``folder``, with the summary written and no failure marked.

    Parameters
    ----------
    line : str
        One line of the ``flwr run`` output.
    folder : Path
        The run's result folder.
    """
    if not (line.startswith(DONE_MARKER) and line.rstrip().endswith(f"-> {folder}")):
        return False
    return (folder / "summary.json").is_file() and not (folder / FAILED_FILE).exists()


def save_flower_log(folder: Path, lines: Sequence[str]) -> None:
    """Write Flower's log as ``flower.log`` into the run's folder, when the run created it.

    Nothing is written when the folder does not exist (the run failed before creating it), is
    a link, or already holds a ``flower.log``.

    Parameters
    ----------
    folder : Path
        The run's folder.
    lines : Sequence[str]
        Flower's log lines.
    """
    if not folder.is_dir() or folder.is_symlink():
        return
    try:
        with open(folder / "flower.log", "x") as stream:
            stream.write("".join(lines))
    except FileExistsError:
        pass
