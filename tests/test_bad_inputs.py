"""Hostile or mistaken input fails before training with one line, and writes or overwrites nothing.

Every case of :data:`CASES` builds its input in ``tmp_path`` (settings, sweep files, sweep folders
edited by hand, node configs, local datasets), then runs it in-process: a command line through
``fl_poison.cli.main`` (with Flower's start replaced by a failure, so reaching it fails the test)
or a function (the node's join check, the result-folder helpers). Each must

* fail: exit status 2 (1 for ``deploy``) or a :class:`ConfigError`;
* say so in exactly one line that names the setting or file at fault;
* leave ``tmp_path`` exactly as it was: no result folder, half-written or not, nothing
  overwritten (every file's bytes are compared before and after), nothing written next to it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from fl_poison import launch
from fl_poison.apps.client_app import describe
from fl_poison.apps.node import check_node
from fl_poison.cli import main
from fl_poison.core.results import create_result_folder, remove_unfinished_run
from fl_poison.core.settings import ConfigError
from tests.sweep_folder_helpers import CLIP_CELL, FAILED, build_sweep_folder, main_cell_id

Action = list[str] | Callable[[], object]
Build = Callable[[Path], Action]
RUN_CONFIG = {"num-clients": 10}
OK_CELL = main_cell_id("fedavg", "label-flip", 0)


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes
    ----------
    name : str
        The test id.
    build : Callable[[Path], list[str] | Callable[[], object]]
        Writes the input under ``tmp_path`` and returns a command line for ``fl-poison`` or a
        function that must raise :class:`ConfigError`.
    names : str
        What the one line must name: the setting, option or file at fault.
    code : int
        The expected exit status of a command line.
    """

    name: str
    build: Build
    names: str
    code: int = 2


# ---------------------------------------------------------------------------- input builders


def run(*items: str) -> Build:
    """``fl-poison run ITEMS`` with an ``output-dir`` under ``tmp_path`` (an item may replace it)."""
    return lambda tmp: ["run", f"output-dir={tmp / 'out'}", *items]


def run_with(make: Callable[[Path], list[str]]) -> Build:
    """``fl-poison run`` with items that need files: ``make(tmp)`` writes them and returns the items."""
    return lambda tmp: ["run", f"output-dir={tmp / 'out'}", *make(tmp)]


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A tiny PNG file whose header claims ``side`` x ``side`` grey pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    payload = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + payload)
    return path


def image_folder(
    root: Path, count: int = 12, size: int = 8, labels: tuple[int, ...] = (0, 1, 2, 3), mode: str = "L"
) -> Path:
    """An ``imagefolder`` tree ``root/train/<label>/<i>.png`` of ``count`` blank images."""
    for index in range(count):
        label = labels[index % len(labels)]
        folder = root / "train" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        shape = (size, size) if mode == "L" else (size, size, 3)
        Image.fromarray(np.full(shape, 40 * (index % 5), np.uint8), mode=mode).save(folder / f"{index}.png")
    return root


def saved_dataset(
    root: Path, labels: list[object], images: list[object] | None = None, **features: datasets.FeatureType
) -> Path:
    """A ``save_to_disk`` folder with an ``image`` column of 8x8 arrays and a ``label`` column."""
    images = images if images is not None else [np.full((8, 8), 0.5, np.float32) for _ in labels]
    data = datasets.Dataset.from_dict(
        {"image": images, "label": labels}, features=datasets.Features(features) if features else None
    )
    data.save_to_disk(str(root))
    return root


def local_dataset(make: Callable[[Path], Path], *items: str) -> Build:
    """``fl-poison run dataset=FOLDER num-clients=2 ITEMS`` on a local folder ``make(tmp / 'data')`` writes."""
    return run_with(lambda tmp: [f"dataset={make(tmp / 'data')}", "num-clients=2", *items])


def mixed_sizes(root: Path) -> Path:
    image_folder(root, count=6, size=8)
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(root / "train" / "0" / "odd.png")
    return root


def mixed_modes(root: Path) -> Path:
    image_folder(root, count=6, size=8)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8), mode="RGB").save(root / "train" / "1" / "colour.png")
    return root


def with_script(root: Path, relative: str) -> Path:
    image_folder(root)
    script = root / relative
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("open('pwned', 'w').write('ran')\n")
    return root


def with_bomb(root: Path) -> Path:
    image_folder(root)
    bomb_png(root / "train" / "2" / "bomb.png")
    return root


def oversized(root: Path) -> Path:
    for index in range(6):
        folder = root / "train" / str(index % 2)
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("L", (5000, 8)).save(folder / f"{index}.png")
    return root


def corrupt_saved(root: Path) -> Path:
    saved_dataset(root, [0, 1] * 6)
    (root / "state.json").write_text("{ not json")
    return root


def labels_beyond_train_classes(root: Path) -> Path:
    train = datasets.Dataset.from_dict(
        {"image": [np.zeros((8, 8), np.float32)] * 8, "label": [0, 1, 2, 3] * 2},
        features=datasets.Features(
            {"image": datasets.Array2D((8, 8), "float32"), "label": datasets.ClassLabel(num_classes=4)}
        ),
    )
    test = datasets.Dataset.from_dict({"image": [np.zeros((8, 8), np.float32)] * 4, "label": [0, 1, 2, 7]})
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(root))
    return root


def a_file(name: str = "a-file", text: str = "not a folder") -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_text(text)
        return path

    return make


# ---------------------------------------------------------------------------- node configs


def node(node_config: dict[str, object], run_config: dict[str, object] | None = None) -> Build:
    """The node's join check on ``node_config`` (``data-path`` values are relative to ``tmp_path``)."""

    def build(tmp: Path) -> Callable[[], object]:
        config = dict(node_config)
        if "data-path" in config:
            config["data-path"] = str(tmp / str(config["data-path"]))
        return lambda: check_node(run_config or RUN_CONFIG, config)

    return build


def node_with_data(make: Callable[[Path], Path], **extra: object) -> Build:
    """The join check of a node training on its own folder ``make(tmp / 'site')``."""

    def build(tmp: Path) -> Callable[[], object]:
        folder = make(tmp / "site")
        return lambda: check_node(RUN_CONFIG, {"partition-id": 0, "data-path": str(folder), **extra})

    return build


def through_query(node_config: dict[str, object], server_config: dict[str, object] | None = None) -> Build:
    """The ClientApp's ``query`` (its join check) with ``node_config``, the server sending ``server_config``."""

    def build(tmp: Path) -> Callable[[], object]:
        from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

        config = {key: str(tmp / str(value)) if key == "data-path" else value for key, value in node_config.items()}
        if "data-path" in config:
            image_folder(Path(str(config["data-path"])))
        message = Message(
            RecordDict({"config": ConfigRecord(server_config or {})}), dst_node_id=7, message_type=MessageType.QUERY
        )
        context = Context(run_id=1, node_id=7, node_config=config, state=RecordDict(), run_config=dict(RUN_CONFIG))  # type: ignore[arg-type]
        return lambda: describe(message, context)

    return build


# ---------------------------------------------------------------------------- sweeps


def sweep_file(text: str, *options: str) -> Build:
    """``fl-poison sweep FILE --out TMP/sweep OPTIONS`` with ``text`` as the sweep file."""

    def build(tmp: Path) -> list[str]:
        path = tmp / "sweep.toml"
        path.write_text(text)
        return ["sweep", str(path), "--out", str(tmp / "sweep"), *options]

    return build


GOOD_SWEEP = "[base]\nnum-rounds = 2\n[grid]\nseed = [1, 2]\n"


def sweep_out(make_out: Callable[[Path], Path], *options: str) -> Build:
    """``fl-poison sweep`` of a good sweep file into the ``--out`` that ``make_out(tmp)`` prepares."""

    def build(tmp: Path) -> list[str]:
        path = tmp / "sweep.toml"
        path.write_text(GOOD_SWEEP)
        return ["sweep", str(path), "--out", str(make_out(tmp)), *options]

    return build


def resumed_with_table(edit: Callable[[str], str]) -> Build:
    """Resume a sweep whose ``sweep.csv`` was edited by hand (``edit`` rewrites its text)."""

    def build(tmp: Path) -> list[str]:
        path = tmp / "sweep.toml"
        path.write_text(GOOD_SWEEP)
        out = tmp / "sweep"
        out.mkdir()
        (out / "sweep.json").write_text(json.dumps({"base": {"num-rounds": 2}, "grids": {"grid": {"seed": [1, 2]}}}))
        (out / "sweep.csv").write_text(edit("cell_id,grid,seed,status\n0123abcd,grid,1,failed\n"))
        return ["sweep", str(path), "--out", str(out)]

    return build


def sweep_folder(edit: Callable[[Path], None], command: str = "plot") -> Build:
    """``fl-poison plot|report`` on the hand-made sweep folder after ``edit(folder)``."""

    def build(tmp: Path) -> list[str]:
        folder = build_sweep_folder(tmp)
        edit(folder)
        return [command, str(folder)]

    return build


def replace_in(relative: str, old: str, new: str) -> Callable[[Path], None]:
    """An edit of the sweep folder: the first ``old`` in file ``relative`` becomes ``new``."""

    def edit(folder: Path) -> None:
        path = folder / relative
        text = path.read_text()
        assert old in text, (relative, old)
        path.write_text(text.replace(old, new, 1))

    return edit


def set_first_round(relative: str, value: str) -> Callable[[Path], None]:
    """An edit of the sweep folder: the ``round`` of the first row of CSV file ``relative`` becomes ``value``."""

    def edit(folder: Path) -> None:
        path = folder / relative
        with open(path, newline="") as stream:
            rows = list(csv.DictReader(stream))
        rows[0]["round"] = value
        with open(path, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    return edit


def write_to(relative: str, text: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        (folder / relative).write_text(text)

    return edit


def plots_link(folder: Path) -> None:
    outside = folder.parent / "elsewhere"
    outside.mkdir()
    (folder / "plots").symlink_to(outside, target_is_directory=True)


def cells_link(folder: Path) -> None:
    outside = folder.parent / "elsewhere"
    outside.mkdir()
    (folder / "plots").mkdir()
    (folder / "plots" / "cells").symlink_to(outside, target_is_directory=True)


def drop_column(column: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        lines = (folder / "sweep.csv").read_text().splitlines()
        header = lines[0].split(",")
        index = header.index(column)
        kept = [",".join(part for position, part in enumerate(line.split(",")) if position != index) for line in lines]
        (folder / "sweep.csv").write_text("\n".join(kept) + "\n")

    return edit


# ---------------------------------------------------------------------------- existing runs


def existing_run(kind: str) -> Build:
    """``fl-poison run run-name=old`` where ``out/old`` already exists as ``kind``."""

    def build(tmp: Path) -> list[str]:
        out = tmp / "out"
        out.mkdir()
        old = out / "old"
        if kind == "folder":
            old.mkdir()
            (old / "summary.json").write_text('{"accuracy": 0.91}\n')
            (old / "rounds.csv").write_text("round,accuracy\n1,0.91\n")
            (old / "model.pt").write_bytes(b"weights of the earlier run")
        elif kind == "empty":
            old.mkdir()
        elif kind == "file":
            old.write_text("a file named like the run")
        else:
            (tmp / "target").mkdir()
            old.symlink_to(tmp / "target", target_is_directory=True)
        return ["run", f"output-dir={out}", "run-name=old"]

    return build


def server_folder_exists(tmp: Path) -> Callable[[], object]:
    """The ServerApp's result-folder creation on a folder of an earlier run."""
    old = tmp / "out" / "old"
    old.mkdir(parents=True)
    (old / "summary.json").write_text('{"accuracy": 0.5}\n')
    return lambda: create_result_folder(old)


def server_on_real_supernodes(tmp: Path) -> Callable[[], object]:
    """The ServerApp of a model-poisoning run on a real SuperLink's grid (not the simulation engine's)."""
    from flwr.app import Context, RecordDict

    from fl_poison.apps.server_app import main as server_main
    from tests.strategy_helpers import FakeGrid

    run_config: dict[str, bool | float | int | str] = {
        "update-attack": "alie",
        "num-malicious": 2,
        "output-dir": str(tmp / "out"),
    }
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)
    return lambda: server_main(FakeGrid(range(10)), context)


def unfinished_with_foreign_file(tmp: Path) -> Callable[[], object]:
    """A tool clearing a failed run's folder that also holds a file no run writes."""
    old = tmp / "cell"
    old.mkdir()
    (old / "cell.log").write_text("status: failed\n")
    (old / "notes.txt").write_text("mine, keep it\n")
    return lambda: remove_unfinished_run(old)


def finished_run(tmp: Path) -> Callable[[], object]:
    old = tmp / "cell"
    old.mkdir()
    (old / "summary.json").write_text("{}\n")
    return lambda: remove_unfinished_run(old)


def other_sweep(tmp: Path) -> list[str]:
    out = tmp / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(json.dumps({"base": {}, "grids": {"grid": {"seed": [9]}}}))
    (out / "sweep.csv").write_text("cell_id,grid,seed,status\n")
    path = tmp / "sweep.toml"
    path.write_text(GOOD_SWEEP)
    return ["sweep", str(path), "--out", str(out)]


# ---------------------------------------------------------------------------- the cases

LONG_NAME = "a" * 101

CASES: list[Case] = [
    # settings of fl-poison run (digits, on this machine)
    Case("learning-rate-overflows", run("learning-rate=1e300"), "learning-rate"),
    Case("learning-rate-above-bound", run("learning-rate=1e4"), "learning-rate"),
    Case("learning-rate-zero", run("learning-rate=0"), "learning-rate"),
    Case("learning-rate-nan", run("learning-rate=nan"), "learning-rate"),
    Case("learning-rate-inf", run("learning-rate=inf"), "learning-rate"),
    Case("learning-rate-text", run("learning-rate=fast"), "learning-rate"),
    Case("client-weighting-unknown", run("client-weighting=trusted"), "client-weighting"),
    Case("weight-cap-multiple-below-one", run("weight-cap-multiple=0.5"), "weight-cap-multiple"),
    Case("weight-cap-multiple-nan", run("weight-cap-multiple=nan"), "weight-cap-multiple"),
    Case(
        "inflation-factor-zero",
        run("update-attack=weight-inflation", "num-malicious=1", "inflation-factor=0"),
        "inflation-factor",
    ),
    Case(
        "inflation-factor-huge",
        run("update-attack=weight-inflation", "num-malicious=1", "inflation-factor=1e300"),
        "inflation-factor",
    ),
    Case("seed-beyond-64-bits", run(f"seed={2**64}"), "seed"),
    Case("seed-at-2-63", run(f"seed={2**63}"), "seed"),
    Case("seed-huge-float", run("seed=1e30"), "seed"),
    Case("seed-negative", run("seed=-1"), "seed"),
    Case("seed-bool", run("seed=true"), "seed"),
    Case("num-rounds-beyond-64-bits", run(f"num-rounds={2**70}"), "num-rounds"),
    Case("run-name-quote", run("run-name=a'b"), "run-name"),
    Case("run-name-double-quote", run("run-name='a\"b'"), "run-name"),
    Case("run-name-control-character", run('run-name="a\\u0001b"'), "run-name"),
    Case("run-name-newline", run('run-name="a\\nb"'), "run-name"),
    Case("run-name-too-long", run(f"run-name={LONG_NAME}"), "run-name"),
    Case("run-name-parent", run("run-name=.."), "run-name"),
    Case("run-name-traversal", run("run-name=../escape"), "run-name"),
    Case("run-name-hidden", run("run-name=.hidden"), "run-name"),
    Case("run-name-option-like", run("run-name=-rf"), "run-name"),
    Case("run-name-space", run("run-name='a b'"), "run-name"),
    Case("run-name-shell", run("run-name=a;rm"), "run-name"),
    Case("output-dir-is-a-file", run_with(lambda tmp: [f"output-dir={a_file()(tmp)}"]), "output-dir"),
    Case("output-dir-under-a-file", run_with(lambda tmp: [f"output-dir={a_file()(tmp) / 'below'}"]), "output-dir"),
    Case("output-dir-empty", run("output-dir=''"), "output-dir"),
    Case("output-dir-control-character", run('output-dir="out\\u0000x"'), "output-dir"),
    Case("num-clients-above-rows", run("num-clients=5000"), "num-clients"),
    Case("num-clients-zero", run("num-clients=0"), "num-clients"),
    Case(
        "dirichlet-min-size-impossible",
        run("partitioning=dirichlet", "min-partition-size=100000"),
        "min-partition-size",
    ),
    Case(
        "dirichlet-min-size-unreachable", run("partitioning=dirichlet", "min-partition-size=140"), "min-partition-size"
    ),
    Case(
        "dirichlet-empty-client",
        run("partitioning=dirichlet", "min-partition-size=0", "dirichlet-alpha=1e-5"),
        "min-partition-size",
    ),
    Case(
        "samples-per-client-above-rows",
        run("partitioning=random-subsets", "samples-per-client=100000"),
        "samples-per-client",
    ),
    Case(
        "classes-per-client-above-classes",
        run("partitioning=pathological", "classes-per-client=11"),
        "classes-per-client",
    ),
    Case("momentum-one", run("momentum=1"), "momentum"),
    Case("weight-decay-huge", run("weight-decay=10"), "weight-decay"),
    Case("round-timeout-huge", run("round-timeout=1e300"), "round-timeout"),
    Case("node-wait-timeout-zero", run("node-wait-timeout=0"), "node-wait-timeout"),
    Case("test-fraction-one", run("test-fraction=1"), "test-fraction"),
    Case("target-class-beyond-classes", run("attack=badnets", "num-malicious=1", "target-class=50"), "target-class"),
    Case("fltrust-root-beyond-held-out-rows", run("strategy=fltrust", "fltrust-root-size=360"), "fltrust-root-size"),
    Case("fltrust-root-size-zero", run("strategy=fltrust", "fltrust-root-size=0"), "fltrust-root-size"),
    Case("flame-lambda-negative", run("strategy=flame", "flame-lambda=-0.1"), "flame-lambda"),
    Case("flame-lambda-nan", run("strategy=flame", "flame-lambda=nan"), "flame-lambda"),
    Case("foolsgold-confidence-zero", run("strategy=foolsgold", "foolsgold-confidence=0"), "foolsgold-confidence"),
    Case("foolsgold-features-unknown", run("strategy=foolsgold", "foolsgold-features=head"), "foolsgold-features"),
    Case("source-class-beyond-classes", run("attack=label-flip", "num-malicious=1", "source-class=10"), "source-class"),
    Case("stealthy-rho-negative", run("attack=stealthy", "num-malicious=1", "stealthy-rho=-1"), "stealthy-rho"),
    Case("stealthy-boost-zero", run("attack=stealthy", "num-malicious=1", "stealthy-boost=0"), "stealthy-boost"),
    Case(
        "stealthy-benign-steps-zero",
        run("attack=stealthy", "num-malicious=1", "stealthy-benign-steps=0"),
        "stealthy-benign-steps",
    ),
    Case("stealthy-source-all", run("attack=stealthy", "num-malicious=1", "source-class=all"), "source-class"),
    Case("stealthy-source-is-target", run("attack=stealthy", "num-malicious=1", "source-class=0"), "target-class"),
    Case(
        "stealthy-target-beyond-classes", run("attack=stealthy", "num-malicious=1", "target-class=10"), "target-class"
    ),
    Case("stealthy-with-update-attack", run("attack=stealthy", "update-attack=scaling"), "update-attack"),
    Case("alie-z-negative", run("update-attack=alie", "num-malicious=2", "alie-z=-1"), "alie-z"),
    Case("ipm-epsilon-zero", run("update-attack=ipm", "num-malicious=2", "ipm-epsilon=0"), "ipm-epsilon"),
    Case("mimic-target-text", run("update-attack=mimic", "num-malicious=2", "mimic-target=first"), "mimic-target"),
    Case(
        "sign-flip-factor-zero",
        run("update-attack=sign-flip", "num-malicious=1", "sign-flip-factor=0"),
        "sign-flip-factor",
    ),
    Case("gaussian-std-nan", run("update-attack=gaussian", "num-malicious=1", "gaussian-std=nan"), "gaussian-std"),
    Case(
        "attack-knowledge-undeclared",
        run("update-attack=mimic", "num-malicious=2", "attack-knowledge=colluding"),
        "attack-knowledge",
    ),
    Case("attack-knowledge-unknown", run("update-attack=alie", "attack-knowledge=everything"), "attack-knowledge"),
    Case("dataset-traversal-hub-id", run("dataset=a/../b"), "dataset"),
    Case("dataset-missing-folder", run("dataset=./no-such-folder"), "dataset"),
    Case("dataset-bad-hub-id", run("dataset='owner/na me'"), "dataset"),
    Case(
        "trigger-image-decompression-bomb",
        run_with(lambda tmp: ["attack=blend", "num-malicious=1", f"trigger-image={bomb_png(tmp / 'bomb.png')}"]),
        "trigger-image",
    ),
    Case(
        "trigger-image-over-size-limit",
        run_with(lambda tmp: ["attack=blend", "num-malicious=1", f"trigger-image={bomb_png(tmp / 'big.png', 5000)}"]),
        "trigger-image",
    ),
    Case(
        "trigger-image-missing",
        run_with(lambda tmp: ["attack=blend", "num-malicious=1", f"trigger-image={tmp / 'none.png'}"]),
        "trigger-image",
    ),
    Case(
        "trigger-image-folder",
        run_with(lambda tmp: ["attack=blend", "num-malicious=1", f"trigger-image={tmp}"]),
        "trigger-image",
    ),
    Case(
        "trigger-image-not-an-image",
        run_with(lambda tmp: ["attack=blend", "num-malicious=1", f"trigger-image={a_file('t.png')(tmp)}"]),
        "trigger-image",
    ),
    Case("unknown-setting", run("learning_rate=0.1"), "learning_rate"),
    Case("not-key-value", run("num-rounds"), "num-rounds"),
    # options of fl-poison run
    Case("cpus-nan", run("--cpus-per-client", "nan"), "--cpus-per-client"),
    Case("cpus-inf", run("--cpus-per-client", "inf"), "--cpus-per-client"),
    Case("cpus-zero", run("--cpus-per-client", "0"), "--cpus-per-client"),
    Case("cpus-negative", run("--cpus-per-client=-2"), "--cpus-per-client"),
    Case("cpus-above-cores", run("--cpus-per-client", "100000"), "--cpus-per-client"),
    Case("gpus-nan", run("--gpus-per-client", "nan"), "--gpus-per-client"),
    Case("gpus-inf", run("--gpus-per-client", "inf"), "--gpus-per-client"),
    Case("gpus-negative", run("--gpus-per-client=-0.5"), "--gpus-per-client"),
    Case("gpus-above-one", run("--gpus-per-client", "2"), "--gpus-per-client"),
    # local datasets made in tmp_path
    Case("labels-negative", local_dataset(lambda root: saved_dataset(root, [-1] + [0, 1] * 6)), "label-column"),
    Case("labels-huge", local_dataset(lambda root: saved_dataset(root, [10**12] + [0, 1] * 6)), "label-column"),
    Case("labels-float", local_dataset(lambda root: saved_dataset(root, [0.5, 1.0] * 6)), "label-column"),
    Case("labels-text", local_dataset(lambda root: saved_dataset(root, ["cat", "dog"] * 6)), "label-column"),
    Case("labels-missing", local_dataset(lambda root: saved_dataset(root, [None] + [0, 1] * 6)), "label-column"),
    Case("labels-of-test-beyond-train-classes", local_dataset(labels_beyond_train_classes), "label-column"),
    Case(
        "label-column-absent",
        local_dataset(lambda root: saved_dataset(root, [0, 1] * 6), "label-column=target"),
        "label-column",
    ),
    Case(
        "image-column-absent",
        local_dataset(lambda root: saved_dataset(root, [0, 1] * 6), "image-column=pixels"),
        "image-column",
    ),
    Case("images-of-mixed-sizes", local_dataset(mixed_sizes), "dataset"),
    Case("images-of-mixed-modes", local_dataset(mixed_modes), "dataset"),
    Case(
        "arrays-of-mixed-sizes",
        local_dataset(
            lambda root: saved_dataset(root, [0, 1] * 3, [np.zeros((8, 8)).tolist()] * 5 + [np.zeros((9, 9)).tolist()])
        ),
        "dataset",
    ),
    Case("loading-script", local_dataset(lambda root: with_script(root, "data.py")), "dataset"),
    Case("loading-script-nested", local_dataset(lambda root: with_script(root, "train/0/helper.py")), "dataset"),
    Case("dataset-image-decompression-bomb", local_dataset(with_bomb), "dataset"),
    Case("dataset-image-over-size-limit", local_dataset(oversized), "dataset"),
    Case(
        "images-too-small-for-the-model",
        local_dataset(lambda root: image_folder(root, size=1), "model=small-cnn"),
        "model",
    ),
    Case("corrupt-saved-dataset", local_dataset(corrupt_saved), "dataset"),
    Case(
        "more-clients-than-rows",
        local_dataset(lambda root: image_folder(root, count=6), "num-clients=10"),
        "num-clients",
    ),
    Case(
        "target-class-beyond-local-classes",
        local_dataset(lambda root: image_folder(root), "attack=badnets", "num-malicious=1", "target-class=7"),
        "target-class",
    ),
    # node configs (the join check of the ClientApp's query)
    Case(
        "node-target-class",
        node({"partition-id": 0, "num-partitions": 10, "malicious": True, "attack": "badnets", "target-class": 50}),
        "target-class",
    ),
    Case(
        "node-source-class",
        node({"partition-id": 0, "num-partitions": 10, "malicious": True, "attack": "label-flip", "source-class": 10}),
        "source-class",
    ),
    Case(
        "node-poison-rate",
        node({"partition-id": 0, "num-partitions": 10, "attack": "badnets", "poison-rate": 5}),
        "poison-rate",
    ),
    Case(
        "node-trigger-bomb",
        lambda tmp: node(
            {"partition-id": 0, "num-partitions": 10, "attack": "blend", "trigger-image": str(bomb_png(tmp / "b.png"))}
        )(tmp),
        "trigger-image",
    ),
    Case(
        "node-model-poisoning-update-attack",
        node({"partition-id": 0, "num-partitions": 10, "malicious": True, "update-attack": "alie"}),
        "update-attack",
    ),
    Case("node-unknown-key", node({"partition-id": 0, "num-partitions": 10, "learning-rate": 9}), "learning-rate"),
    Case("node-unknown-attack", node({"partition-id": 0, "num-partitions": 10, "attack": "nope"}), "attack"),
    Case("node-malicious-not-bool", node({"partition-id": 0, "num-partitions": 10, "malicious": "maybe"}), "malicious"),
    Case("node-partition-id-text", node({"partition-id": "x", "num-partitions": 10}), "partition-id"),
    Case("node-partition-id-negative", node({"partition-id": -1, "num-partitions": 10}), "partition-id"),
    Case("node-partition-id-too-large", node({"partition-id": 10, "num-partitions": 10}), "partition-id"),
    Case("node-partition-id-beyond-num-clients", node({"partition-id": 12, "data-path": "missing"}), "partition-id"),
    Case("node-num-partitions-mismatch", node({"partition-id": 0, "num-partitions": 9}), "num-clients"),
    Case("node-num-partitions-missing", node({"partition-id": 0}), "num-partitions"),
    Case("node-data-path-missing", node({"partition-id": 0, "data-path": "nowhere"}), "data-path"),
    Case("node-data-path-file", node_with_data(lambda root: a_file(root.name)(root.parent)), "data-path"),
    Case("node-data-path-wrong-image-size", node_with_data(lambda root: image_folder(root, size=28)), "data-path"),
    Case("node-data-path-colour-images", node_with_data(lambda root: image_folder(root, mode="RGB")), "data-path"),
    Case(
        "node-data-path-label-beyond-classes",
        node_with_data(lambda root: image_folder(root, labels=(3, 12))),
        "data-path",
    ),
    Case("node-data-path-script", node_with_data(lambda root: with_script(root, "loader.py")), "data-path"),
    Case("node-data-path-mixed-sizes", node_with_data(mixed_sizes), "data-path"),
    Case("node-data-path-bomb", node_with_data(with_bomb), "data-path"),
    Case(
        "node-data-path-target-class",
        node_with_data(image_folder, malicious=True, attack="badnets", **{"target-class": 10}),
        "target-class",
    ),
    Case(
        "query-target-class",
        through_query({"partition-id": 0, "num-partitions": 10, "attack": "badnets", "target-class": 50}),
        "target-class",
    ),
    Case(
        "query-own-data-against-server-classes",
        through_query({"partition-id": 0, "data-path": "site"}, {"num-classes": 3, "input-shape": "1,8,8"}),
        "data-path",
    ),
    # sweep files
    Case("sweep-base-not-a-table", sweep_file("base = 3\n[grid]\nseed = [1]\n"), "base"),
    Case("sweep-grid-not-a-table", sweep_file("grid = 3\n"), "grid"),
    Case("sweep-grid-empty", sweep_file("[base]\nseed = 1\n"), "grid"),
    Case("sweep-grid-value-not-a-list", sweep_file("[grid]\nseed = 1\n"), "seed"),
    Case("sweep-unknown-setting", sweep_file("[grid]\nlearning_rate = [0.1]\n"), "learning_rate"),
    Case("sweep-unknown-table", sweep_file("[grids]\nseed = [1]\n"), "grids"),
    Case("sweep-not-toml", sweep_file("[grid\nseed = [1]\n"), "sweep file"),
    Case("sweep-grid-name-traversal", sweep_file('[grid."../../x"]\nseed = [1, 2]\n'), "grid"),
    Case("sweep-bad-value-in-grid", sweep_file("[grid]\nlearning-rate = [0.1, 1e300]\n"), "learning-rate"),
    Case("sweep-bad-run-name-in-base", sweep_file("[base]\nrun-name = '../x'\n[grid]\nseed = [1]\n"), "run-name"),
    Case(
        "sweep-file-missing", lambda tmp: ["sweep", str(tmp / "none.toml"), "--out", str(tmp / "sweep")], "sweep file"
    ),
    Case("sweep-out-is-a-file", sweep_out(a_file()), "--out"),
    Case("sweep-out-under-a-file", sweep_out(lambda tmp: a_file()(tmp) / "below"), "--out"),
    Case("sweep-jobs-zero", sweep_out(lambda tmp: tmp / "sweep", "--jobs", "0"), "--jobs"),
    Case("sweep-gpus-nan", sweep_out(lambda tmp: tmp / "sweep", "--gpus-per-client", "nan"), "--gpus-per-client"),
    Case("sweep-set-unknown", sweep_out(lambda tmp: tmp / "sweep", "--set", "colour=red"), "colour"),
    Case("sweep-set-varied-setting", sweep_out(lambda tmp: tmp / "sweep", "--set", "seed=3"), "seed"),
    Case("sweep-out-holds-another-sweep", other_sweep, "--out"),
    Case(
        "sweep-reuse-not-a-sweep-folder",
        lambda tmp: sweep_out(lambda t: t / "sweep", "--reuse", str(tmp))(tmp),
        "--reuse",
    ),
    Case(
        "sweep-reuse-its-own-folder",
        lambda tmp: sweep_out(lambda t: t / "sweep", "--reuse", str(tmp / "sweep"))(tmp),
        "--reuse",
    ),
    # sweep folders edited by hand: resumed by fl-poison sweep
    Case("resume-table-without-cell-id", resumed_with_table(lambda text: text.replace("cell_id", "cell")), "cell_id"),
    Case("resume-table-without-status", resumed_with_table(lambda text: text.replace(",status", ",state")), "status"),
    Case(
        "resume-cell-id-traversal", resumed_with_table(lambda text: text.replace("0123abcd", "../../../x")), "cell_id"
    ),
    Case("resume-cell-id-not-hex", resumed_with_table(lambda text: text.replace("0123abcd", "cellnine")), "cell_id"),
    # sweep folders edited by hand: fl-poison plot / report
    Case("plot-table-without-cell-id", sweep_folder(drop_column("cell_id")), "cell_id"),
    Case("plot-cell-id-traversal", sweep_folder(replace_in("sweep.csv", f"{CLIP_CELL},", "../../../x,")), "cell_id"),
    Case(
        "report-cell-id-traversal",
        sweep_folder(replace_in("sweep.csv", f"{CLIP_CELL},", "../../../x,"), "report"),
        "cell_id",
    ),
    Case("plot-cell-id-absolute", sweep_folder(replace_in("sweep.csv", f"{CLIP_CELL},", "/tmp/x,")), "cell_id"),
    Case("plot-cell-id-empty", sweep_folder(replace_in("sweep.csv", f"{CLIP_CELL},", ",")), "cell_id"),
    Case("plot-round-not-a-number", sweep_folder(replace_in(f"{OK_CELL}/rounds.csv", "\n1,", "\none,")), "rounds.csv"),
    Case(
        "report-round-not-a-number",
        sweep_folder(replace_in(f"{OK_CELL}/rounds.csv", "\n1,", "\none,"), "report"),
        "rounds.csv",
    ),
    Case("plot-round-negative", sweep_folder(replace_in(f"{OK_CELL}/rounds.csv", "\n1,", "\n-1,")), "rounds.csv"),
    Case(
        "plot-accuracy-not-a-number",
        sweep_folder(
            replace_in(f"{OK_CELL}/rounds.csv", "round,accuracy,loss,asr\n1,", "round,accuracy,loss,asr\n1,high")
        ),
        "rounds.csv",
    ),
    Case(
        "plot-clients-round-not-a-number", sweep_folder(set_first_round(f"{CLIP_CELL}/clients.csv", "x")), "clients.csv"
    ),
    Case("plot-grid-name-traversal", sweep_folder(replace_in("sweep.json", '"clip"', '"../../clip"')), "sweep.json"),
    Case("plot-definition-not-json", sweep_folder(write_to("sweep.json", "{")), "sweep.json"),
    Case("plot-definition-a-list", sweep_folder(write_to("sweep.json", "[]")), "sweep.json"),
    Case(
        "plot-definition-not-utf8",
        sweep_folder(lambda folder: (folder / "sweep.json").write_bytes(b"\xff\xfe{")),
        "sweep.json",
    ),
    Case("plot-folder-is-a-link", sweep_folder(plots_link), "plots"),
    Case("plot-cells-folder-is-a-link", sweep_folder(cells_link), "cells"),
    Case("plot-plots-is-a-file", sweep_folder(write_to("plots", "not a folder")), "plots"),
    Case("plot-no-table", sweep_folder(lambda folder: (folder / "sweep.csv").unlink()), "sweep.csv"),
    Case("plot-missing-folder", lambda tmp: ["plot", str(tmp / "none")], "none"),
    # existing results are never overwritten
    Case("run-name-of-an-earlier-run", existing_run("folder"), "run-name"),
    Case("run-name-of-an-empty-folder", existing_run("empty"), "run-name"),
    Case("run-name-of-a-file", existing_run("file"), "run-name"),
    Case("run-name-of-a-link", existing_run("link"), "run-name"),
    Case("server-result-folder-exists", server_folder_exists, "run-name"),
    Case("server-model-poisoning-on-real-supernodes", server_on_real_supernodes, "update-attack"),
    Case("clear-run-with-foreign-file", unfinished_with_foreign_file, "run-name"),
    Case("clear-finished-run", finished_run, "run-name"),
    # deploy helpers (exit status 1: their own convention)
    Case(
        "deploy-keys-zero-nodes",
        lambda tmp: ["deploy", "keys", "--out", str(tmp / "keys"), "--nodes", "0"],
        "--nodes",
        1,
    ),
    Case(
        "deploy-trial-model-poisoning",
        lambda tmp: [
            "deploy",
            "trial",
            "--nodes",
            "3",
            "--folder",
            str(tmp / "trial"),
            "--malicious",
            "1",
            "--malicious-config",
            "update-attack='alie'",
        ],
        "update-attack",
        1,
    ),
    Case(
        "deploy-digits-partition-out-of-range",
        lambda tmp: [
            "deploy",
            "digits-folder",
            "--out",
            str(tmp / "d"),
            "--partition-id",
            "5",
            "--num-partitions",
            "2",
        ],
        "--partition-id",
        1,
    ),
]


# ---------------------------------------------------------------------------- the tests


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower must never start; the datasets cache lives outside ``tmp_path``; no GPU is visible."""

    def must_not_start(*args: object, **kwargs: object) -> None:
        pytest.fail("bad input reached Flower")

    monkeypatch.setattr(launch, "follow", must_not_start)
    monkeypatch.setattr(launch.subprocess, "Popen", must_not_start)
    monkeypatch.setattr(launch.subprocess, "run", must_not_start)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_cache"))


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the hash of its bytes (``dir`` for folders, the target for links)."""
    entries: dict[str, str] = {}
    for folder, folders, files in os.walk(root, followlinks=False):
        for name in folders + files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                entries[relative] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                entries[relative] = "dir"
            else:
                entries[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def test_there_are_at_least_80_bad_inputs():
    assert len(CASES) >= 80
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_fails_in_one_line_and_writes_nothing(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], server_task_identity: None
):
    action = case.build(tmp_path)
    capsys.readouterr()
    before = snapshot(tmp_path)
    if callable(action):
        with pytest.raises(ConfigError) as caught:
            action()
        lines = str(caught.value).splitlines()
        assert not capsys.readouterr().out
    else:
        code = main(action)
        captured = capsys.readouterr()
        assert code == case.code, captured.err
        assert captured.out == ""
        lines = captured.err.strip().splitlines()
        assert lines and lines[0].startswith("fl-poison: error: ")
    assert len(lines) == 1, lines
    assert case.names in lines[0], lines[0]
    assert "Traceback" not in lines[0]
    assert snapshot(tmp_path) == before


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch):
    """Only bad input is turned into one line: an unexpected exception still propagates."""

    def buggy(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr("fl_poison.cli.run_experiment", buggy)
    with pytest.raises(KeyError):
        main(["run"])


def test_an_os_error_without_a_file_name_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch):
    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionResetError("the socket went away")

    monkeypatch.setattr("fl_poison.cli.run_experiment", broken)
    with pytest.raises(ConnectionResetError):
        main(["run"])


def test_an_os_error_about_a_file_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
):
    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "plots"))

    monkeypatch.setattr("experiments.sweep_plots.plot_sweep", refused)
    assert main(["plot", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"fl-poison: error: {tmp_path / 'plots'}: Permission denied"


def test_good_inputs_pass_the_same_checks(tmp_path: Path):
    """The checks refuse only what is wrong: a good node, folder and run pass them."""
    from fl_poison.apps.algorithms import experiment_config
    from fl_poison.apps.data_checks import check_run_against_data

    identity, config = check_node(
        RUN_CONFIG, {"partition-id": 3, "num-partitions": 10, "attack": "badnets", "target-class": 9}
    )
    assert identity.partition_id == 3 and config.num_clients == 10
    site = image_folder(tmp_path / "site", labels=(3, 7))
    identity, _ = check_node(RUN_CONFIG, {"partition-id": 0, "data-path": str(site)})
    assert identity.has_own_data
    info = check_run_against_data(
        experiment_config({"dataset": str(image_folder(tmp_path / "data")), "num-clients": 2})
    )
    assert info.input_shape == (1, 8, 8) and info.num_classes == 4
    assert experiment_config({"seed": 2**63 - 1, "learning-rate": 1000, "run-name": "Run_1.a-b"}).seed == 2**63 - 1
    folder = create_result_folder(tmp_path / "out" / "new")
    assert folder.path.is_dir() and not any(folder.path.iterdir())


def test_a_failed_run_folder_is_cleared_without_touching_others(tmp_path: Path):
    cell = tmp_path / "0123abcd"
    cell.mkdir()
    (cell / "cell.log").write_text("status: failed\n")
    (cell / ".rounds.csv.x.tmp").write_text("half")
    neighbour = tmp_path / "other.txt"
    neighbour.write_text("kept")
    remove_unfinished_run(cell)
    assert not cell.exists() and neighbour.read_text() == "kept"


def test_a_finished_run_folder_recorded_as_failed_is_cleared_with_every_file_a_run_writes(tmp_path: Path):
    """A run that wrote its summary and timings and then failed its status check is rerun from scratch."""
    cell = tmp_path / "0123abcd"
    cell.mkdir()
    written = ["config.json", "rounds.csv", "clients.csv", "timings.json", "summary.json", "flower.log", "cell.log"]
    for name in written:
        (cell / name).write_text("{}")
    remove_unfinished_run(cell, finished_too=True)
    assert not cell.exists()


def test_sweep_reruns_a_failed_cell_in_a_fresh_folder(tmp_path: Path):
    """A failed cell's folder (the sweep's own) is cleared before the rerun: no stale file survives."""
    from experiments.sweep import run_sweep

    sweep = tmp_path / "sweep.toml"
    sweep.write_text(GOOD_SWEEP)
    calls: list[Path] = []

    def runner(settings: dict[str, object], cpus: float, gpus: float, verbose: bool) -> Path:
        folder = Path(str(settings["output-dir"])) / str(settings["run-name"])
        folder.mkdir()  # as the ServerApp does: never into an existing folder
        calls.append(folder)
        if len(calls) <= 2:
            (folder / "rounds.csv").write_text("round\n0\n")
            raise RuntimeError("boom")
        (folder / "summary.json").write_text('{"accuracy": 0.9}')
        return folder

    quiet: Callable[[str], None] = lambda line: None  # noqa: E731
    first = run_sweep(sweep, tmp_path / "out", runner=runner, progress=quiet)
    assert {row["status"] for row in first.rows.values()} == {"failed"}
    second = run_sweep(sweep, tmp_path / "out", runner=runner, progress=quiet)
    assert {row["status"] for row in second.rows.values()} == {"ok"}
    for folder in calls[2:]:
        assert sorted(path.name for path in folder.iterdir()) == ["cell.log", "summary.json"]


def test_no_flower_start_for_a_run_folder_taken_between_check_and_start(tmp_path: Path):
    """The ServerApp's creation refuses a folder that appeared after fl-poison run checked it."""
    folder = tmp_path / "late"
    create_result_folder(folder)
    with pytest.raises(ConfigError, match="run-name"):
        create_result_folder(folder)


def test_plot_writes_only_inside_the_sweep_folder(tmp_path: Path):
    """A good hand-made sweep folder is drawn, and nothing appears beside it."""
    folder = build_sweep_folder(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["plot", str(folder)]) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sweep"]
    assert (folder / "plots" / "cells" / f"{main_cell_id(*FAILED)}.png").exists() is False
