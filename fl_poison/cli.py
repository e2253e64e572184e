"""The ``fl-poison`` command.

``fl-poison sweep FILE --out DIR`` runs a resumable grid of them (:mod:`experiments.sweep`).
``fl-poison run KEY=VALUE ...`` runs one experiment through the real Flower runtime: it
validates the settings, then calls ``flwr run <app> --stream`` against the local SuperLink
(started on first use, in simulation mode) with ``num-supernodes`` set from ``num-clients``,
follows the log, asks the SuperLink whether the run completed (``flwr run --stream`` exits 0
even when it failed), and prints the result folder. ``fl-poison settings`` lists every setting.
``fl-poison deploy certs|keys|connection|trial`` helps run across machines (:mod:`fl_poison.deploy.commands`).
``fl-poison plot DIR`` draws a sweep folder's figures into ``DIR/plots`` (:mod:`experiments.sweep_plots`)
and ``fl-poison report DIR`` redraws them and writes ``DIR/report.md`` (:mod:`experiments.sweep_report`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

from fl_poison.core.config import SETTINGS, ConfigError, ExperimentConfig, parse_config
from fl_poison.deploy.commands import add_deploy_parser, deploy_command
from fl_poison.core.provenance import default_run_name

RUN_ID_PATTERN = re.compile(r"Successfully started run (\d+)")
FLOWER_ENVIRONMENT = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
}


class CommandError(RuntimeError):
    """A failure to report as one line and a non-zero exit."""


def parse_assignments(items: Sequence[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings to a mapping; values are TOML literals, bare words are strings."""
    values: dict[str, object] = {}
    for item in items:
        key, separator, raw = item.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(f"{item}: not a KEY=VALUE setting; allowed: e.g. num-rounds=20 strategy=fedprox")
        values[key] = parse_value(raw.strip())
    return values


def parse_value(raw: str) -> object:
    """A TOML literal (``20``, ``0.5``, ``true``, ``"text"``), or the raw text when it is none."""
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def toml_literal(value: object) -> str:
    """``value`` written as a TOML literal for ``--run-config``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # ensure_ascii=False: JSON would escape characters beyond U+FFFF as surrogate pairs, which
    # TOML rejects. TOML, unlike JSON, also requires DEL (U+007F) to be escaped.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def app_directory() -> Path:
    """The folder holding fl_poison's ``pyproject.toml`` (the Flower app that ``flwr run`` builds)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise CommandError(
            f"cannot find the Flower app's pyproject.toml next to {root}; install with `pip install -e .` "
            "from a clone of the repository"
        )
    return root


def run_overrides(config: ExperimentConfig, given: dict[str, object]) -> dict[str, object]:
    """The settings to pass to ``flwr run``: the ones given, plus an absolute output-dir and a run-name."""
    overrides = dict(given)
    overrides["output-dir"] = str(Path(config.output_dir).expanduser().resolve())
    overrides["run-name"] = config.run_name or default_run_name(config)
    return overrides


def flower_command(app: Path, overrides: dict[str, object], num_clients: int, cpus: float, gpus: float) -> list[str]:
    """The ``flwr run`` command line for one experiment."""
    run_config = " ".join(f"{key}={toml_literal(value)}" for key, value in overrides.items())
    federation = f"num-supernodes={num_clients} client-resources-num-cpus={cpus:g} client-resources-num-gpus={gpus:g}"
    return ["flwr", "run", str(app), "--run-config", run_config, "--federation-config", federation, "--stream"]


def run_status(run_id: str, environment: dict[str, str]) -> tuple[str, str]:
    """The SuperLink's status of ``run_id`` (e.g. ``finished:completed``) and its details."""
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
        raise CommandError(f"cannot read the status of run {run_id}: {completed.stdout.strip() or completed.stderr.strip()}") from None
    run = next((entry for entry in runs if str(entry.get("run-id")) == run_id), None)
    if run is None:
        raise CommandError(f"the SuperLink does not know run {run_id}")
    return str(run.get("status", "")), str(run.get("status-details", ""))


def follow(command: list[str], environment: dict[str, str], verbose: bool) -> tuple[int, str, list[str]]:
    """Run ``command``, echoing fl_poison's progress lines (all lines when ``verbose``).

    Returns the exit code, the Flower run id (empty when the run never started) and every line.
    """
    lines: list[str] = []
    run_id = ""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment, bufsize=1
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
        except BaseException:
            process.terminate()
            if run_id:
                stop_run(run_id, environment)
            raise
        return process.wait(), run_id, lines


def stop_run(run_id: str, environment: dict[str, str]) -> None:
    """Ask the SuperLink to stop ``run_id`` (an interrupted ``fl-poison run`` leaves no run behind)."""
    subprocess.run(["flwr", "stop", run_id], capture_output=True, env=environment, timeout=60, check=False)


def check_against_data(config: ExperimentConfig) -> None:
    """For data on this machine (digits, local folders), check the class settings before starting Flower.

    Hub datasets are checked by the ServerApp, which loads them anyway, before the first round.
    """
    if config.dataset != "digits" and not os.path.isdir(config.dataset):
        return
    from fl_poison.apps.attack_metrics import check_classes
    from fl_poison.core.data import DataSpec, dataset_info

    check_classes(config, dataset_info(DataSpec.from_config(config)).num_classes)


def run_experiment(given: dict[str, object], cpus: float, gpus: float, verbose: bool) -> Path:
    """Validate ``given``, run it through ``flwr run``, and return the result folder."""
    config = parse_config(given)
    check_against_data(config)
    overrides = run_overrides(config, given)
    folder = Path(str(overrides["output-dir"])) / str(overrides["run-name"])
    environment = {**os.environ, **{k: v for k, v in FLOWER_ENVIRONMENT.items() if k not in os.environ}}
    command = flower_command(app_directory(), overrides, config.num_clients, cpus, gpus)
    code, run_id, lines = follow(command, environment, verbose)
    if not run_id:
        tail = "".join(lines[-15:]).strip()
        raise CommandError(f"flwr run did not start the run (exit {code}):\n{tail}")
    status, details = run_status(run_id, environment)
    if folder.is_dir():
        (folder / "flower.log").write_text("".join(lines))
    if status != "finished:completed":
        raise CommandError(f"run {run_id} {status}: {details.splitlines()[0] if details else 'no details'}")
    return folder


def print_settings(markdown: bool = False) -> None:
    """Every setting with its default and meaning, as plain text or as a Markdown table."""
    if markdown:
        print("| setting | default | meaning |\n|---|---|---|")
        for setting in SETTINGS:
            print(f"| `{setting.key}` | `{toml_literal(setting.default)}` | {setting.help} |")
        return
    width = max(len(setting.key) for setting in SETTINGS)
    for setting in SETTINGS:
        print(f"{setting.key:<{width}}  {toml_literal(setting.default):<10}  {setting.help}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def sweep_command(file: Path, out: Path, jobs: int, assignments: Sequence[str], gpus_per_client: float) -> int:
    """``fl-poison sweep``: run the sweep; Ctrl-C or SIGTERM stops it with every finished cell kept."""
    from experiments.sweep import SWEEP_TABLE, run_sweep

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        overrides = parse_assignments(assignments)
        table = run_sweep(file, out, jobs, overrides=overrides, gpus_per_client=gpus_per_client)
    except ConfigError as error:
        print(f"fl-poison: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fl-poison: interrupted; finished cells are kept in {out / SWEEP_TABLE}; run again to resume", file=sys.stderr)
        return 130
    failed = [row for row in table.rows.values() if row.get("status") != "ok"]
    print(table.path)
    return 1 if failed else 0


def sweep_folder_command(command: str, folder: Path) -> int:
    """``fl-poison plot`` / ``fl-poison report``: figures (and the report) of a sweep folder."""
    from experiments.sweep_folder import SweepFolderError
    from experiments.sweep_plots import plot_sweep
    from experiments.sweep_report import write_report

    try:
        if command == "report":
            print(write_report(folder))
            return 0
        figures = plot_sweep(folder)
    except SweepFolderError as error:
        print(f"fl-poison: error: {error}", file=sys.stderr)
        return 2
    print(f"{len(figures.files)} files (PNG and PDF) in {figures.folder / 'plots'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fl-poison``."""
    parser = argparse.ArgumentParser(prog="fl-poison", description="Federated-learning poisoning lab on Flower.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one experiment through the Flower simulation engine")
    run.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="settings (see `fl-poison settings`)")
    run.add_argument("--cpus-per-client", type=float, default=1.0, help="Ray CPUs per virtual client (default 1)")
    run.add_argument("--gpus-per-client", type=float, default=0.0, help="GPU share per virtual client, e.g. 0.25 (default 0: CPU)")
    run.add_argument("--verbose", action="store_true", help="echo Flower's whole log")
    sweep = commands.add_parser("sweep", help="run a grid of experiments from a TOML sweep file (resumable)")
    sweep.add_argument("file", type=Path, help="sweep file with [base] and [grid] tables")
    sweep.add_argument("--out", type=Path, required=True, help="sweep folder (sweep.csv and one folder per cell)")
    sweep.add_argument("--jobs", type=int, default=1, help="cells run at once (default 1)")
    sweep.add_argument(
        "--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
        help="replace a setting of the sweep file in every cell, e.g. --set dataset=cifar10 (repeatable)",
    )
    sweep.add_argument("--gpus-per-client", type=float, default=0.0, help="GPU share per virtual client (default 0: CPU)")
    plot = commands.add_parser("plot", help="draw a sweep folder's figures into DIR/plots (PNG and PDF)")
    plot.add_argument("folder", type=Path, metavar="DIR", help="a folder written by fl-poison sweep")
    report = commands.add_parser("report", help="redraw a sweep folder's figures and write DIR/report.md")
    report.add_argument("folder", type=Path, metavar="DIR", help="a folder written by fl-poison sweep")
    settings = commands.add_parser("settings", help="list every setting with its default")
    settings.add_argument("--markdown", action="store_true", help="print a Markdown table")
    add_deploy_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fl-poison`` console script."""
    arguments = build_parser().parse_args(argv)
    if arguments.command == "settings":
        print_settings(arguments.markdown)
        return 0
    if arguments.command == "deploy":
        return deploy_command(arguments)
    if arguments.command in ("plot", "report"):
        return sweep_folder_command(arguments.command, arguments.folder)
    if arguments.command == "sweep":
        return sweep_command(arguments.file, arguments.out, arguments.jobs, arguments.assignments, arguments.gpus_per_client)
    try:
        if arguments.cpus_per_client <= 0:
            raise ConfigError.bad_value("--cpus-per-client", arguments.cpus_per_client, "a number > 0")
        if arguments.gpus_per_client < 0:
            raise ConfigError.bad_value("--gpus-per-client", arguments.gpus_per_client, "a number >= 0")
        folder = run_experiment(
            parse_assignments(arguments.settings),
            arguments.cpus_per_client,
            arguments.gpus_per_client,
            arguments.verbose,
        )
    except (ConfigError, CommandError) as error:
        print(f"fl-poison: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ConfigError) else 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
