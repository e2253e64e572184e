"""The seed studies on digits and the real datasets next to what the seed documents found: ``comparison.md`` / ``.csv``.

``python -m experiments.seed_studies STUDY SWEEP_DIR [SWEEP_DIR ...]`` reads the folder(s) written by
``fl-poison sweep experiments/sweeps/STUDY*.toml`` and writes ``comparison.csv`` (our numbers
beside the document's) and ``comparison.md`` (the table and each finding of the document, checked
against our numbers) into the folder. The documents' numbers are transcribed below:

- seed 000 (course report, CIFAR-10, 5 clients, 50 rounds): final accuracy per strategy,
  partitioning and number of random label flippers, with and without the loss filter.
- seed 001 (course report, blend / DBA backdoors): final ASR and accuracy are read off its
  figures only where the text states them (FedAvg ASR "over 90 %", Krum "near zero", DBA 0.996).
- seed 004 (Sun et al., ADA): Tables I–II, MNIST rows; ATA and MTA are the maximum over the rounds.
- ``seed004-sensitivity``: not a finding of the paper but what it leaves open (its injection rate α
  and attacker schedule): ATA per attack, α and ``attacker-epochs``, which settings reach the
  paper's ATA, how α and the epochs move it, and a figure (``sensitivity.png``).

**Seeds.** Cells that differ only in their seed (``replicates = N`` or a ``seed`` list in the sweep
file) are replicates: every number of the tables is a mean over seeds, with the sample standard
deviation and the 95 % t interval (:mod:`experiments.statistics`; one seed: no interval).

**Verdicts.** Each finding is a claim about the sign of a difference computed seed by seed (e.g.
Krum's ASR minus FedAvg's, over the seeds both have; a claim about one number, e.g. "ASR above
0.5", uses that number minus the threshold). It is judged by the 95 % t interval of that
difference over the seeds (:func:`judge`):

- **agrees**: the interval has the finding's sign and excludes 0;
- **differs**: the interval has the other sign and excludes 0;
- **inconclusive**: the interval contains 0, or there is no interval (one seed, one pair);
- **not measured**: a cell the finding needs is missing.

A finding made of several claims agrees when each does and differs when any does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from statistics import mean
from typing import cast

from experiments.cells import markdown_table
from experiments.statistics import (
    Summary,
    format_interval,
    format_summary,
    interval_sign,
    paired_difference,
    seedwise,
    summarize,
)
from experiments.statistics import last_rounds_mean as mean_of_last
from fl_poison.apps.algorithms import catalogue
from fl_poison.core.results import atomic_write_bytes, read_csv, write_csv

LAST_ROUNDS = 5
AGREES, DIFFERS, INCONCLUSIVE, NOT_MEASURED = "agrees", "differs", "inconclusive", "not measured"
SeedValues = dict[Hashable, float]

# seed 000, CIFAR-10: (strategy, partitioning, attackers) -> final accuracy
SEED000_ACCURACY = {
    ("fedavg", "iid", 0): 0.750,
    ("fedavg", "iid", 1): 0.686,
    ("fedavg", "iid", 2): 0.564,
    ("fedavg", "dirichlet", 0): 0.740,
    ("fedavg", "dirichlet", 1): 0.682,
    ("fedavg", "dirichlet", 2): 0.424,
    ("fedprox", "iid", 0): 0.745,
    ("fedprox", "iid", 1): 0.673,
    ("fedprox", "iid", 2): 0.553,
    ("fedprox", "dirichlet", 0): 0.750,
    ("fedprox", "dirichlet", 1): 0.717,
    ("fedprox", "dirichlet", 2): 0.562,
    ("loss-filter", "iid", 1): 0.685,
    ("loss-filter", "iid", 2): 0.522,
    ("loss-filter", "dirichlet", 1): 0.696,
    ("loss-filter", "dirichlet", 2): 0.499,
}
# seed 004, Table I (LF, TS, ADA-full) and Table II (ADA-partial), MNIST: fraction -> (ATA, MTA)
SEED004_MNIST = {
    "label-flip": {0.01: (0.081, 0.990), 0.05: (0.569, 0.990), 0.1: (0.912, 0.989)},
    "train-and-scale": {0.01: (0.051, 0.990), 0.05: (0.191, 0.990), 0.1: (0.678, 0.990)},
    "ada-full": {0.01: (0.387, 0.990), 0.05: (0.832, 0.989), 0.1: (0.968, 0.989)},
    "ada-partial": {0.01: (0.553, 0.965), 0.05: (0.996, 0.988), 0.1: (0.988, 0.988)},
}
ADA_NAMES = {"ada-full": "ADA-full", "ada-partial": "ADA-partial"}


def number(value: str | float | None) -> float:
    """A CSV cell as a float (empty → NaN)."""
    return float(value) if value not in (None, "") else math.nan


def text_of(value: object) -> str:
    """How ``sweep.csv`` writes a setting's value (floats by ``repr``)."""
    return repr(value) if isinstance(value, float) else str(value)


def sweep_settings(sweep_dir: Path, grids: Sequence[str]) -> dict[str, str]:
    """The settings ``sweep.json`` fixes for a cell of ``grids`` (base, then the grids' own), as text.

    Parameters
    ----------
    sweep_dir : Path
        The sweep folder (no ``sweep.json``: nothing).
    grids : Sequence[str]
        The cell's grids.
    """
    try:
        definition = json.loads((Path(sweep_dir) / "sweep.json").read_text())
    except (OSError, ValueError):
        return {}
    settings: dict[str, str] = {}
    tables = [definition.get("base", {})] + [definition.get("grids", {}).get(grid, {}) for grid in grids]
    for table in tables:
        if isinstance(table, dict):
            settings.update({key: text_of(value) for key, value in table.items() if not isinstance(value, list)})
    return settings


def cell_rows(sweep_dirs: Sequence[Path]) -> list[dict[str, str]]:
    """The ``ok`` rows of the folders' ``sweep.csv`` files, each cell once (a study may span folders).

    A row's ``folder`` is where the cell is now: ``SWEEP_DIR/<name>`` when that folder exists
    (the sweep was copied or moved, e.g. into ``experiments/results``), else the recorded path.
    Settings the table leaves out or empty are filled from ``sweep.json`` (base and the cell's
    grids) and, for ``seed``, from the setting's default, so every row names its seed.
    """
    default_seed = text_of(next(setting.default for setting in catalogue().settings() if setting.key == "seed"))
    rows: dict[str, dict[str, str]] = {}
    for sweep_dir in sweep_dirs:
        for row in read_csv(Path(sweep_dir) / "sweep.csv"):
            if row["status"] == "ok":
                recorded = Path(row["folder"])
                moved = Path(sweep_dir) / recorded.name
                row["folder"] = str(moved if moved.is_dir() else recorded)
                fixed = sweep_settings(Path(sweep_dir), (row.get("grid") or "").split(";"))
                for key, value in fixed.items():
                    if row.get(key) in (None, ""):
                        row[key] = value
                if row.get("seed") in (None, ""):
                    row["seed"] = default_seed
                rows.setdefault(row.get("cell_id") or row["folder"], row)
    return list(rows.values())


def cells_without_rounds(rows: Sequence[dict[str, str]]) -> list[Path]:
    """The ``rounds.csv`` paths the finished cells among ``rows`` lack, in row order.

    The committed results keep each sweep's tables and figures but not its cells' ``rounds.csv``
    (``experiments/results/README.md``); a comparison or matrix needs them, so a caller refuses a
    folder with any missing before reading a cell.

    Parameters
    ----------
    rows : Sequence[dict[str, str]]
        ``ok`` rows of ``sweep.csv`` (:func:`cell_rows`), each naming its cell folder.
    """
    paths = [Path(row["folder"]) / "rounds.csv" for row in rows]
    return [path for path in paths if not path.is_file()]


def missing_rounds_error(program: str, rows: Sequence[dict[str, str]]) -> str | None:
    """The one-line error for finished cells without their ``rounds.csv``, or None when every cell has it.

    Parameters
    ----------
    program : str
        The module that refuses (the line's prefix).
    rows : Sequence[dict[str, str]]
        ``ok`` rows of ``sweep.csv`` (:func:`cell_rows`).
    """
    missing = cells_without_rounds(rows)
    if not missing:
        return None
    return (
        f"{program}: error: {len(missing)} of {len(rows)} finished cells have no rounds.csv (first: {missing[0]}); "
        "allowed: sweep folders whose cells keep it (committed results keep only tables and figures: "
        "run the sweep again into the folder, `fl-poison sweep FILE --out DIR`, to bring them back)"
    )


def round_rows(row: dict[str, str]) -> list[dict[str, str]]:
    """The ``rounds.csv`` of a cell, without round 0 (the initial model)."""
    return [entry for entry in read_csv(Path(row["folder"]) / "rounds.csv") if int(entry["round"]) > 0]


def last_rounds_mean(history: list[dict[str, str]], column: str, rounds: int = LAST_ROUNDS) -> float:
    """Mean of ``column`` over the last ``rounds`` rounds (a backdoor's ASR swings from round to round)."""
    return mean_of_last([number(entry.get(column)) for entry in history], rounds)


def values_from(history: list[dict[str, str]], column: str, first_round: int) -> list[float]:
    """The values of ``column`` in the rounds from ``first_round`` on (NaN rounds skipped)."""
    values = [number(entry.get(column)) for entry in history if int(entry["round"]) >= first_round]
    return [value for value in values if not math.isnan(value)]


def max_from(history: list[dict[str, str]], column: str, first_round: int) -> float:
    """Maximum of ``column`` over the rounds from ``first_round`` on (NaN rounds skipped)."""
    values = values_from(history, column, first_round)
    return max(values) if values else math.nan


def fmt(value: float) -> str:
    """Three decimals, or a dash for a missing value."""
    return "–" if value is None or math.isnan(value) else f"{value:.3f}"


def seed_of(row: Mapping[str, str]) -> str:
    """The cell's seed, as text (what pairs two cells' runs)."""
    return row.get("seed") or ""


def mean_over_seeds(values: SeedValues) -> float:
    """The mean of a group's per-seed values (NaN when it has none)."""
    return summarize(values.values()).mean


def judge(difference: Summary, sign: int) -> str:
    """The verdict on a finding that says ``difference`` has ``sign`` (+1: positive, -1: negative).

    Parameters
    ----------
    difference : Summary
        The per-seed values of the difference (:func:`experiments.statistics.summarize`).
    sign : int
        The sign the finding claims.

    Returns
    -------
    str
        ``agrees`` when the 95 % t interval excludes 0 on the finding's side, ``differs`` when it
        excludes 0 on the other side, ``inconclusive`` when it contains 0 or there is none (one
        seed), ``not measured`` without any value.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign: bad value {sign!r}; allowed: 1 or -1")
    if difference.count == 0:
        return NOT_MEASURED
    side = interval_sign(difference)
    if side == 0:
        return INCONCLUSIVE
    return AGREES if side == sign else DIFFERS


def combine(verdicts: Sequence[str]) -> str:
    """The verdict on a finding made of several claims: each must agree; any that differs decides.

    Parameters
    ----------
    verdicts : Sequence[str]
        The claims' verdicts (:func:`judge`).
    """
    if DIFFERS in verdicts:
        return DIFFERS
    if NOT_MEASURED in verdicts:
        return NOT_MEASURED
    if verdicts and all(verdict == AGREES for verdict in verdicts):
        return AGREES
    return INCONCLUSIVE


def bold(verdict: str) -> str:
    """The verdict as the findings print it."""
    return f"**{verdict}**"


class Claim:
    """One signed difference a finding rests on, with its verdict.

    Parameters
    ----------
    values : SeedValues
        The difference per seed.
    sign : int
        The sign the finding claims (+1 or -1).
    """

    def __init__(self, values: SeedValues, sign: int) -> None:
        self.values = values
        self.sign = sign
        self.summary = summarize(values.values())
        self.verdict = judge(self.summary, sign)

    def text(self) -> str:
        """``+d [low, high] (n seeds)`` or ``+d (1 seed, no CI)``."""
        return format_interval(self.summary, unit="seed")


def paired(first: SeedValues, second: SeedValues) -> SeedValues:
    """``second − first`` for every seed both have (finite values only).

    Parameters
    ----------
    first, second : SeedValues
        Seed -> value of two groups.
    """
    result = paired_difference(first, second)
    return {seed: second[seed] - first[seed] for seed in result.seeds}


def above(values: SeedValues, threshold: float) -> SeedValues:
    """``value − threshold`` per seed (a claim about one number against a threshold).

    Parameters
    ----------
    values : SeedValues
        Seed -> value.
    threshold : float
        The threshold.
    """
    return {seed: value - threshold for seed, value in values.items() if math.isfinite(value)}


def seed_summaries(
    rows: Sequence[dict[str, str]], measures: Mapping[str, Callable[[dict[str, str]], float]]
) -> dict[str, Summary]:
    """Each measure over the rows (one row per seed of a group), summarised over the seeds.

    Parameters
    ----------
    rows : Sequence[dict[str, str]]
        The group's cells.
    measures : Mapping[str, Callable[[dict[str, str]], float]]
        Column name -> the value of one cell.
    """
    return {name: summarize(measure(row) for row in rows) for name, measure in measures.items()}


def group_by(
    rows: Sequence[dict[str, str]], key: Callable[[dict[str, str]], tuple]
) -> dict[tuple, list[dict[str, str]]]:
    """``rows`` grouped by ``key`` (replicates of one group differ only in their seed), in first-appearance order.

    Parameters
    ----------
    rows : Sequence[dict[str, str]]
        Cell rows.
    key : Callable[[dict[str, str]], tuple]
        The group a row belongs to.
    """
    groups: dict[tuple, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    return groups


def per_seed(rows: Sequence[dict[str, str]], value: Callable[[dict[str, str]], float]) -> SeedValues:
    """Seed -> ``value`` of the cell with that seed (finite values only).

    Parameters
    ----------
    rows : Sequence[dict[str, str]]
        The cells of one group.
    value : Callable[[dict[str, str]], float]
        A cell's number.
    """
    values = {seed_of(row): value(row) for row in rows}
    return {seed: number for seed, number in values.items() if math.isfinite(number)}


def seed000(rows: list[dict[str, str]]) -> tuple[list[dict[str, object]], list[str]]:
    """Accuracy per (strategy, partitioning, attackers) next to seed 000's CIFAR-10 numbers, and its findings."""
    groups = group_by(rows, lambda r: (r["strategy"], r["partitioning"], int(r["num-malicious"])))
    table = []
    for key, members in sorted(groups.items()):
        table.append(
            {
                "strategy": key[0],
                "partitioning": key[1],
                "attackers": key[2],
                "seeds": len(members),
                **seed_summaries(
                    members,
                    {
                        "accuracy": lambda r: number(r["accuracy"]),
                        "accuracy_last5": lambda r: last_rounds_mean(round_rows(r), "accuracy"),
                        "macro_f1": lambda r: number(r["macro_f1"]),
                        "detection_recall": lambda r: number(r.get("detection_recall")),
                    },
                ),
                "seed000_cifar10_accuracy": SEED000_ACCURACY.get(key, math.nan),
            }
        )
    acc = {key: per_seed(members, lambda r: number(r["accuracy"])) for key, members in groups.items()}

    def of(strategy: str, partitioning: str, attackers: int) -> SeedValues:
        return acc.get((strategy, partitioning, attackers), {})

    def drop(partitioning: str, attackers: int) -> SeedValues:
        return seedwise(
            lambda clean, attacked: clean - attacked,
            of("fedavg", partitioning, 0),
            of("fedavg", partitioning, attackers),
        )

    growth = {p: Claim(paired(drop(p, 1), drop(p, 2)), 1) for p in ("iid", "dirichlet")}
    vulnerable = Claim(paired(drop("iid", 2), drop("dirichlet", 2)), 1)
    fedprox = Claim(paired(of("fedavg", "dirichlet", 2), of("fedprox", "dirichlet", 2)), 1)
    m = mean_over_seeds
    findings = [
        f"Label flipping hurts more with more attackers (FedAvg drop IID 1 → 2 attackers: {fmt(m(drop('iid', 1)))} → "
        f"{fmt(m(drop('iid', 2)))}; non-IID {fmt(m(drop('dirichlet', 1)))} → {fmt(m(drop('dirichlet', 2)))}; growth of the "
        f"drop IID {growth['iid'].text()}, non-IID {growth['dirichlet'].text()}): "
        + bold(combine([growth["iid"].verdict, growth["dirichlet"].verdict])),
        f"Non-IID is more vulnerable with 2 attackers (FedAvg drop non-IID {fmt(m(drop('dirichlet', 2)))} vs IID "
        f"{fmt(m(drop('iid', 2)))}; seed: 0.316 vs 0.186; difference {vulnerable.text()}): " + bold(vulnerable.verdict),
        f"FedProx resists better on non-IID with 2 attackers (FedProx {fmt(m(of('fedprox', 'dirichlet', 2)))} vs FedAvg "
        f"{fmt(m(of('fedavg', 'dirichlet', 2)))}; seed: 0.562 vs 0.424; difference {fedprox.text()}): "
        + bold(fedprox.verdict),
    ]
    for partitioning, seed_helps in (("dirichlet", True), ("iid", False)):
        gains = [
            Claim(paired(of("fedavg", partitioning, n), of("loss-filter", partitioning, n)), 1 if seed_helps else -1)
            for n in (1, 2)
        ]
        claim = "helps" if seed_helps else "does not help (a negative gain)"
        findings.append(
            f"The loss filter {claim} on {partitioning} (gain over FedAvg with 1 / 2 attackers: "
            f"{fmt(m(gains[0].values))} / {fmt(m(gains[1].values))}; {gains[0].text()} / {gains[1].text()}): "
            + bold(combine([gain.verdict for gain in gains]))
        )
    return table, findings


def seed001(rows: list[dict[str, str]]) -> tuple[list[dict[str, object]], list[str]]:
    """Final and last-rounds ASR / accuracy per group of seed 001's grids (over seeds), and its findings."""

    def identity(row: dict[str, str]) -> tuple:
        return (
            row["grid"],
            row["attack"],
            int(row["num-malicious"]),
            row["strategy"],
            row.get("update-attack", ""),
            row.get("clients-per-round", ""),
        )

    measures: dict[str, Callable[[dict[str, str]], float]] = {
        "asr": lambda r: number(r["asr"]),
        "accuracy": lambda r: number(r["accuracy"]),
        "asr_last5": lambda r: last_rounds_mean(round_rows(r), "asr"),
        "accuracy_last5": lambda r: last_rounds_mean(round_rows(r), "accuracy"),
    }
    table: list[dict[str, object]] = []
    values: list[dict[str, SeedValues]] = []  # per table row: measure -> seed -> value
    for key, members in group_by(rows, identity).items():
        per_measure = {name: per_seed(members, measure) for name, measure in measures.items()}
        values.append(per_measure)
        table.append(
            {
                "grid": key[0],
                "attack": key[1],
                "attackers": key[2],
                "strategy": key[3],
                "update_attack": key[4],
                "clients_per_round": key[5],
                "seeds": len(members),
                **{name: summarize(seeds.values()) for name, seeds in per_measure.items()},
            }
        )

    def pick(grid: str, **match: object) -> dict[str, SeedValues]:
        found = [
            entry
            for r, entry in zip(table, values, strict=True)
            if grid in str(r["grid"]).split(";") and all(r[k] == v for k, v in match.items())
        ]
        return found[0] if found else {name: {} for name in measures}

    ratio = [pick("blend-ratio", attackers=n)["asr_last5"] for n in (1, 2, 3)]
    fedavg, krum = pick("fedavg-vs-krum", strategy="fedavg"), pick("fedavg-vs-krum", strategy="krum")
    dba, blend3 = pick("dba-vs-blend", attack="dba"), pick("dba-vs-blend", attack="blend")
    scaled, clipped = pick("scaling-vs-clipping", strategy="fedavg"), pick("scaling-vs-clipping", strategy="norm-clip")
    m = mean_over_seeds
    steps = [Claim(paired(ratio[0], ratio[1]), 1), Claim(paired(ratio[1], ratio[2]), 1)]
    krum_gap = Claim(paired(krum["asr_last5"], fedavg["asr_last5"]), 1)
    krum_low = Claim(above(krum["asr_last5"], 0.1), -1)
    dba_gap = Claim(paired(blend3["asr_last5"], dba["asr_last5"]), 1)
    clipped_high = Claim(above(clipped["asr_last5"], 0.5), 1)
    findings = [
        f"More blend attackers, higher ASR (mean of the last {LAST_ROUNDS} rounds, 1 / 2 / 3 of 6: "
        f"{' / '.join(fmt(m(v)) for v in ratio)}; steps 1 → 2 {steps[0].text()}, 2 → 3 {steps[1].text()}): "
        + bold(combine([step.verdict for step in steps])),
        f"Krum stops the 1-attacker blend backdoor that FedAvg lets in (ASR FedAvg {fmt(m(fedavg['asr_last5']))}, Krum "
        f"{fmt(m(krum['asr_last5']))}; seed: over 0.9 vs near 0) with the same accuracy ({fmt(m(fedavg['accuracy_last5']))} vs "
        f"{fmt(m(krum['accuracy_last5']))}; FedAvg − Krum {krum_gap.text()}, Krum − 0.1 {krum_low.text()}): "
        + bold(combine([krum_gap.verdict, krum_low.verdict])),
        f"DBA with 3 of 6 is more successful than blend with 3 of 6 (ASR {fmt(m(dba['asr_last5']))} vs "
        f"{fmt(m(blend3['asr_last5']))}; seed: DBA 0.996; difference {dba_gap.text()}): " + bold(dba_gap.verdict),
        f"Clipping to the median norm does not stop model replacement (ASR scaled {fmt(m(scaled['asr_last5']))}, clipped "
        f"{fmt(m(clipped['asr_last5']))}; accuracy {fmt(m(scaled['accuracy_last5']))} vs {fmt(m(clipped['accuracy_last5']))}; "
        f"seed: ASR dropped but stayed high, accuracy stayed low; clipped ASR − 0.5 {clipped_high.text()}): "
        + bold(clipped_high.verdict),
    ]
    return table, findings


def method_of(row: dict[str, str]) -> str:
    """LF / TS / ADA-full / ADA-partial / clean, from a seed-004 cell's settings."""
    if row["attack"] == "ada":
        return f"ada-{row['ada-knowledge']}"
    if row["attack"] == "label-flip":
        return row["update-attack"]
    return "clean"


def attack_targets(row: dict[str, str]) -> list[int] | None:
    """The target classes the cell's attackers used (ADA chooses its own).

    From ``clients.csv`` (``attack_target`` of the attacked clients) when the cell kept it;
    otherwise from ``rounds.csv``'s ``ts_ata_target`` (the target each round's ``ts_ata``
    measured: the latest one the attackers reported), which the committed results keep. None when
    neither is there (cells run before ``ts_ata_target`` was recorded, without ``clients.csv``).
    """
    path = Path(row["folder"]) / "clients.csv"
    if not path.is_file():
        measured = [int(float(value)) for entry in round_rows(row) if (value := entry.get("ts_ata_target", ""))]
        if not measured:
            return None
        return sorted({target for target in measured if target >= 0})
    clients = read_csv(path)
    return sorted(
        {
            int(entry["attack_target"])
            for entry in clients
            if entry.get("attacked") == "1" and int(entry["attack_target"]) >= 0
        }
    )


def seed004(rows: list[dict[str, str]]) -> tuple[list[dict[str, object]], list[str]]:
    """Max-over-rounds ATA and MTA per method and attacker fraction next to Tables I–II (MNIST).

    LF and TS are averaged over the target classes the folders hold, seed by seed (then over
    seeds); the findings also name the targets ADA chose and the ATA of LF / TS to each target.
    Every row also has the accuracy on the whole test set (maximum over the rounds, like MTA), and
    the clean run is a row of its own: the baseline of the finding that the attacks leave the main
    task intact (the clean run has no MTA: without an attack no class is the source).
    """
    ata: dict[tuple[str, float], dict[str, list[float]]] = {}  # (method, fraction) -> seed -> ATA per target
    mta: dict[tuple[str, float], dict[str, list[float]]] = {}
    accuracy: dict[tuple[str, float], dict[str, list[float]]] = {}
    clean: dict[str, list[float]] = {}
    clean_error: dict[str, list[float]] = {}  # seed -> 1 - the source class's accuracy (max from the attack's start)
    cells: dict[tuple[str, float], int] = {}
    per_target: dict[tuple[str, float], dict[int, list[float]]] = {}
    chosen: dict[str, set[int]] = {}
    unrecorded: set[str] = set()
    for row in rows:
        method = "label-flip" if method_of(row) == "none" else method_of(row)
        history = round_rows(row)
        start = int(read_start_round(row))
        if method == "clean":
            clean.setdefault(seed_of(row), []).append(max_from(history, "accuracy", 1))
            source = values_from(history, f"class_{setting_text(row, 'source-class')}_accuracy", start)
            clean_error.setdefault(seed_of(row), []).append(1 - min(source) if source else math.nan)
            continue
        fraction = attacker_fraction(row)
        key = (method, fraction)
        cell_ata = max_from(history, "ts_ata", start)
        ata.setdefault(key, {}).setdefault(seed_of(row), []).append(cell_ata)
        mta.setdefault(key, {}).setdefault(seed_of(row), []).append(max_from(history, "mta", 1))
        accuracy.setdefault(key, {}).setdefault(seed_of(row), []).append(max_from(history, "accuracy", 1))
        cells[key] = cells.get(key, 0) + 1
        if method.startswith("ada"):
            targets = attack_targets(row)
            if targets is None:
                unrecorded.add(method)
            else:
                chosen.setdefault(method, set()).update(targets)
        else:
            per_target.setdefault(key, {}).setdefault(int(row["target-class"]), []).append(cell_ata)

    def seed_means(values: dict[str, list[float]]) -> SeedValues:
        means = {seed: summarize(numbers).mean for seed, numbers in values.items()}
        return {seed: value for seed, value in means.items() if math.isfinite(value)}

    by_ata = {key: seed_means(values) for key, values in ata.items()}
    by_mta = {key: seed_means(values) for key, values in mta.items()}
    by_accuracy = {key: seed_means(values) for key, values in accuracy.items()}
    clean_accuracy = seed_means(clean)
    table: list[dict[str, object]] = []
    for method, fraction in sorted(ata, key=lambda key: (key[1], key[0])):
        paper = SEED004_MNIST.get(method, {}).get(fraction, (math.nan, math.nan))
        table.append(
            {
                "fraction": fraction,
                "method": method,
                "cells": cells[(method, fraction)],
                "seeds": len(ata[(method, fraction)]),
                "ata": summarize(by_ata[(method, fraction)].values()),
                "mta": summarize(by_mta[(method, fraction)].values()),
                "accuracy": summarize(by_accuracy[(method, fraction)].values()),
                "paper_mnist_ata": paper[0],
                "paper_mnist_mta": paper[1],
            }
        )
    if clean:
        table.insert(
            0,
            {
                "fraction": 0.0,
                "method": "clean",
                "cells": sum(len(values) for values in clean.values()),
                "seeds": len(clean),
                "ata": summarize([]),
                "mta": summarize([]),
                "accuracy": summarize(clean_accuracy.values()),
                "paper_mnist_ata": math.nan,
                "paper_mnist_mta": math.nan,
            },
        )

    def of(method: str, fraction: float) -> SeedValues:
        return by_ata.get((method, fraction), {})

    m = mean_over_seeds
    findings = []
    baselines = {"label-flip": "LF", "train-and-scale": "TS"}
    for fraction in (0.01, 0.05, 0.1):
        verdicts = []
        for method in ("ada-full", "ada-partial"):
            for baseline, short in baselines.items():
                claim = Claim(paired(of(baseline, fraction), of(method, fraction)), 1)
                verdicts.append(claim.verdict)
                findings.append(
                    f"ε = {fraction}: {ADA_NAMES[method]} ATA above {short} ATA "
                    f"({fmt(m(of(method, fraction)))} vs {fmt(m(of(baseline, fraction)))}; paper MNIST "
                    f"{SEED004_MNIST[method][fraction][0]} vs {SEED004_MNIST[baseline][fraction][0]}; "
                    f"difference {claim.text()}): " + bold(claim.verdict)
                )
        findings.append(
            f"ε = {fraction}: the paper's headline, ADA (full and partial) at or above LF and TS in ATA "
            f"(the four claims above together): " + bold(combine(verdicts))
        )
        ordering = Claim(paired(of("train-and-scale", fraction), of("label-flip", fraction)), 1)
        findings.append(
            f"ε = {fraction}: LF ATA above TS ATA, Table I's ordering ({fmt(m(of('label-flip', fraction)))} vs "
            f"{fmt(m(of('train-and-scale', fraction)))}; paper MNIST {SEED004_MNIST['label-flip'][fraction][0]} vs "
            f"{SEED004_MNIST['train-and-scale'][fraction][0]}; difference {ordering.text()}): " + bold(ordering.verdict)
        )
    for method, classes in sorted(chosen.items()):
        findings.append(
            f"{method} chose target class(es) {', '.join(map(str, sorted(classes))) or 'none (never attacked)'}"
        )
    for method in sorted(unrecorded - set(chosen)):
        findings.append(
            f"{method}: the target classes it chose are not recorded here (its cells kept neither clients.csv nor "
            "rounds.csv's ts_ata_target)"
        )
    for (method, fraction), atas in sorted(per_target.items(), key=lambda item: (item[0][1], item[0][0])):
        target_means = {target: mean(values) for target, values in atas.items()}
        best = max(target_means, key=lambda target: target_means[target])
        listing = ", ".join(f"{target}: {fmt(value)}" for target, value in sorted(target_means.items()))
        findings.append(f"{method} at ε = {fraction}, ATA per target ({listing}); best target {best}")
    lf_series = [of("label-flip", f) for f in (0.01, 0.05, 0.1)]
    growth = Claim(paired(lf_series[0], lf_series[2]), 1)
    findings.append(
        f"ATA grows with the attacker fraction (LF {' / '.join(fmt(m(v)) for v in lf_series)}; ε = 0.1 − 0.01 "
        f"{growth.text()}): " + bold(growth.verdict)
    )
    findings.append(main_task_finding(by_mta, by_accuracy, clean_accuracy))
    if clean_error:
        bound = seed_means(clean_error)
        over = [
            f"{method} at ε = {fraction:g} ({fmt(m(values))})"
            for (method, fraction), values in sorted(by_ata.items(), key=lambda item: (item[0][1], item[0][0]))
            if m(values) > m(bound)
        ]
        findings.append(
            f"Without an attack the model misclassifies {format_summary(summarize(bound.values()))} of the source "
            "class's test images (1 − its accuracy, maximum over the rounds from the attack's start): no target's ATA "
            f"can be higher without an attack. Mean ATA above that: {', '.join(over) or 'none'}"
        )
    return table, findings


def main_task_finding(
    by_mta: Mapping[tuple[str, float], SeedValues],
    by_accuracy: Mapping[tuple[str, float], SeedValues],
    clean: SeedValues,
    fraction: float = 0.1,
    tolerance: float = 0.01,
) -> str:
    """Seed 004's stealth claim, checked: at ``fraction`` every attack's accuracy stays within ``tolerance`` of the clean run's.

    Each method's claim is its accuracy − clean + ``tolerance`` > 0, paired by seed (the paper's MTA
    barely moves: 0.965–0.990 in Tables I–II); the finding agrees when each method's does, and
    names the lowest method and the MTA range.

    Parameters
    ----------
    by_mta, by_accuracy : Mapping[tuple[str, float], SeedValues]
        (method, attacker fraction) -> seed -> MTA / accuracy (maximum over the rounds).
    clean : SeedValues
        Seed -> the clean run's accuracy (maximum over the rounds).
    fraction : float
        The attacker fraction the claim is checked at (the one with replicates).
    tolerance : float
        How far below the clean accuracy counts as intact.
    """
    methods = sorted(key for key in by_accuracy if math.isclose(key[1], fraction))
    claims = {key: Claim(above(paired(clean, by_accuracy[key]), -tolerance), 1) for key in methods}
    mtas = [mean_over_seeds(values) for values in by_mta.values()]
    text = (
        f"The attacks leave the main task intact at ε = {fraction:g}: accuracy (maximum over the rounds) within "
        f"{tolerance * 100:g} point of the clean run's ({fmt(mean_over_seeds(clean))}) for every method (MTA range "
        f"{fmt(min(mtas, default=math.nan))}–{fmt(max(mtas, default=math.nan))}; paper 0.965–0.990"
    )
    if not claims or not clean:
        return text + "): " + bold(NOT_MEASURED)
    lowest = min(methods, key=lambda key: mean_over_seeds(by_accuracy[key]))
    return (
        text + f"; lowest {fmt(mean_over_seeds(by_accuracy[lowest]))} ({lowest[0]}; its accuracy − clean + "
        f"{tolerance:g}: {claims[lowest].text()})): " + bold(combine([claim.verdict for claim in claims.values()]))
    )


def setting_text(row: Mapping[str, str], key: str) -> str:
    """The cell's value of setting ``key`` as text: its row's, else the setting's default.

    Parameters
    ----------
    row : Mapping[str, str]
        A cell row of :func:`cell_rows` (settings the sweep fixes are filled in).
    key : str
        The setting.
    """
    value = row.get(key)
    if value not in (None, ""):
        return str(value)
    return text_of(next(setting.default for setting in catalogue().settings() if setting.key == key))


def attacker_fraction(row: Mapping[str, str]) -> float:
    """The paper's ε of a cell: its ``num-malicious`` over its ``num-clients``."""
    return int(setting_text(row, "num-malicious")) / int(setting_text(row, "num-clients"))


def attacker_epochs_of(row: Mapping[str, str]) -> int:
    """The epochs the cell's attackers trained in their attack rounds (``attacker-epochs``; auto = ``local-epochs``)."""
    value = setting_text(row, "attacker-epochs")
    return int(float(setting_text(row, "local-epochs") if value.strip().lower() == "auto" else value))


def seed004_sensitivity(rows: list[dict[str, str]]) -> tuple[list[dict[str, object]], list[str]]:
    """ATA and MTA per attack, injection rate α (``poison-rate``) and attacker epochs, beside the paper's ε = 0.1 ATA.

    Not the paper's setting: it states neither α nor a separate attacker schedule. The findings
    say which settings reach the paper's ATA, and how α and the epochs move the ATA (paired by
    seed). Groups are told apart by attack, attacker fraction and label-flip target too, so that
    cells of other sweeps read alongside do not mix in.
    """
    Group = tuple[str, float, str, float, int]  # method, fraction, target, α, epochs
    ata: dict[Group, SeedValues] = {}
    mta: dict[Group, SeedValues] = {}
    accuracy: dict[Group, SeedValues] = {}
    clean: SeedValues = {}
    for row in rows:
        method = "label-flip" if method_of(row) == "none" else method_of(row)
        history = round_rows(row)
        if method == "clean":
            clean[seed_of(row)] = max_from(history, "accuracy", 1)
            continue
        target = "chosen" if method.startswith("ada") else setting_text(row, "target-class")
        fraction = attacker_fraction(row)
        key = (method, fraction, target, float(setting_text(row, "poison-rate")), attacker_epochs_of(row))
        ata.setdefault(key, {})[seed_of(row)] = max_from(history, "ts_ata", read_start_round(row))
        mta.setdefault(key, {})[seed_of(row)] = max_from(history, "mta", 1)
        accuracy.setdefault(key, {})[seed_of(row)] = max_from(history, "accuracy", 1)
    table: list[dict[str, object]] = []
    for key in sorted(ata):
        method, fraction, target, rate, epochs = key
        table.append(
            {
                "method": method,
                "fraction": fraction,
                "target": target,
                "poison_rate": rate,
                "attacker_epochs": epochs,
                "seeds": len(ata[key]),
                "ata": summarize(ata[key].values()),
                "mta": summarize(mta[key].values()),
                "accuracy": summarize(accuracy[key].values()),
                "paper_mnist_ata": SEED004_MNIST.get(method, {}).get(fraction, (math.nan, math.nan))[0],
            }
        )
    if clean:
        table.append(
            {
                "method": "clean",
                "fraction": 0.0,
                "target": "",
                "poison_rate": math.nan,
                "attacker_epochs": math.nan,
                "seeds": len(clean),
                "ata": summarize([]),
                "mta": summarize([]),
                "accuracy": summarize(clean.values()),
                "paper_mnist_ata": math.nan,
            }
        )
    findings: list[str] = []
    for attack in sorted({key[:3] for key in ata}):
        method, fraction, target = attack
        paper = SEED004_MNIST.get(method, {}).get(fraction, (math.nan, math.nan))[0]
        settings = sorted(key for key in ata if key[:3] == attack)
        means = {key: mean_over_seeds(ata[key]) for key in settings}
        best = max(settings, key=lambda key: means[key])
        reaching = [key for key in settings if means[key] >= paper]
        reached = (
            "reached with " + ", ".join(f"α = {key[3]:g} and {key[4]} epoch(s)" for key in reaching)
            if reaching
            else "reached by none of these settings"
        )
        name = f"{method} (ε = {fraction:g}{'' if target == 'chosen' else f', target {target}'})"
        findings.append(
            f"{name}: highest ATA {fmt(means[best])} (α = {best[3]:g}, {best[4]} attacker epoch(s)); "
            f"the paper's ATA ({paper}) is {reached}"
        )
        rates = sorted({key[3] for key in settings})
        all_epochs = sorted({key[4] for key in settings})
        comparisons = [((*attack, rates[0], epochs), (*attack, rates[-1], epochs)) for epochs in all_epochs]
        comparisons += [((*attack, rate, all_epochs[0]), (*attack, rate, all_epochs[-1])) for rate in rates]
        for low, high in comparisons:
            if low == high or low not in ata or high not in ata:
                continue
            change = (
                f"{low[4]} attacker epoch(s): ATA rises from α = {low[3]:g} to α = {high[3]:g}"
                if low[4] == high[4]
                else f"α = {low[3]:g}: ATA rises from {low[4]} to {high[4]} attacker epochs"
            )
            claim = Claim(paired(ata[low], ata[high]), 1)
            findings.append(
                f"{name}, {change} ({fmt(means[low])} → {fmt(means[high])}; difference {claim.text()}): "
                + bold(claim.verdict)
            )
    if clean and accuracy:
        lowest = min(accuracy, key=lambda key: mean_over_seeds(accuracy[key]))
        claim = Claim(above(paired(clean, accuracy[lowest]), -0.01), 1)
        findings.append(
            f"Accuracy (maximum over the rounds) stays within 1 point of the clean run's "
            f"({fmt(mean_over_seeds(clean))}); lowest {fmt(mean_over_seeds(accuracy[lowest]))} ({lowest[0]}, "
            f"α = {lowest[3]:g}, {lowest[4]} epoch(s); its accuracy − clean + 0.01: {claim.text()}): "
            + bold(claim.verdict)
        )
    return table, findings


def plot_seed004_rounds(rows: list[dict[str, str]], out: Path, fraction: float = 0.1) -> list[Path]:
    """``rounds.png``: ts-ATA per round at attacker fraction ``fraction``, one panel per seed, with the attackers sampled.

    Lines: ADA full and partial, LF and TS (the mean over the targets the folders hold); bars: how
    many attackers attacked in the round (the sampling follows the seed, so every attack of a seed
    sees the same rounds). The maximum over the rounds, the tables' ATA, is where the bars are high.

    Parameters
    ----------
    rows : list[dict[str, str]]
        The study's cells (:func:`cell_rows`).
    out : Path
        The folder of the figure.
    fraction : float
        The attacker fraction drawn (cells with ``num-malicious`` / ``num-clients`` equal to it).
    """
    from matplotlib.figure import Figure

    from fl_poison.core.plots import save_figure

    curves: dict[str, dict[str, list[dict[int, float]]]] = {}  # seed -> method -> one {round: ATA} per cell
    attackers: dict[str, dict[int, float]] = {}  # seed -> round -> attackers (the most any cell saw)
    for row in rows:
        method = "label-flip" if method_of(row) == "none" else method_of(row)
        if method == "clean" or not math.isclose(attacker_fraction(row), fraction):
            continue
        history = round_rows(row)
        start = read_start_round(row)
        seed = seed_of(row)
        curve = {int(entry["round"]): number(entry.get("ts_ata")) for entry in history if int(entry["round"]) >= start}
        curves.setdefault(seed, {}).setdefault(method, []).append(curve)
        counts = attackers.setdefault(seed, {})
        for entry in history:
            count = number(entry.get("attackers"))
            if math.isfinite(count) and int(entry["round"]) >= start:
                counts[int(entry["round"])] = max(counts.get(int(entry["round"]), 0.0), count)
    if not curves:
        return []
    seeds = sorted(curves, key=lambda seed: (len(seed), seed))
    figure = Figure(figsize=(4.2 * len(seeds), 3.6))
    axes = figure.subplots(1, len(seeds), squeeze=False, sharey=True)[0]
    for axis, seed in zip(axes, seeds, strict=True):
        counts = attackers.get(seed, {})
        if counts:
            bars = axis.twinx()
            rounds = sorted(counts)
            bars.bar(rounds, [counts[r] for r in rounds], color="lightgrey", width=0.8, zorder=0)
            bars.set(ylabel="attackers in the round", ylim=(0, max(3.0, max(counts.values()) * 3)))
            axis.set_zorder(bars.get_zorder() + 1)
            axis.patch.set_visible(False)
        for method in ("ada-full", "ada-partial", "label-flip", "train-and-scale"):
            per_cell = curves[seed].get(method, [])
            if not per_cell:
                continue
            xs = sorted(set().union(*per_cell))
            ys = [
                mean([cell[x] for cell in per_cell if x in cell and math.isfinite(cell[x])] or [math.nan]) for x in xs
            ]
            label = method if len(per_cell) == 1 else f"{method} (mean of {len(per_cell)} targets)"
            axis.plot(xs, ys, marker=".", label=label)
        axis.set(title=f"seed {seed}", xlabel="round", ylim=(-0.02, 1.02))
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("ts-ATA")
    axes[0].legend(fontsize=7, loc="upper left")
    figure.suptitle(f"ts-ATA per round from the attack's start, ε = {fraction:g}; bars: attackers sampled", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, out / "rounds.png")


def plot_sensitivity(table: Sequence[Mapping[str, object]], out: Path) -> list[Path]:
    """``sensitivity.png``: ATA against α, one line per attack and attacker epochs, the paper's ATA dashed.

    Parameters
    ----------
    table : Sequence[Mapping[str, object]]
        The rows of :func:`seed004_sensitivity`.
    out : Path
        The folder of the figure.
    """
    from matplotlib.figure import Figure

    from fl_poison.core.plots import save_figure

    rows = [row for row in table if row["method"] != "clean"]
    if not rows:
        return []
    figure = Figure(figsize=(6.4, 4.2))
    axis = figure.add_subplot()
    lines = sorted({(str(row["method"]), str(row["target"]), int(cast(int, row["attacker_epochs"]))) for row in rows})
    for method, target, epochs in lines:
        points = sorted(
            (cast(float, row["poison_rate"]), cast(Summary, row["ata"]))
            for row in rows
            if (row["method"], row["target"], row["attacker_epochs"]) == (method, target, epochs)
        )
        rates = [rate for rate, _ in points]
        means = [summary.mean for _, summary in points]
        below = [summary.mean - summary.ci_low if summary.has_interval else 0.0 for _, summary in points]
        above_ = [summary.ci_high - summary.mean if summary.has_interval else 0.0 for _, summary in points]
        label = f"{method}{'' if target == 'chosen' else f' → {target}'}, {epochs} attacker epoch(s)"
        axis.errorbar(rates, means, yerr=[below, above_], marker="o", capsize=3, label=label)
    for method in sorted({str(row["method"]) for row in rows}):
        paper = next(cast(float, row["paper_mnist_ata"]) for row in rows if row["method"] == method)
        if math.isfinite(paper):
            axis.axhline(paper, linestyle="--", linewidth=0.8, color="grey")
            axis.annotate(
                f"paper: {method} {paper}",
                (0.01, paper),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                xytext=(0, 2),
                textcoords="offset points",
            )
    axis.set(
        xlabel="injection rate α (poison-rate)", ylabel="ATA (maximum after the attack starts)", ylim=(-0.02, 1.02)
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    axis.set_title("Seed 004, sensitivity: ATA against α (bars: 95 % t interval over seeds)", fontsize=9)
    figure.tight_layout()
    return save_figure(figure, out / "sensitivity.png")


def read_start_round(row: dict[str, str]) -> int:
    """The cell's ``attack-start-round``: from its config.json, else its row (sweep.json), else 1."""
    try:
        settings = json.loads((Path(row["folder"]) / "config.json").read_text())["settings"]
        return int(settings.get("attack-start-round", 1))
    except (OSError, ValueError, KeyError, TypeError):
        text = row.get("attack-start-round")
        return int(text) if text not in (None, "") else 1


def csv_rows(table: Sequence[Mapping[str, object]]) -> tuple[list[dict[str, object]], list[str]]:
    """The table for ``comparison.csv``: a :class:`Summary` becomes its mean and ``_std``, ``_ci_low``, ``_ci_high`` columns.

    Parameters
    ----------
    table : Sequence[Mapping[str, object]]
        The comparison's rows.
    """
    rows: list[dict[str, object]] = []
    columns: list[str] = []
    for entry in table:
        row: dict[str, object] = {}
        for key, value in entry.items():
            if isinstance(value, Summary):
                row.update(
                    {
                        key: value.mean,
                        f"{key}_std": value.std,
                        f"{key}_ci_low": value.ci_low,
                        f"{key}_ci_high": value.ci_high,
                    }
                )
            else:
                row[key] = value
        rows.append(row)
        columns.extend(key for key in row if key not in columns)
    return rows, columns


def display_rows(table: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """The table for ``comparison.md``: a :class:`Summary` as ``mean ± sd [low, high]`` (one seed: ``mean (1 seed, no CI)``).

    Parameters
    ----------
    table : Sequence[Mapping[str, object]]
        The comparison's rows.
    """
    return [
        {key: format_summary(value) if isinstance(value, Summary) else value for key, value in entry.items()}
        for entry in table
    ]


STUDIES: dict[str, tuple[str, Callable[[list[dict[str, str]]], tuple[list[dict[str, object]], list[str]]]]] = {
    "seed000": ("Seed 000 on {data}: label flipping, FedAvg vs FedProx, loss filtering", seed000),
    "seed001": ("Seed 001 on {data}: blend and DBA backdoors, Krum, scaling and clipping", seed001),
    "seed004": ("Seed 004 on {data}: ADA vs label flipping and train-and-scale (Tables I–II)", seed004),
    "seed004-sensitivity": (
        "Seed 004 on {data}, sensitivity (not the paper's setting): ATA per injection rate α and attacker epochs",
        seed004_sensitivity,
    ),
}
# Studies that draw figures beside their table: study -> (cells, table, folder) -> the files written.
FIGURES: dict[str, Callable[[list[dict[str, str]], Sequence[Mapping[str, object]], Path], list[Path]]] = {
    "seed004": lambda cells, table, out: plot_seed004_rounds(cells, out),
    "seed004-sensitivity": lambda cells, table, out: plot_sensitivity(table, out),
}


def seed004_paper_layout(table: Sequence[Mapping[str, object]]) -> list[str]:
    """The seed-004 table as the paper lays out Tables I–II: a row per method, ε across, ours beside the paper's.

    Parameters
    ----------
    table : Sequence[Mapping[str, object]]
        The rows of :func:`seed004`.
    """
    fractions = (0.01, 0.05, 0.1)
    names = {"label-flip": "LF (Table I)", "train-and-scale": "TS (Table I)"}
    names |= {method: f"{name} (Table {'I' if method == 'ada-full' else 'II'})" for method, name in ADA_NAMES.items()}
    lines = []
    for metric, column in (("ATA", "ata"), ("MTA", "mta")):
        rows = []
        for method, name in names.items():
            row: dict[str, object] = {"method": name}
            for fraction in fractions:
                entry = next(
                    (e for e in table if e["method"] == method and math.isclose(cast(float, e["fraction"]), fraction)),
                    None,
                )
                ours = format_summary(cast(Summary, entry[column])) if entry is not None else "not run"
                paper = SEED004_MNIST[method][fraction][0 if column == "ata" else 1]
                row[f"ε = {fraction:g}"] = f"{ours} / {paper:.3f}"
            rows.append(row)
        lines += [
            f"### {metric} in the paper's layout (MNIST): ours (mean ± sd [95 % t interval] over seeds) / the paper's",
            "",
            markdown_table(rows, list(rows[0])),
            "",
        ]
    return lines


# Studies whose documents lay their numbers out otherwise: study -> table -> Markdown lines after the table.
LAYOUTS: dict[str, Callable[[Sequence[Mapping[str, object]]], list[str]]] = {"seed004": seed004_paper_layout}
# How a dataset is named in titles: the embedded ones and the folders of ../shared/data by name.
DATASET_LABELS = {"digits": "digits", "mnist": "MNIST", "cifar10": "CIFAR-10", "cifar10-jpeg": "CIFAR-10 (JPEG copy)"}


def dataset_label(rows: Sequence[Mapping[str, str]]) -> str:
    """The dataset(s) the cells ran on, for titles: a known name, else the folder's or hub id's last part.

    Parameters
    ----------
    rows : Sequence[Mapping[str, str]]
        The study's cells (see :func:`cell_rows`); a row without ``dataset`` ran on the default.
    """
    default = text_of(next(setting.default for setting in catalogue().settings() if setting.key == "dataset"))
    names = []
    for row in rows:
        name = Path((row.get("dataset") or default).rstrip("/")).name
        label = DATASET_LABELS.get(name, name)
        if label not in names:
            names.append(label)
    return " and ".join(names)


def write_comparison(study: str, sweep_dirs: Path | Sequence[Path], out: Path) -> Path:
    """Write ``comparison.csv`` and ``comparison.md`` of ``study`` from the sweep folder(s) into ``out``.

    Parameters
    ----------
    study : str
        A key of :data:`STUDIES`.
    sweep_dirs : Path | Sequence[Path]
        The sweep folder(s) of the study.
    out : Path
        Where the two files go.
    """
    title, compare = STUDIES[study]
    folders = [Path(sweep_dirs)] if isinstance(sweep_dirs, (str, Path)) else [Path(folder) for folder in sweep_dirs]
    cells = cell_rows(folders)
    data = dataset_label(cells)
    table, findings = compare(cells)
    if not table:
        raise ValueError(f"{', '.join(map(str, folders))}: no finished cells in sweep.csv")
    rows, columns = csv_rows(table)
    write_csv(out / "comparison.csv", rows, columns)
    sources = ", ".join(f"`{folder}`" for folder in folders)
    text = [
        f"# {title.format(data=data)}",
        "",
        f"From {sources}. Numbers over seeds: mean ± sample standard deviation [95 % t interval] "
        "(one seed: no interval); `comparison.csv` has each as `NAME`, `NAME_std`, `NAME_ci_low`, `NAME_ci_high`.",
        "",
        markdown_table(display_rows(table), list(table[0])),
        "",
    ]
    layout = LAYOUTS.get(study)
    text += layout(table) if layout else []
    draw = FIGURES.get(study)
    text += [f"![{path.stem}]({path.name})\n" for path in (draw(cells, table, out) if draw else [])]
    text += [
        f"## The document's findings, checked on {data}",
        "",
        "Each finding is judged by the 95 % t interval, over seeds, of the difference it is about: "
        "**agrees** when the interval has the finding's sign and excludes 0, **differs** when it has "
        "the other sign and excludes 0, **inconclusive** when it contains 0 or there is no interval "
        "(a single seed).",
        "",
    ]
    text += [f"- {finding}" for finding in findings]
    atomic_write_bytes(out / "comparison.md", ("\n".join(text) + "\n").encode())
    return out / "comparison.md"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m experiments.seed_studies STUDY SWEEP_DIR [SWEEP_DIR ...] [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("sweep_dirs", type=Path, nargs="+", metavar="SWEEP_DIR", help="sweep folder(s) of the study")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for comparison.md/.csv (default: the first sweep folder)"
    )
    arguments = parser.parse_args(argv)
    for folder in arguments.sweep_dirs:
        if not (folder / "sweep.csv").is_file():
            print(
                f"seed_studies: error: {folder}: no sweep.csv; allowed: a folder written by fl-poison sweep",
                file=sys.stderr,
            )
            return 2
    error = missing_rounds_error("seed_studies", cell_rows(arguments.sweep_dirs))
    if error:
        print(error, file=sys.stderr)
        return 2
    print(write_comparison(arguments.study, arguments.sweep_dirs, arguments.out or arguments.sweep_dirs[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
