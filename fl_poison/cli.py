"""The ``fl-poison`` command: argument parsing and dispatch, nothing else.

``fl-poison run KEY=VALUE ...`` runs one experiment through the real Flower runtime
(:func:`fl_poison.launch.run_experiment`) and prints the result folder.
``fl-poison sweep FILE --out DIR`` runs a resumable grid of them (:mod:`experiments.sweep`).
``fl-poison runtime`` holds a warm SuperLink and Ray head for runs from other shells (:mod:`fl_poison.warm_runtime`).
``fl-poison settings`` lists every setting.
``fl-poison deploy certs|keys|connection|trial`` helps run across machines (:mod:`fl_poison.deploy.commands`).
``fl-poison plot DIR`` draws a sweep folder's figures into ``DIR/plots`` (:mod:`experiments.sweep_plots`)
and ``fl-poison report DIR`` redraws them and writes ``DIR/report.md`` with ``DIR/groups.csv`` and
``DIR/pairs.csv`` (:mod:`experiments.sweep_report`); both take ``--last-rounds K`` (default 5).

Bad input never ends in a traceback: :func:`main` turns a :class:`~fl_poison.core.settings.ConfigError`
(a bad setting, sweep file, sweep folder or dataset; a sweep folder's error is one) and an
``OSError`` about a named file (a folder that cannot be written, a file that cannot be read) into
one line ``fl-poison: error: ...`` and exit status 2; a run that did not complete
(:class:`~fl_poison.launch.CommandError`) exits 1. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fl_poison.apps.algorithms import catalogue
from fl_poison.core.settings import ConfigError
from fl_poison.core.settings_docs import settings_markdown, settings_text, settings_toml, write_settings_docs
from fl_poison.deploy.commands import add_deploy_parser, deploy_command
from fl_poison.launch import CommandError, app_directory, check_client_resources, parse_assignments, run_experiment


def settings_command(markdown: bool, toml: bool, write_docs: bool) -> int:
    """Print every setting (plain, Markdown or TOML), or regenerate the README and pyproject tables.

    Parameters
    ----------
    markdown : bool
        Print the README's Markdown table.
    toml : bool
        Print the ``[tool.flwr.app.config]`` table.
    write_docs : bool
        Rewrite both tables in the project's README.md and pyproject.toml and say which changed.
    """
    algorithms = catalogue()
    if write_docs:
        changed = write_settings_docs(app_directory(), algorithms)
        print(
            "updated: " + ", ".join(str(path) for path in changed)
            if changed
            else "README.md and pyproject.toml are up to date"
        )
    elif markdown:
        print(settings_markdown(algorithms), end="")
    elif toml:
        print(settings_toml(algorithms), end="")
    else:
        print(settings_text(algorithms), end="")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt, also when started in the background.

    A shell without job control starts background commands with SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler: without this, ``kill -INT`` would not stop them.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)


def sweep_command(
    file: Path,
    out: Path,
    jobs: int,
    assignments: Sequence[str],
    gpus_per_client: float,
    shared_runtime: bool = True,
    fork: bool = True,
    reuse: Sequence[Path] = (),
    dry_run: bool = False,
) -> int:
    """``fl-poison sweep``: run the sweep; Ctrl-C or SIGTERM stops it with every finished cell kept.

    Parameters
    ----------
    file : Path
        The sweep file.
    out : Path
        The sweep folder.
    jobs : int
        Cells at once.
    assignments : Sequence[str]
        The ``--set KEY=VALUE`` words.
    gpus_per_client : float
        GPU share per virtual client.
    shared_runtime : bool
        Run the cells against one SuperLink and Ray head started for the sweep.
    fork : bool
        False (``--no-fork``): the shared runtime starts a fresh simulation process per cell
        instead of forking it (forking is the default on Linux only).
    reuse : Sequence[Path]
        ``--reuse`` folders: other sweeps whose finished cells with the same ids are copied, not rerun.
    dry_run : bool
        ``--dry-run``: check the sweep and list what it would run, with a time estimate; run and write nothing.
    """
    from experiments.sweep import SWEEP_TABLE, plan_sweep, run_sweep
    from fl_poison.warm_runtime import FORK_BY_DEFAULT

    if dry_run:
        plan_sweep(
            file, out, jobs, overrides=parse_assignments(assignments), reuse=reuse, gpus_per_client=gpus_per_client
        )
        return 0
    _stop_on_signals()
    try:
        overrides = parse_assignments(assignments)
        table = run_sweep(
            file,
            out,
            jobs,
            overrides=overrides,
            gpus_per_client=gpus_per_client,
            shared_runtime=shared_runtime,
            fork_simulations=fork and FORK_BY_DEFAULT,
            reuse=reuse,
        )
    except KeyboardInterrupt:
        print(
            f"fl-poison: interrupted; finished cells are kept in {out / SWEEP_TABLE}; run again to resume",
            file=sys.stderr,
        )
        return 130
    failed = [row for row in table.rows.values() if row.get("status") != "ok"]
    print(table.path)
    return 1 if failed else 0


def runtime_command(fork: bool = True) -> int:
    """``fl-poison runtime``: hold a warm SuperLink and Ray head for runs from other shells until Ctrl-C or SIGTERM.

    Parameters
    ----------
    fork : bool
        False (``--no-fork``): a fresh simulation process per run instead of a forked one (forking
        is the default on Linux only).
    """
    from fl_poison.core.ray_head import RayHeadError
    from fl_poison.warm_runtime import FORK_BY_DEFAULT, WarmRuntimeError, serve

    _stop_on_signals()
    # `kill -USR1 PID` prints every thread's stack to stderr: where a runtime that will not stop waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        return serve(print_flushed, fork_simulations=fork and FORK_BY_DEFAULT)
    except (RayHeadError, WarmRuntimeError) as error:
        print(f"fl-poison: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fl-poison: runtime stopped", file=sys.stderr)
        return 0


def print_flushed(line: str) -> None:
    """Print ``line`` and flush (the runtime's lines reach a log file or a pipe at once)."""
    print(line, flush=True)


def sweep_folder_command(command: str, folder: Path, last_rounds: int = 5) -> int:
    """``fl-poison plot`` / ``fl-poison report``: figures (and the report) of a sweep folder.

    Parameters
    ----------
    command : str
        ``plot`` or ``report``.
    folder : Path
        The sweep folder.
    last_rounds : int
        ``--last-rounds``: how many last rounds each run's "last rounds" value averages.
    """
    from experiments.sweep_plots import plot_sweep
    from experiments.sweep_report import write_report

    if command == "report":
        print(write_report(folder, last_rounds=last_rounds))
        return 0
    figures = plot_sweep(folder, last_rounds=last_rounds)
    print(f"{len(figures.files)} files (PNG and PDF) in {figures.folder / 'plots'}")
    return 0


def audit_command(arguments: argparse.Namespace) -> int:
    """``fl-poison audit``: audit a run's final model into ``RUN_DIR/audit``, or every finished cell of a sweep folder.

    Parameters
    ----------
    arguments : argparse.Namespace
        The parsed ``audit`` options (``run_dir``, ``parts``, ``eps``, ``samples``, ``attacks``,
        ``defenses``, ``seed``, ``hsj_samples``, ``no_detector``, ``threads``, ``server_rows``,
        ``nc_steps``, ``strip_overlays``, ``fp_fractions``, ``fp_epochs``, ``force``).
    """
    from dataclasses import replace

    from tqdm import tqdm

    from fl_poison.audit.evasion import ATTACK_NAMES
    from fl_poison.audit.forensics import ForensicsSettings
    from fl_poison.audit.input_defenses import DEFENSE_NAMES
    from fl_poison.audit.loading import load_subject
    from fl_poison.audit.pipeline import (
        AuditSettings,
        check_fits,
        parse_eps,
        parse_fractions,
        parse_names,
        parse_parts,
        planned_steps,
        run_audit,
    )
    from fl_poison.audit.report import summary_table, write_audit
    from fl_poison.audit.sweep_audit import audit_sweep, is_sweep_folder, summary_text

    for option, value, least in (
        ("--samples", arguments.samples, 1),
        ("--hsj-samples", arguments.hsj_samples, 1),
        ("--threads", arguments.threads, 1),
        ("--server-rows", arguments.server_rows, 1),
        ("--nc-steps", arguments.nc_steps, 1),
        ("--strip-overlays", arguments.strip_overlays, 1),
        ("--fp-epochs", arguments.fp_epochs, 0),
    ):
        if value < least:
            raise ConfigError.bad_value(option, value, f"an integer >= {least}")
    parts = parse_parts(arguments.parts)
    if arguments.no_detector:
        parts = tuple(part for part in parts if part != "detector")
    defaults = ForensicsSettings()
    forensics = replace(
        defaults,
        server_rows=arguments.server_rows,
        neural_cleanse=replace(defaults.neural_cleanse, steps=arguments.nc_steps),
        strip=replace(defaults.strip, overlays=arguments.strip_overlays),
        fine_pruning=replace(
            defaults.fine_pruning,
            prune_fractions=parse_fractions("--fp-fractions", arguments.fp_fractions),
            fine_tune_epochs=arguments.fp_epochs,
        ),
    )
    settings = AuditSettings(
        eps=parse_eps(arguments.eps),
        samples=arguments.samples,
        attacks=parse_names("--attacks", arguments.attacks, ATTACK_NAMES),
        defenses=parse_names("--defenses", arguments.defenses, DEFENSE_NAMES),
        seed=arguments.seed,
        hsj_samples=arguments.hsj_samples,
        parts=parts,
        forensics=forensics,
        threads=arguments.threads,
    )

    def bar(description: str, total: int) -> tuple[Callable[[str], None], Callable[[], None]]:
        progress = tqdm(total=total, desc=description, unit="step", file=sys.stderr, leave=False)

        def advance(label: str) -> None:
            progress.set_postfix_str(label, refresh=False)
            progress.update()

        return advance, progress.close

    if is_sweep_folder(arguments.run_dir):
        outcome = audit_sweep(
            arguments.run_dir, settings, arguments.force, bar, lambda line: print(line, file=sys.stderr)
        )
        print(summary_text(outcome.summary))
        print(
            f"{len(outcome.audited)} cells audited, {len(outcome.complete)} already complete, "
            f"{len(outcome.not_auditable)} not auditable, {len(outcome.failed)} failed -> {outcome.summary}"
        )
        return 1 if outcome.failed else 0
    subject = load_subject(arguments.run_dir)
    check_fits(subject, settings)
    advance, close = bar("audit", planned_steps(settings, subject.num_classes))
    try:
        result = run_audit(subject, settings, advance)
    finally:
        close()
    folder = write_audit(arguments.run_dir, result)
    print(summary_table(result))
    attacked = f", {result.settings['samples']} attacked" if "samples" in result.settings else ""
    print(
        f"audit of {subject.model_name} on {len(subject.test_set)} test rows{attacked} "
        f"in {result.settings['wall_seconds']} s -> {folder}"
    )
    return 0


def add_audit_parser(commands: argparse._SubParsersAction) -> None:
    """The ``audit`` subcommand's options.

    Parameters
    ----------
    commands : argparse._SubParsersAction
        The parser's subcommands.
    """
    from fl_poison.audit.fine_pruning import FinePruningSettings
    from fl_poison.audit.forensics import DEFAULT_SERVER_ROWS
    from fl_poison.audit.neural_cleanse import NeuralCleanseSettings
    from fl_poison.audit.pipeline import DEFAULT_HSJ_SAMPLES, DEFAULT_SAMPLES, PARTS
    from fl_poison.audit.strip import DEFAULT_OVERLAYS

    audit = commands.add_parser(
        "audit",
        help="audit a run's final model (evasion attacks, input defenses, a detector, backdoor forensics) into "
        "RUN_DIR/audit, or every finished cell of a sweep folder",
    )
    audit.add_argument(
        "run_dir",
        type=Path,
        metavar="RUN_DIR",
        help="a run folder with model.pt (save-model=true), or a sweep folder (with sweep.csv): every cell with "
        "model.pt, summary in SWEEP_DIR/audit_summary.csv",
    )
    audit.add_argument(
        "--parts", default=",".join(PARTS), help="parts of the audit, comma-separated (default %(default)s)"
    )
    audit.add_argument(
        "--eps",
        default="0,8/255,0.1,0.2,0.3",
        help="L-infinity budgets in [0, 1], comma-separated (default %(default)s)",
    )
    audit.add_argument(
        "--samples", type=int, default=DEFAULT_SAMPLES, help="test images attacked (default %(default)s)"
    )
    audit.add_argument(
        "--attacks", default="fgsm,bim,bim-targeted,pgd,deepfool,hopskipjump", help="attacks (default %(default)s)"
    )
    audit.add_argument(
        "--defenses",
        default="blur,spatial-smoothing,feature-squeezing,jpeg",
        help="input defenses (default %(default)s)",
    )
    audit.add_argument("--seed", type=int, default=None, help="seed of the audit (default: the run's seed)")
    audit.add_argument(
        "--hsj-samples", type=int, default=DEFAULT_HSJ_SAMPLES, help="images HopSkipJump attacks (default %(default)s)"
    )
    audit.add_argument("--no-detector", action="store_true", help="skip the binary input detector")
    audit.add_argument(
        "--server-rows",
        type=int,
        default=DEFAULT_SERVER_ROWS,
        help="held-out rows given to the server as its clean set for the forensics (Neural Cleanse, STRIP's "
        "pool, fine-tuning); the others are evaluated on (default %(default)s)",
    )
    audit.add_argument(
        "--nc-steps",
        type=int,
        default=NeuralCleanseSettings.steps,
        help="Neural Cleanse passes over the server's rows per class (default %(default)s)",
    )
    audit.add_argument(
        "--strip-overlays",
        type=int,
        default=DEFAULT_OVERLAYS,
        help="STRIP: clean images blended into each input (default %(default)s; the paper's 100)",
    )
    audit.add_argument(
        "--fp-fractions",
        default=",".join(f"{f:g}" for f in FinePruningSettings.prune_fractions),
        help="fine-pruning: shares of the penultimate units pruned, in [0, 1) (default %(default)s)",
    )
    audit.add_argument(
        "--fp-epochs",
        type=int,
        default=FinePruningSettings.fine_tune_epochs,
        help="fine-pruning: fine-tuning passes over the server's rows, 0 for none (default %(default)s)",
    )
    audit.add_argument(
        "--force", action="store_true", help="sweep folder: audit again the cells whose audit is complete"
    )
    audit.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fastest for small models on a busy machine)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fl-poison``."""
    parser = argparse.ArgumentParser(prog="fl-poison", description="Federated-learning poisoning lab on Flower.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run one experiment through the Flower simulation engine")
    run.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="settings (see `fl-poison settings`)")
    run.add_argument("--cpus-per-client", type=float, default=1.0, help="Ray CPUs per virtual client (default 1)")
    run.add_argument(
        "--gpus-per-client", type=float, default=0.0, help="GPU share per virtual client, e.g. 0.25 (default 0: CPU)"
    )
    run.add_argument("--verbose", action="store_true", help="echo Flower's whole log")
    sweep = commands.add_parser("sweep", help="run a grid of experiments from a TOML sweep file (resumable)")
    sweep.add_argument("file", type=Path, help="sweep file with [base] and [grid] tables")
    sweep.add_argument("--out", type=Path, required=True, help="sweep folder (sweep.csv and one folder per cell)")
    sweep.add_argument("--jobs", type=int, default=1, help="cells run at once (default 1)")
    sweep.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="replace a setting of the sweep file in every cell, e.g. --set dataset=cifar10 (repeatable)",
    )
    sweep.add_argument(
        "--gpus-per-client", type=float, default=0.0, help="GPU share per virtual client (default 0: CPU)"
    )
    sweep.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="copy the cells another sweep folder finished with the same cell ids (same settings: same runs) "
        "instead of running them again (repeatable)",
    )
    sweep.add_argument(
        "--no-shared-runtime",
        action="store_true",
        help="every cell starts its own Ray through the local SuperLink (default: a SuperLink and a Ray head "
        "started for the sweep, one per cell running at once, which saves Ray's start and stop in every cell)",
    )
    sweep.add_argument(
        "--dry-run",
        action="store_true",
        help="check the sweep file and list the cells it would run, with a time estimate from the cells --out "
        "already holds; run and write nothing",
    )
    runtime = commands.add_parser(
        "runtime",
        help="hold a SuperLink and a Ray head that fl-poison run in other shells can use (no Ray start per run) "
        "until Ctrl-C",
    )
    for parser_with_runtime in (sweep, runtime):
        parser_with_runtime.add_argument(
            "--no-fork",
            action="store_true",
            help="start a fresh simulation process per run (default on Linux: fork it from a parent that has "
            "imported Flower, Ray and torch)",
        )
    plot = commands.add_parser("plot", help="draw a sweep folder's figures into DIR/plots (PNG and PDF)")
    report = commands.add_parser(
        "report", help="redraw a sweep folder's figures and write DIR/report.md, DIR/groups.csv and DIR/pairs.csv"
    )
    for folder_command in (plot, report):
        folder_command.add_argument("folder", type=Path, metavar="DIR", help="a folder written by fl-poison sweep")
        folder_command.add_argument(
            "--last-rounds",
            type=int,
            default=5,
            metavar="K",
            help="group statistics also over the mean of each run's last K rounds (default 5)",
        )
    settings = commands.add_parser("settings", help="list every setting with its default")
    formats = settings.add_mutually_exclusive_group()
    formats.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    formats.add_argument("--toml", action="store_true", help="print the [tool.flwr.app.config] table of pyproject.toml")
    formats.add_argument(
        "--write-docs", action="store_true", help="regenerate both tables in README.md and pyproject.toml"
    )
    add_deploy_parser(commands)
    add_audit_parser(commands)
    return parser


def run_command(settings: Sequence[str], cpus: float, gpus: float, verbose: bool) -> int:
    """``fl-poison run``: one experiment; prints the result folder.

    Parameters
    ----------
    settings : Sequence[str]
        ``KEY=VALUE`` settings.
    cpus : float
        Ray CPUs per virtual client.
    gpus : float
        GPU share per virtual client.
    verbose : bool
        Echo Flower's whole log.
    """
    check_client_resources(cpus, gpus)
    try:
        folder = run_experiment(parse_assignments(settings), cpus, gpus, verbose)
    except CommandError as error:
        print(f"fl-poison: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("fl-poison: interrupted; a Flower run in progress was stopped", file=sys.stderr)
        return 130
    print(folder)
    return 0


def dispatch(arguments: argparse.Namespace) -> int:
    """Run the command that ``arguments`` name; returns the exit code.

    Parameters
    ----------
    arguments : argparse.Namespace
        The parsed command line.
    """
    if arguments.command == "settings":
        return settings_command(arguments.markdown, arguments.toml, arguments.write_docs)
    if arguments.command == "deploy":
        return deploy_command(arguments)
    if arguments.command == "audit":
        return audit_command(arguments)
    if arguments.command in ("plot", "report"):
        return sweep_folder_command(arguments.command, arguments.folder, arguments.last_rounds)
    if arguments.command == "runtime":
        return runtime_command(not arguments.no_fork)
    if arguments.command == "sweep":
        return sweep_command(
            arguments.file,
            arguments.out,
            arguments.jobs,
            arguments.assignments,
            arguments.gpus_per_client,
            not arguments.no_shared_runtime,
            not arguments.no_fork,
            arguments.reuse,
            arguments.dry_run,
        )
    return run_command(arguments.settings, arguments.cpus_per_client, arguments.gpus_per_client, arguments.verbose)


def user_error_line(error: BaseException) -> str | None:
    """The one line to print for an error caused by the user's input, or None for anything else (a bug).

    A :class:`ConfigError` (bad setting, sweep file or folder, dataset; one line by contract) is
    the user's; so is an ``OSError`` about a named file (``error.filename``: a folder that cannot
    be written, a file that cannot be read). An ``OSError`` without a file name (a socket, a
    process) and every other exception are not: they keep their traceback.

    Parameters
    ----------
    error : BaseException
        What the command raised.
    """
    if isinstance(error, ConfigError):
        return " ".join(str(error).split("\n"))
    if isinstance(error, OSError) and error.filename is not None:
        target = f"{error.filename!s}" + (f" -> {error.filename2!s}" if error.filename2 is not None else "")
        return f"{target}: {error.strerror or type(error).__name__}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fl-poison`` console script; bad input gives one line and exit status 2.

    Parameters
    ----------
    argv : Sequence[str] | None
        The arguments (default: ``sys.argv[1:]``).
    """
    arguments = build_parser().parse_args(argv)
    try:
        return dispatch(arguments)
    except BrokenPipeError:
        # whoever read the output stopped reading (``| head``): end quietly, as command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except (ConfigError, OSError) as error:
        line = user_error_line(error)
        if line is None:
            raise
        print(f"fl-poison: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
