"""The attack × rule tables of a sweep folder: ``matrix.csv`` and ``matrix.md``.

Usage::

    fl-poison sweep experiments/sweeps/byzantine-digits.toml --out DIR
    python -m experiments.attack_matrix DIR [DIR ...] [--out DIR] [--title TEXT] [--findings byzantine|defenses]

Every finished cell is labelled by its attack (``none``; the data attack; the update attack; or
``data+update``) and its rule (``strategy``); cells that differ only in their seed are replicates.
For each (attack, rule): the final accuracy and the mean accuracy over the last five rounds, the
final attack metric where the attack has one (``asr`` for backdoors, ``ts_ata`` for targeted
label flipping and stealthy poisoning) and its mean over the last five rounds (a backdoor's ASR
swings from round to round, so one final round can mislead), the run's detection precision /
recall / FPR (for rules that decide per client; flagged: rejected or clipped), its rejection
precision / recall / FPR (flagged: rejected only) and the seconds per round, each as the mean over
seeds with its sample standard deviation and 95 % t interval (:mod:`experiments.statistics`; one seed: no interval).
The change of accuracy against the same rule without an attack is paired by seed.

``matrix.csv`` is long (one row per attack and rule, loadable with pandas); ``matrix.md`` shows
the final and last-5 accuracy as attack × rule matrices, then one line per rule with the figures
rules are compared by (:func:`rule_overview`: clean accuracy, backdoor ASR, label-flip ts_ATA,
accuracy under the Byzantine attacks, detection under model replacement, seconds per round),
then the other metrics, and with
``--findings byzantine`` / ``defenses`` the published directions of the Byzantine attacks (issue
14) or of the defenses (issue 15), each judged by the 95 % t interval over seeds of the difference
it is about (:func:`byzantine_findings`, :func:`defense_findings`). ``matrix.png`` draws the two
matrices people look for first (:func:`plot_matrix`): the final accuracy of every attack × rule,
coloured by its change against the same rule without an attack, and the attack's success (ASR or
ts_ATA) where the attack has one.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np

from experiments.cells import markdown_table
from experiments.seed_studies import (
    Claim,
    SeedValues,
    cell_rows,
    combine,
    csv_rows,
    last_rounds_mean,
    missing_rounds_error,
    number,
    paired,
    round_rows,
    seed_of,
)
from experiments.statistics import Summary, format_summary, paired_difference, summarize
from fl_poison.core.results import atomic_write_bytes, write_csv

NO_ATTACK = "none"
UNSET = ("", "none", "auto")
# Per-cell metrics read from sweep.csv (final round, or the whole run for detection).
DETECTION_METRICS = ("detection_precision", "detection_recall", "detection_fpr")
REJECTION_METRICS = ("rejection_precision", "rejection_recall", "rejection_fpr")
FINAL_METRICS = ("accuracy", "asr", "ts_ata", *DETECTION_METRICS, *REJECTION_METRICS)
SUMMARIES = (
    "accuracy",
    "last5_accuracy",
    "asr",
    "last5_asr",
    "ts_ata",
    "last5_ts_ata",
    *DETECTION_METRICS,
    *REJECTION_METRICS,
    "seconds_per_round",
)


def attack_label(row: dict[str, str]) -> str:
    """How a cell's attack is named in the tables: ``none``, ``blend``, ``alie`` or ``blend+scaling``.

    ``none`` is a run without attackers; attackers that do not attack (no ``attack``, no
    ``update-attack``) are ``honest``.

    Parameters
    ----------
    row : dict[str, str]
        A cell of ``sweep.csv`` (its ``attack`` and ``update-attack``; missing ones are unset).
    """
    if number(row.get("num-malicious")) == 0:
        return NO_ATTACK
    data = row.get("attack") or ""
    update = row.get("update-attack") or ""
    parts = [part for part in (data, update) if part not in UNSET]
    return "+".join(parts) or "honest"


def cell_metrics(row: dict[str, str]) -> dict[str, float]:
    """The metrics of one finished cell (NaN where it has none).

    Parameters
    ----------
    row : dict[str, str]
        A cell of ``sweep.csv`` whose ``folder`` holds its ``rounds.csv``.
    """
    history = round_rows(row)
    metrics = {name: number(row.get(name)) for name in FINAL_METRICS}
    for name in ("accuracy", "asr", "ts_ata"):
        metrics[f"last5_{name}"] = last_rounds_mean(history, name)
    metrics["seconds_per_round"] = number(row.get("wall_seconds")) / len(history) if history else math.nan
    return metrics


Groups = dict[tuple[str, str], dict[Hashable, dict[str, float]]]


def grouped(cells: Sequence[dict[str, str]]) -> Groups:
    """The cells' metrics by (attack label, rule), then by seed.

    Parameters
    ----------
    cells : Sequence[dict[str, str]]
        The finished cells (see :func:`experiments.seed_studies.cell_rows`).
    """
    groups: Groups = {}
    for row in cells:
        key = (attack_label(row), row.get("strategy") or "fedavg")
        groups.setdefault(key, {})[seed_of(row)] = cell_metrics(row)
    return groups


def matrix_rows(cells: Sequence[dict[str, str]]) -> list[dict[str, object]]:
    """One row per (attack, rule): each metric summarised over seeds, and the paired change against no attack.

    Parameters
    ----------
    cells : Sequence[dict[str, str]]
        The finished cells (see :func:`experiments.seed_studies.cell_rows`).
    """
    groups = grouped(cells)
    rows: list[dict[str, object]] = []
    for (attack, strategy), by_seed in sorted(groups.items(), key=lambda item: item[0][0] != NO_ATTACK):
        entry: dict[str, object] = {"attack": attack, "strategy": strategy, "seeds": len(by_seed)}
        for name in SUMMARIES:
            entry[name] = summarize(metrics[name] for metrics in by_seed.values())
        clean = groups.get((NO_ATTACK, strategy), {})
        for name in ("accuracy", "last5_accuracy"):
            attacked = {seed: metrics[name] for seed, metrics in by_seed.items()}
            reference = {seed: metrics[name] for seed, metrics in clean.items()}
            entry[f"{name}_change"] = paired_difference(reference, attacked).difference
        rows.append(entry)
    return rows


def accuracy_of(groups: Groups, attack: str, strategy: str, metric: str = "accuracy") -> SeedValues:
    """Seed -> a final metric (default the accuracy) of one (attack, rule) group (empty when it was not run)."""
    return {seed: metrics[metric] for seed, metrics in groups.get((attack, strategy), {}).items()}


def shifted(values: SeedValues, offset: float, sign: int) -> Claim:
    """The claim that ``value + offset`` has ``sign`` for the seeds' values."""
    return Claim({seed: value + offset for seed, value in values.items()}, sign)


def finding(text: str, claims: Sequence[tuple[str, Claim]]) -> str:
    """A finding's line: its text, the combined verdict and each claim's interval and verdict."""
    parts = "; ".join(f"{name}: {claim.text()} → {claim.verdict}" for name, claim in claims)
    return f"{text} — **{combine([claim.verdict for _, claim in claims])}** ({parts})"


def byzantine_findings(groups: Groups) -> list[str]:
    """The published directions of issue 14 that a Byzantine sweep measures, each judged by its interval over seeds.

    Each claim is a difference of final accuracies paired by seed (see
    :func:`experiments.seed_studies.judge`: agrees / differs / inconclusive / not measured); a
    claim of a size ("at least 10 points") is judged on the difference plus that size.

    Parameters
    ----------
    groups : Groups
        The sweep's metrics (see :func:`grouped`).
    """

    def lower_than(first: tuple[str, str], second: tuple[str, str], margin: float = 0.0) -> Claim:
        """The claim ``accuracy(first) < accuracy(second) - margin`` (as ``first - second + margin < 0``)."""
        difference = paired(accuracy_of(groups, *second), accuracy_of(groups, *first))
        return Claim({seed: value + margin for seed, value in difference.items()}, -1)

    robust = ("median", "trimmed-mean", "krum")
    lines = []
    for attack in ("gaussian", "sign-flip"):
        lines.append(
            finding(
                f"{attack} ruins FedAvg while median, trimmed mean and Krum hold (FedAvg − rule < 0)",
                [(rule, lower_than((attack, "fedavg"), (attack, rule))) for rule in robust],
            )
        )
    lines.append(
        finding(
            "ALIE costs each of Krum, trimmed mean and Bulyan at least 10 points (attacked − clean + 0.10 < 0; an MNIST claim)",
            [
                (rule, lower_than(("alie", rule), (NO_ATTACK, rule), 0.10))
                for rule in ("krum", "trimmed-mean", "bulyan")
            ],
        )
    )
    for attack in ("minmax", "minsum"):
        lines.append(
            finding(
                f"{attack} does at least as much damage as ALIE to Multi-Krum and trimmed mean ({attack} − ALIE < 0)",
                [(rule, lower_than((attack, rule), ("alie", rule))) for rule in ("multikrum", "trimmed-mean")],
            )
        )
    lines.append(
        finding(
            "Fang-Krum costs Krum at least 20 points (attacked − clean + 0.20 < 0)",
            [("krum", lower_than(("fang-krum", "krum"), (NO_ATTACK, "krum"), 0.20))],
        )
    )
    return lines


def defense_findings(groups: Groups) -> list[str]:
    """The published directions of issue 15 that a defense sweep measures, each judged by its interval over seeds.

    "The clean run" is FedAvg without attackers, paired by seed; "within k points" is judged on
    ``attacked − clean + k > 0``, "ASR at most 0.05" on ``ASR − 0.05 < 0``.

    Parameters
    ----------
    groups : Groups
        The sweep's metrics (see :func:`grouped`).
    """
    clean = accuracy_of(groups, NO_ATTACK, "fedavg")

    def within(attack: str, strategy: str, points: float) -> Claim:
        return shifted(paired(clean, accuracy_of(groups, attack, strategy)), points, 1)

    lines = [
        finding(
            "FLAME keeps BadNets and model replacement at ASR ≤ 0.05 with accuracy within 3 points of the clean run",
            [
                (f"{attack} {name}", claim)
                for attack in ("badnets", "blend+scaling")
                for name, claim in (
                    ("ASR − 0.05", shifted(accuracy_of(groups, attack, "flame", "asr"), -0.05, -1)),
                    ("accuracy − clean + 0.03", within(attack, "flame", 0.03)),
                )
            ],
        ),
        finding(
            "FLTrust holds accuracy within 5 points of the clean run under ALIE, MinMax and Fang",
            [(attack, within(attack, "fltrust", 0.05)) for attack in ("alie", "minmax", "fang-krum", "fang-trmean")],
        ),
        finding(
            "FoolsGold down-weights sybil label flippers sharing one target (ts_ATA under FoolsGold − under FedAvg < 0)",
            [
                (
                    "label-flip",
                    Claim(
                        paired(
                            accuracy_of(groups, "label-flip", "fedavg", "ts_ata"),
                            accuracy_of(groups, "label-flip", "foolsgold", "ts_ata"),
                        ),
                        -1,
                    ),
                )
            ],
        ),
        finding(
            "DnC resists MinMax (accuracy within 3 points of the clean run)",
            [("minmax", within("minmax", "dnc", 0.03))],
        ),
    ]
    return lines


FINDINGS = {"byzantine": byzantine_findings, "defenses": defense_findings}


def compact(value: object, digits: int = 3) -> str:
    """A summary in a matrix cell: the mean, with ± the sample standard deviation over two seeds or more.

    Parameters
    ----------
    value : object
        A :class:`~experiments.statistics.Summary`; anything else (or one over no values) is "–".
    digits : int
        Decimals shown.
    """
    if not isinstance(value, Summary) or value.count == 0:
        return "–"
    if value.count < 2:
        return f"{value.mean:.{digits}f}"
    return f"{value.mean:.{digits}f} ± {value.std:.{digits}f}"


def matrix_table(rows: Sequence[dict[str, object]], metric: str) -> str:
    """An attack × rule Markdown matrix of one summarised metric (see :func:`compact`), rules in sweep order."""
    strategies = list(dict.fromkeys(str(row["strategy"]) for row in rows))
    attacks = list(dict.fromkeys(str(row["attack"]) for row in rows))
    cells = {(str(row["attack"]), str(row["strategy"])): row[metric] for row in rows}
    table = []
    for attack in attacks:
        line: dict[str, object] = {"attack": attack}
        for strategy in strategies:
            value = cells.get((attack, strategy))
            line[strategy] = compact(value)
        table.append(line)
    return markdown_table(table, ["attack", *strategies])


# The overview's columns: header, then the (attack, metric) pairs its cell joins with " / ", then decimals.
OVERVIEW_COLUMNS: tuple[tuple[str, tuple[tuple[str, str], ...], int], ...] = (
    ("clean acc", ((NO_ATTACK, "accuracy"),), 3),
    ("BadNets ASR", (("badnets", "asr"),), 3),
    ("DBA ASR", (("dba", "asr"),), 3),
    ("blend+scaling acc / ASR", (("blend+scaling", "accuracy"), ("blend+scaling", "asr")), 3),
    ("label-flip ts_ATA", (("label-flip", "ts_ata"),), 3),
    ("ALIE acc", (("alie", "accuracy"),), 3),
    ("MinMax acc", (("minmax", "accuracy"),), 3),
    ("Fang-Krum acc", (("fang-krum", "accuracy"),), 3),
    ("sign-flip acc", (("sign-flip", "accuracy"),), 3),
    (
        "precision / recall / FPR (blend+scaling)",
        tuple(("blend+scaling", name) for name in DETECTION_METRICS),
        3,
    ),
    (
        "rejection precision / recall / FPR (blend+scaling)",
        tuple(("blend+scaling", name) for name in REJECTION_METRICS),
        3,
    ),
    ("s / round (clean)", ((NO_ATTACK, "seconds_per_round"),), 2),
)


def rule_overview(rows: Sequence[dict[str, object]]) -> str:
    """One line per rule (sweep order) with the figures a reader compares rules by (:data:`OVERVIEW_COLUMNS`).

    Final-round values as in the matrices (mean, ± sd over two seeds or more; "–" where the rule
    was not run under that attack or the run has no such metric). Columns none of whose attacks
    the sweep ran, or without a value for any rule (rejection scores in runs older than them), are
    left out; with fewer than two columns left the overview is empty ("").

    Parameters
    ----------
    rows : Sequence[dict[str, object]]
        :func:`matrix_rows`.
    """
    cells = {(str(row["attack"]), str(row["strategy"])): row for row in rows}
    attacks = {attack for attack, _ in cells}
    columns = [column for column in OVERVIEW_COLUMNS if any(attack in attacks for attack, _ in column[1])]
    table = []
    for strategy in dict.fromkeys(str(row["strategy"]) for row in rows):
        line: dict[str, str] = {"rule": strategy}
        for header, parts, digits in columns:
            line[header] = " / ".join(
                compact(cells.get((attack, strategy), {}).get(metric), digits) for attack, metric in parts
            )
        table.append(line)
    headers = [
        header for header, _, _ in columns if any(part != "–" for line in table for part in line[header].split(" / "))
    ]
    if len(headers) < 2:
        return ""
    return markdown_table(table, ["rule", *headers], numeric_text=False)


def mean_of(value: object) -> float:
    """The mean of a summary (NaN for no summary, or one over no values).

    Parameters
    ----------
    value : object
        A :class:`~experiments.statistics.Summary`, or anything else (a metric the row lacks).
    """
    return value.mean if isinstance(value, Summary) and value.count else math.nan


def attack_success(row: dict[str, object]) -> float:
    """The mean final ASR of an (attack, rule) row, else its ts_ATA (NaN for an attack with neither).

    Parameters
    ----------
    row : dict[str, object]
        A row of :func:`matrix_rows`.
    """
    success = mean_of(row["asr"])
    return success if math.isfinite(success) else mean_of(row["ts_ata"])


def matrix_grid(
    rows: Sequence[dict[str, object]], value: Callable[[dict[str, object]], float]
) -> tuple[list[str], list[str], np.ndarray]:
    """Attacks (in the rows' order), rules (in sweep order) and the attack × rule array of ``value`` (NaN: not run).

    Parameters
    ----------
    rows : Sequence[dict[str, object]]
        :func:`matrix_rows`.
    value : Callable[[dict[str, object]], float]
        What a row puts in its square.
    """
    attacks = list(dict.fromkeys(str(row["attack"]) for row in rows))
    strategies = list(dict.fromkeys(str(row["strategy"]) for row in rows))
    grid = np.full((len(attacks), len(strategies)), math.nan)
    for row in rows:
        grid[attacks.index(str(row["attack"])), strategies.index(str(row["strategy"]))] = value(row)
    return attacks, strategies, grid


def plot_matrix(rows: Sequence[dict[str, object]], title: str, out: Path) -> list[Path]:
    """``matrix.png``: final accuracy per attack × rule, and the attack success where the attacks have one.

    Upper panel: each square shows the final accuracy (mean over seeds) and is coloured by its
    change against the same rule without an attack (paired by seed; ±10 points and beyond saturate;
    grey: no clean run to compare with). Lower panel, drawn when some attack has ASR or ts_ATA: that
    metric (:func:`attack_success`), white 0 to red 1.

    Parameters
    ----------
    rows : Sequence[dict[str, object]]
        :func:`matrix_rows`.
    title : str
        The figure's title.
    out : Path
        The folder of the figure.
    """
    from matplotlib.figure import Figure

    from fl_poison.core.plots import draw_annotated_heatmap, save_figure

    attacks, strategies, accuracy = matrix_grid(rows, lambda row: mean_of(row["accuracy"]))
    _, _, change = matrix_grid(rows, lambda row: mean_of(row["accuracy_change"]))
    _, _, success = matrix_grid(rows, attack_success)
    with_success = [index for index, _ in enumerate(attacks) if np.isfinite(success[index]).any()]
    panels = [("final accuracy (colour: change against no attack)", attacks, accuracy, change, "RdBu", (-0.1, 0.1))]
    if with_success:
        panels.append(
            (
                "attack success (ASR; ts_ATA for targeted label flipping)",
                [attacks[index] for index in with_success],
                success[with_success],
                success[with_success],
                "Reds",
                (0.0, 1.0),
            )
        )
    heights = [len(panel[1]) for panel in panels]
    width = 2.5 + 0.62 * len(strategies)
    figure = Figure(figsize=(width, 1.6 + 0.34 * sum(heights) + 0.9 * len(panels)))
    axes = figure.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for axis, (name, labels, shown, colours, colour_map, limits) in zip(axes, panels, strict=True):
        draw_annotated_heatmap(
            axis,
            shown,
            colours,
            labels,
            strategies,
            colour_map,
            limits,
            dark_above=0.85 if colour_map == "RdBu" else 0.6,
            dark_below=0.15 if colour_map == "RdBu" else None,
            fontsize=7,
        )
        axis.set_facecolor("lightgrey")
        axis.set_title(name, fontsize=8)
    # a 9 pt character is about 1/13 inch wide: wrap the title to the figure instead of cutting it
    figure.suptitle(textwrap.fill(title, width=max(30, int(width * 13))), fontsize=9)
    figure.tight_layout()
    return save_figure(figure, out / "matrix.png")


# The long table's metrics; one no row has (no backdoor in the sweep, runs older than a metric) is left out.
DETAIL_METRICS = (
    "accuracy_change",
    "asr",
    "last5_asr",
    "ts_ata",
    "last5_ts_ata",
    *DETECTION_METRICS,
    *REJECTION_METRICS,
    "seconds_per_round",
)


def markdown(rows: Sequence[dict[str, object]], title: str, findings: Sequence[str] = ()) -> str:
    """The matrices, the long table of the other metrics (columns no row has left out) and the judged findings (if any)."""
    details = []
    for row in rows:
        line: dict[str, object] = {"attack": row["attack"], "strategy": row["strategy"], "seeds": row["seeds"]}
        for name in DETAIL_METRICS:
            value = row[name]
            line[name] = format_summary(value) if isinstance(value, Summary) and value.count else "–"
        details.append(line)
    detail_columns = ["attack", "strategy", "seeds"]
    detail_columns += [name for name in DETAIL_METRICS if any(line[name] != "–" for line in details)]
    parts = [
        f"# {title}",
        "",
        "Matrices: mean over seeds ± sample standard deviation (one seed: the value). The long table: "
        "mean ± sd [95 % t interval]; `matrix.csv` has every interval.",
        "",
        "![Final accuracy and attack success per attack and rule](matrix.png)",
        "",
        "## Final accuracy",
        "",
        matrix_table(rows, "accuracy"),
        "",
        "## Mean accuracy over the last 5 rounds",
        "",
        matrix_table(rows, "last5_accuracy"),
        "",
        *(
            [
                "## Each rule at a glance",
                "",
                "Final-round values; detection precision / recall / FPR over the whole run, a client counted "
                "as flagged when its update was rejected or clipped; rejection precision / recall / FPR "
                "(where the runs recorded them) count the rejected only.",
                "",
                overview,
                "",
            ]
            if (overview := rule_overview(rows))
            else []
        ),
        "## Change against no attack (final accuracy, paired by seed), attack metrics, detection and time",
        "",
        markdown_table(details, detail_columns) if details else "",
        "",
    ]
    if findings:
        parts += [
            "## Published directions, judged by the 95 % t interval over seeds",
            "",
            *[f"- {line}" for line in findings],
            "",
        ]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.attack_matrix DIR [DIR ...] [--out DIR] [--title TEXT]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dirs", type=Path, nargs="+", metavar="SWEEP_DIR", help="sweep folder(s)")
    parser.add_argument("--out", type=Path, default=None, help="where matrix.csv/.md go (default: the first folder)")
    parser.add_argument("--title", default="Attacks against aggregation rules", help="the title of matrix.md")
    parser.add_argument(
        "--findings", choices=sorted(FINDINGS), default=None, help="judge a study's published directions"
    )
    arguments = parser.parse_args(argv)
    for folder in arguments.sweep_dirs:
        if not (folder / "sweep.csv").is_file():
            print(
                f"attack_matrix: error: {folder}: no sweep.csv; allowed: a folder written by fl-poison sweep",
                file=sys.stderr,
            )
            return 2
    cells = cell_rows(arguments.sweep_dirs)
    error = missing_rounds_error("attack_matrix", cells)
    if error:
        print(error, file=sys.stderr)
        return 2
    rows = matrix_rows(cells)
    if not rows:
        print(f"attack_matrix: error: {arguments.sweep_dirs[0]}: no finished cells yet", file=sys.stderr)
        return 2
    out = arguments.out or arguments.sweep_dirs[0]
    records, columns = csv_rows(rows)
    write_csv(out / "matrix.csv", records, columns)
    findings = FINDINGS[arguments.findings](grouped(cells)) if arguments.findings else []
    atomic_write_bytes(out / "matrix.md", markdown(rows, arguments.title, findings).encode())
    plot_matrix(rows, arguments.title, out)
    print(out / "matrix.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
