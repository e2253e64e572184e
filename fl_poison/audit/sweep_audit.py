"""``fl-poison audit SWEEP_DIR``: audit every finished cell of a sweep folder that saved its model, resumably.

A sweep folder (written by ``fl-poison sweep``) holds ``sweep.csv`` (one row per cell:
``cell_id``, ``grid``, the settings its grids vary, ``status``, final metrics, ``folder``,
``error``) and each cell's run folder ``SWEEP_DIR/<cell_id>``. The table is read with the csv
module (the audit layer does not import ``experiments``); the settings columns are those between
``grid`` and ``status``, as ``fl-poison sweep`` writes them. Steps:

1. List the cells in the table's order. A cell is auditable when its status is ``ok`` and its
   folder holds ``model.pt``; a failed cell, or one whose run saved no model, is reported and
   left out.
2. Skip a cell whose audit is complete: ``<cell>/audit/audit.json`` exists (the folder is written
   whole or not at all) and lists every part asked for (an audit from before the parts existed
   counts as evasion, defenses and detector). ``force`` audits it again.
3. Audit the other cells one after the other (the machine's cores are shared with sweeps, so
   nothing runs in parallel); a cell whose audit fails with a user's error (e.g. a dataset that
   cannot be read) is reported and the others go on.
4. After every cell, rewrite ``SWEEP_DIR/audit_summary.csv`` atomically from the audit folders of
   all cells whose audit is complete, so an interrupted sweep audit leaves the table of what is
   done: one row per cell (:func:`summary_row`).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fl_poison.audit.forensics import summary_fields
from fl_poison.audit.loading import MODEL_FILE, load_subject
from fl_poison.audit.pipeline import Advance, AuditSettings, check_fits, planned_steps, run_audit
from fl_poison.audit.report import AUDIT_FOLDER, write_audit
from fl_poison.core.results import ordered_columns, write_csv
from fl_poison.core.settings import ConfigError

SWEEP_TABLE = "sweep.csv"
SUMMARY_FILE = "audit_summary.csv"
AUDIT_SETTINGS_FILE = "audit.json"
EARLIER_PARTS = ("evasion", "defenses", "detector")
OK = "ok"

BarFactory = Callable[[str, int], tuple[Advance, Callable[[], None]]]


@dataclass(frozen=True)
class SweepCell:
    """One row of ``sweep.csv``.

    Attributes
    ----------
    cell_id : str
        The cell's id (its folder's name).
    settings : dict[str, str]
        The settings the sweep's grids vary, as written in the table.
    status : str
        ``ok`` or ``failed``.
    folder : Path
        ``SWEEP_DIR/<cell_id>``.
    """

    cell_id: str
    settings: dict[str, str]
    status: str
    folder: Path


def is_sweep_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a ``sweep.csv`` (an ``fl-poison sweep`` folder).

    Parameters
    ----------
    folder : Path
        A folder given to ``fl-poison audit``.
    """
    return (Path(folder) / SWEEP_TABLE).is_file()


def read_sweep(folder: Path) -> list[SweepCell]:
    """The cells of the sweep folder ``folder``, in the table's order.

    Parameters
    ----------
    folder : Path
        The sweep folder.

    Raises
    ------
    ConfigError
        One line naming ``SWEEP_DIR`` when ``sweep.csv`` cannot be read or lacks ``cell_id`` / ``status``.
    """
    path = Path(folder) / SWEEP_TABLE
    try:
        with open(path, newline="", encoding="utf-8") as stream:
            reader = csv.DictReader(stream)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ConfigError(
            f"SWEEP_DIR: bad value {str(folder)!r}; allowed: a folder written by fl-poison sweep (its {SWEEP_TABLE} "
            f"cannot be read: {' '.join(str(error).split())})"
        ) from None
    if "cell_id" not in columns or "status" not in columns:
        raise ConfigError(
            f"SWEEP_DIR: bad value {str(folder)!r}; allowed: a folder written by fl-poison sweep (its {SWEEP_TABLE} "
            "has no cell_id and status columns)"
        )
    first = columns.index("grid") + 1 if "grid" in columns else columns.index("cell_id") + 1
    varying = columns[first : columns.index("status")]
    return [
        SweepCell(
            cell_id=row["cell_id"],
            settings={key: row.get(key) or "" for key in varying},
            status=row.get("status") or "",
            folder=Path(folder) / row["cell_id"],
        )
        for row in rows
        if row.get("cell_id")
    ]


def why_not_auditable(cell: SweepCell) -> str | None:
    """Why ``cell`` cannot be audited (a failed or unfinished run, no model), or None when it can.

    Parameters
    ----------
    cell : SweepCell
        A cell of the sweep.
    """
    if cell.status != OK:
        return f"the run's status is {cell.status or 'empty'!r}"
    if not (cell.folder / MODEL_FILE).is_file():
        return f"no {MODEL_FILE} (the run saved no model: save-model=false)"
    return None


def _audit_settings(cell: SweepCell) -> dict[str, object] | None:
    path = cell.folder / AUDIT_FOLDER / AUDIT_SETTINGS_FILE
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def audit_complete(cell: SweepCell, parts: Sequence[str]) -> bool:
    """Whether ``cell`` has a complete audit of every part of ``parts`` (step 2).

    Parameters
    ----------
    cell : SweepCell
        A cell of the sweep.
    parts : Sequence[str]
        The parts asked for.
    """
    settings = _audit_settings(cell)
    if settings is None:
        return False
    done = settings.get("parts", list(EARLIER_PARTS))
    return isinstance(done, list) and set(parts) <= set(done)


def _largest_eps_accuracies(cell: SweepCell) -> dict[str, object]:
    path = cell.folder / AUDIT_FOLDER / "evasion.csv"
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as stream:
        rows = [row for row in csv.DictReader(stream) if row.get("eps")]
    if not rows:
        return {}
    largest = max(float(row["eps"]) for row in rows)
    found: dict[str, object] = {"eps_max": largest}
    for row in rows:
        if float(row["eps"]) == largest:
            found[f"adversarial_accuracy_{row['attack']}"] = float(row["adversarial_accuracy"])
    return found


def summary_row(cell: SweepCell) -> dict[str, object] | None:
    """The ``audit_summary.csv`` row of ``cell`` from its audit folder (None without a readable ``audit.json``).

    Columns: ``cell_id``, the varying settings, ``clean_accuracy`` (on all held-out rows), the
    adversarial accuracy of each attack at the largest ε (``eps_max``), the forensics' summary
    (:func:`fl_poison.audit.forensics.summary_fields`: Neural Cleanse's flagged classes and the
    target's anomaly index, STRIP's AUROC, fine-pruning's ASR and accuracy before and at the
    largest fraction fine-tuned, whether activation clustering flags the target) and the audit's
    ``audit_seconds``.

    Parameters
    ----------
    cell : SweepCell
        A cell of the sweep.
    """
    settings = _audit_settings(cell)
    if settings is None:
        return None
    row: dict[str, object] = {
        "cell_id": cell.cell_id,
        **cell.settings,
        "clean_accuracy": settings.get("clean_accuracy"),
    }
    row.update(_largest_eps_accuracies(cell))
    forensics = settings.get("forensics")
    if isinstance(forensics, Mapping):
        row.update(summary_fields(forensics))
    row["audit_seconds"] = settings.get("wall_seconds")
    return row


def write_summary(folder: Path, cells: Sequence[SweepCell]) -> Path:
    """Rewrite ``SWEEP_DIR/audit_summary.csv`` from the audit folders of ``cells`` (step 4).

    Parameters
    ----------
    folder : Path
        The sweep folder.
    cells : Sequence[SweepCell]
        Its cells, in order.
    """
    rows = [row for row in (summary_row(cell) for cell in cells) if row is not None]
    leading = ["cell_id", *(cells[0].settings if cells else {}), "clean_accuracy"]
    path = Path(folder) / SUMMARY_FILE
    write_csv(path, rows, ordered_columns(rows, leading))
    return path


@dataclass
class SweepAuditOutcome:
    """What a sweep audit did.

    Attributes
    ----------
    summary : Path
        ``SWEEP_DIR/audit_summary.csv``.
    audited : list[str]
        Cells audited now.
    complete : list[str]
        Cells skipped because their audit was complete.
    not_auditable : dict[str, str]
        Cell → why it cannot be audited.
    failed : dict[str, str]
        Cell → the error its audit ended with.
    seconds : dict[str, float]
        Cell → wall seconds of its audit now.
    """

    summary: Path
    audited: list[str] = field(default_factory=list)
    complete: list[str] = field(default_factory=list)
    not_auditable: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _no_bar(description: str, total: int) -> tuple[Advance, Callable[[], None]]:
    return (lambda label: None), (lambda: None)


def audit_sweep(
    folder: Path,
    settings: AuditSettings,
    force: bool = False,
    bar: BarFactory = _no_bar,
    say: Callable[[str], None] = lambda line: None,
) -> SweepAuditOutcome:
    """Audit the cells of the sweep folder ``folder`` (the module docstring's steps).

    Parameters
    ----------
    folder : Path
        The sweep folder.
    settings : AuditSettings
        The audit's settings, the same for every cell (the seed, when None, is each run's own).
    force : bool
        Audit cells whose audit is complete again.
    bar : Callable[[str, int], tuple[Callable[[str], None], Callable[[], None]]]
        Given a description and a number of steps, a progress bar's ``advance`` and ``close``.
    say : Callable[[str], None]
        Prints one line per cell (what was done, its time).

    Raises
    ------
    ConfigError
        One line naming ``SWEEP_DIR`` when no cell can be audited and none has an audit.
    """
    folder = Path(folder)
    cells = read_sweep(folder)
    outcome = SweepAuditOutcome(summary=folder / SUMMARY_FILE)
    auditable = []
    for cell in cells:
        reason = why_not_auditable(cell)
        if reason is None:
            auditable.append(cell)
        else:
            outcome.not_auditable[cell.cell_id] = reason
    if not auditable:
        raise ConfigError(
            f"SWEEP_DIR: bad value {str(folder)!r}; allowed: a sweep folder with a finished cell that saved its "
            f"model (none of its {len(cells)} cells has status ok and {MODEL_FILE})"
        )
    for position, cell in enumerate(auditable, start=1):
        described = " ".join(f"{key}={value}" for key, value in cell.settings.items())
        heading = f"[audit] {position}/{len(auditable)} {cell.cell_id} ({described})"
        if not force and audit_complete(cell, settings.parts):
            outcome.complete.append(cell.cell_id)
            say(f"{heading}: audit complete, skipped (--force to redo)")
            continue
        started = time.perf_counter()
        try:
            subject = load_subject(cell.folder)
            check_fits(subject, settings)
            advance, close = bar(cell.cell_id, planned_steps(settings, subject.num_classes))
            try:
                result = run_audit(subject, settings, advance)
            finally:
                close()
            write_audit(cell.folder, result)
        except ConfigError as error:
            outcome.failed[cell.cell_id] = str(error)
            say(f"{heading}: failed: {error}")
            continue
        outcome.seconds[cell.cell_id] = time.perf_counter() - started
        outcome.audited.append(cell.cell_id)
        say(f"{heading}: audited in {outcome.seconds[cell.cell_id]:.1f} s")
        write_summary(folder, cells)
    for cell_id, reason in outcome.not_auditable.items():
        say(f"[audit] {cell_id}: not audited: {reason}")
    write_summary(folder, cells)
    return outcome


SUMMARY_TEXT_COLUMNS = (
    ("clean_accuracy", "acc", "{:.3f}"),
    ("asr", "ASR", "{:.3f}"),
    ("nc_flagged", "NC flagged", "{}"),
    ("nc_target_anomaly_index", "NC AI(t)", "{:.2f}"),
    ("strip_auroc", "STRIP AUROC", "{:.3f}"),
    ("fp_asr_before", "FP ASR 0", "{:.3f}"),
    ("fp_asr_after", "FP ASR max", "{:.3f}"),
    ("fp_accuracy_after", "FP acc max", "{:.3f}"),
    ("ac_target_flagged", "AC(t)", "{}"),
    ("audit_seconds", "s", "{:.0f}"),
)


def _cell_text(value: str, template: str) -> str:
    if value == "":
        return "-"
    if "{:." in template:
        try:
            return template.format(float(value))
        except ValueError:
            return value
    return value


def summary_text(path: Path) -> str:
    """``audit_summary.csv`` as a short text table: the varying settings, accuracy, ASR and the forensics' columns.

    Parameters
    ----------
    path : Path
        The summary file.
    """
    with open(path, newline="", encoding="utf-8") as stream:
        reader = csv.DictReader(stream)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    settings = columns[1 : columns.index("clean_accuracy")] if "clean_accuracy" in columns else []
    header = ["cell_id", *settings, *(title for _, title, _ in SUMMARY_TEXT_COLUMNS)]
    table = [header] + [
        [
            row.get("cell_id", ""),
            *(row.get(key, "") for key in settings),
            *(_cell_text(row.get(key, ""), template) for key, _, template in SUMMARY_TEXT_COLUMNS),
        ]
        for row in rows
    ]
    widths = [max(len(line[index]) for line in table) for index in range(len(header))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)) for line in table)
