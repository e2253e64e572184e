"""The node-local cache of decoded data (``fl_poison.core.data_cache``) behind ``fl_poison.core.data``.

Every test points ``FL_POISON_CACHE_DIR`` at its own folder and forgets the in-process
memoisation, so that each call below really goes to the disk cache (or to the source).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from fl_poison.apps.algorithms import experiment_config
from fl_poison.core import data as data_module
from fl_poison.core import data_cache
from fl_poison.core.data import (
    DatasetInfo,
    DataSpec,
    LabeledTensors,
    all_partition_indices,
    client_data,
    dataset_facts,
    dataset_info,
    node_data,
)
from fl_poison.core.data import test_data as held_out_data  # not named test_*: pytest would collect it
from fl_poison.core.settings import ConfigError

MEMOISED = (client_data, held_out_data, all_partition_indices, dataset_facts, node_data)
ROOT = Path(__file__).resolve().parents[1]


def spec_of(**settings) -> DataSpec:
    return DataSpec.from_config(experiment_config({"num-clients": 5, **settings}))


def forget_memo() -> None:
    """Forget what this process memoised, so that the next calls read the disk cache (or the source)."""
    for function in MEMOISED:
        function.cache_clear()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(data_cache.CACHE_DIR_VARIABLE, str(folder))
    forget_memo()
    yield folder
    forget_memo()


@pytest.fixture(autouse=True)
def private_hf_cache(tmp_path_factory, monkeypatch):
    """Keep the datasets cache that load_dataset writes for local folders out of ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf_cache"))


def everything(spec: DataSpec) -> tuple[list[LabeledTensors], LabeledTensors, tuple, object]:
    """Every client's tensors, the test set, the partition indices and the dataset info of ``spec``."""
    clients = [client_data(spec, pid) for pid in range(spec.num_partitions)]
    return clients, held_out_data(spec), all_partition_indices(spec), dataset_info(spec)


def uncached(spec: DataSpec, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """:func:`everything` with the cache off, copied; the environment is restored afterwards."""
    with monkeypatch.context() as patch:
        patch.setenv(data_cache.CACHE_DIR_VARIABLE, "off")
        forget_memo()
        clients, test, partitions, info = everything(spec)
        copies = [LabeledTensors(part.x.clone(), part.y.clone()) for part in clients]
        result = copies, LabeledTensors(test.x.clone(), test.y.clone()), partitions, info
    forget_memo()
    return result


def assert_same(first: LabeledTensors, second: LabeledTensors) -> None:
    assert first.x.dtype == second.x.dtype == torch.float32
    assert first.y.dtype == second.y.dtype == torch.int64
    assert torch.equal(first.x, second.x)
    assert torch.equal(first.y, second.y)


def forbid_source(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make reading the source fail: what follows must come from the disk cache."""

    def no_source(spec):
        raise AssertionError("the source was read although the data is cached")

    monkeypatch.setattr(data_module, "source_of", no_source)


def check_round_trip(spec: DataSpec, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference_clients, reference_test, reference_partitions, reference_info = uncached(spec, monkeypatch)
    assert not cache_dir.exists()
    fresh = everything(spec)  # decoded and stored
    assert any(cache_dir.rglob("client-0.x.npy"))
    forget_memo()
    with monkeypatch.context() as patch:
        forbid_source(patch)
        cached = everything(spec)
    for clients, test, partitions, info in (fresh, cached):
        for reference, part in zip(reference_clients, clients, strict=True):
            assert_same(reference, part)
        assert_same(reference_test, test)
        assert partitions == reference_partitions
        assert info == reference_info


def test_digits_round_trip_equals_the_uncached_tensors(cache_dir, monkeypatch):
    check_round_trip(spec_of(partitioning="dirichlet", seed=3), cache_dir, monkeypatch)


def png_folder(folder: Path, rows: int = 30, seed: int = 0) -> Path:
    """An imagefolder tree ``train/<class>/<i>.png`` and ``test/<class>/<i>.png`` of random 12x12 RGB images."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", rows), ("test", rows // 3)):
        for i in range(count):
            target = folder / split / f"class{i % 3}"
            target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8), mode="RGB").save(
                target / f"{i}.png"
            )
    return folder


def test_local_image_folder_round_trip_equals_the_uncached_tensors(cache_dir, monkeypatch, tmp_path):
    folder = png_folder(tmp_path / "images")
    spec = spec_of(dataset=str(folder), **{"num-clients": 3})
    check_round_trip(spec, cache_dir, monkeypatch)
    assert dataset_info(spec).input_shape == (3, 12, 12)


def test_a_node_folder_round_trip_keeps_integer_class_names(cache_dir, monkeypatch, tmp_path):
    rng = np.random.default_rng(4)
    folder = tmp_path / "site3"
    for i in range(8):
        target = folder / "train" / ("3" if i % 2 else "7")
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, size=(8, 8), dtype=np.uint8), mode="L").save(target / f"{i}.png")
    info = DatasetInfo(num_classes=10, input_shape=(1, 8, 8))
    with monkeypatch.context() as patch:
        patch.setenv(data_cache.CACHE_DIR_VARIABLE, "off")
        reference = node_data(str(folder), "auto", "label", info)
        reference = LabeledTensors(reference.x.clone(), reference.y.clone())
    node_data.cache_clear()
    assert sorted(set(reference.y.tolist())) == [3, 7]
    assert_same(reference, node_data(str(folder), "auto", "label", info))  # decoded and stored
    node_data.cache_clear()
    with monkeypatch.context() as patch:
        patch.setattr(data_module, "load_node_folder", lambda *args: pytest.fail("the folder was read again"))
        assert_same(reference, node_data(str(folder), "auto", "label", info))
        node_data.cache_clear()
        with pytest.raises(ConfigError, match="data-path: images of .* are shaped"):  # checks run on cached data too
            node_data(str(folder), "auto", "label", DatasetInfo(num_classes=10, input_shape=(3, 8, 8)))
    node_data.cache_clear()


def test_cached_tensors_are_read_only_memory_maps_of_the_files(cache_dir):
    spec = spec_of()
    client_data(spec, 1)
    forget_memo()
    data = client_data(spec, 1)
    entry = data_module.spec_cache_entry(spec)
    assert entry is not None
    arrays = entry.load("client-1", ("x", "y"))
    assert arrays is not None
    assert all(isinstance(array, np.memmap) and not array.flags.writeable for array in arrays)
    assert torch.equal(data.x, torch.from_numpy(np.array(arrays[0])))


PROBE = textwrap.dedent(
    """
    import json, sys
    import fl_poison.apps.client_app
    from fl_poison.core.data import DataSpec, all_partition_indices, client_data, dataset_info, test_data
    imported = sorted(name for name in ("datasets", "flwr_datasets", "sklearn", "seaborn") if name in sys.modules)
    spec = DataSpec(**json.loads(sys.argv[1]))
    data = client_data(spec, 2)
    test = test_data(spec)
    info = dataset_info(spec)
    from fl_poison.apps.algorithms import experiment_config
    experiment_config({"num-clients": 5})  # every message parses the run config: attack and defense registries
    after = sorted(name for name in ("datasets", "flwr_datasets", "sklearn", "seaborn") if name in sys.modules)
    print(json.dumps({
        "on_import": imported,
        "after_loading": after,
        "x_sum": float(data.x.double().sum()), "y": data.y.tolist(),
        "test_sum": float(test.x.double().sum()), "rows": list(all_partition_indices(spec)[2]),
        "info": [info.num_classes, list(info.input_shape)],
    }))
    """
)


def run_probe(spec: DataSpec, cache_dir: Path) -> dict:
    env = {**os.environ, data_cache.CACHE_DIR_VARIABLE: str(cache_dir)}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(dataclasses.asdict(spec))],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_second_process_reads_its_partition_without_datasets_or_flwr_datasets(cache_dir):
    spec = spec_of(seed=5)
    data, test, info = client_data(spec, 2), held_out_data(spec), dataset_info(spec)
    found = run_probe(spec, cache_dir)
    assert found["on_import"] == []
    assert found["after_loading"] == []
    assert found["x_sum"] == float(data.x.double().sum())
    assert found["y"] == data.y.tolist()
    assert found["test_sum"] == float(test.x.double().sum())
    assert found["rows"] == list(all_partition_indices(spec)[2])
    assert found["info"] == [info.num_classes, list(info.input_shape)]


def test_a_corrupted_or_half_written_entry_is_rebuilt(cache_dir, monkeypatch, caplog):
    spec = spec_of()
    reference = LabeledTensors(client_data(spec, 0).x.clone(), client_data(spec, 0).y.clone())
    partitions = all_partition_indices(spec)
    entry = data_module.spec_cache_entry(spec)
    assert entry is not None
    entry.path("client-0", "x").write_bytes(b"\x93NUMPY garbage")  # a corrupt header
    entry.path("client-0", "y").write_bytes(entry.path("client-0", "y").read_bytes()[:-8])  # truncated
    entry.path("partitions", "rows").write_bytes(b"")  # empty
    (entry.folder / ".client-0.x.abc.tmp").write_bytes(b"half")  # an interrupted write leaves this behind
    forget_memo()
    with caplog.at_level(logging.WARNING, logger=data_cache.__name__):
        assert_same(reference, client_data(spec, 0))
        assert all_partition_indices(spec) == partitions
    assert "unreadable" in caplog.text
    forget_memo()
    with monkeypatch.context() as patch:  # rebuilt: read from the cache again
        forbid_source(patch)
        assert_same(reference, client_data(spec, 0))
        assert all_partition_indices(spec) == partitions


def test_a_malformed_but_readable_file_is_rebuilt(cache_dir):
    spec = spec_of()
    reference = LabeledTensors(client_data(spec, 0).x.clone(), client_data(spec, 0).y.clone())
    entry = data_module.spec_cache_entry(spec)
    assert entry is not None
    np.save(entry.path("client-0", "y"), np.zeros(3, dtype=np.int64))  # wrong length
    forget_memo()
    assert_same(reference, client_data(spec, 0))
    assert len(np.load(entry.path("client-0", "y"))) == len(reference)


@pytest.mark.parametrize(
    "change",
    [{"seed": 43}, {"partitioning": "dirichlet"}, {"num-clients": 6}, {"test-fraction": 0.3}, {"dirichlet-alpha": 0.4}],
)
def test_a_changed_setting_gives_another_key(change):
    before = data_cache.entry_key(dataclasses.asdict(spec_of()))
    assert data_cache.entry_key(dataclasses.asdict(spec_of())) == before
    assert data_cache.entry_key(dataclasses.asdict(spec_of(**change))) != before


def test_a_changed_local_folder_gives_another_key(tmp_path):
    folder = png_folder(tmp_path / "images", rows=6)
    settings = dataclasses.asdict(spec_of(dataset=str(folder), **{"num-clients": 2}))
    keys = [data_cache.entry_key(settings)]
    image = folder / "train" / "class0" / "0.png"
    image.write_bytes(image.read_bytes() + b"\0")  # resized
    keys.append(data_cache.entry_key(settings))
    os.utime(image, ns=(1, 1))  # rewritten at another time
    keys.append(data_cache.entry_key(settings))
    (folder / "train" / "class1" / "extra.png").write_bytes(image.read_bytes())  # added
    keys.append(data_cache.entry_key(settings))
    (folder / ".hidden-note").write_text("not data")  # hidden entries do not count
    keys.append(data_cache.entry_key(settings))
    assert len(set(keys)) == 4 and keys[-1] == keys[-2]


@pytest.mark.parametrize("value", ["off", "OFF", "", "  "])
def test_off_or_empty_turns_the_cache_off(value, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(data_cache.CACHE_DIR_VARIABLE, value)
    forget_memo()
    assert data_cache.cache_root() is None
    assert data_module.spec_cache_entry(spec_of()) is None
    data = client_data(spec_of(), 0)
    assert len(data) > 0 and data.x.numpy().flags.writeable
    assert not (tmp_path / "home").exists()
    forget_memo()


def test_the_default_folder_is_in_the_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(data_cache.CACHE_DIR_VARIABLE, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_cache.cache_root() == tmp_path / ".cache" / "fl_poison"


def test_an_unwritable_folder_only_warns_once(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(data_cache.CACHE_DIR_VARIABLE, str(blocker / "cache"))  # unwritable, even for root
    forget_memo()
    reference_clients, reference_test, _, _ = uncached(spec_of(), monkeypatch)
    with caplog.at_level(logging.WARNING, logger=data_cache.__name__):
        assert_same(reference_clients[0], client_data(spec_of(), 0))
        assert_same(reference_test, held_out_data(spec_of()))
        client_data(spec_of(seed=9), 1)
    warnings = [record for record in caplog.records if record.name == data_cache.__name__]
    assert len(warnings) == 1
    assert "not writable" in warnings[0].getMessage() and "\n" not in warnings[0].getMessage()
    forget_memo()


def test_a_failed_write_leaves_no_temporary_file(cache_dir, monkeypatch, caplog):
    entry = data_cache.CacheEntry(cache_dir / "entry")

    def failing_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data_cache.np, "save", failing_save)
    with caplog.at_level(logging.WARNING, logger=data_cache.__name__):
        assert not data_cache.store_labeled_arrays(
            entry, "test", np.zeros((1, 1, 2, 2), np.float32), np.zeros(1, np.int64)
        )
    assert "No space left" in caplog.text
    assert list(entry.folder.iterdir()) == []


def test_flwr_datasets_plotting_is_deferred_but_still_works():
    probe = textwrap.dedent(
        """
        import sys
        import matplotlib
        matplotlib.use("Agg")
        from fl_poison.apps.algorithms import experiment_config
        from fl_poison.core.data import DataSpec, partitioner_of, source_of
        from fl_poison.core.partitioning import assign_training_split
        spec = DataSpec.from_config(experiment_config({"num-clients": 4, "partitioning": "dirichlet"}))
        partitioner = partitioner_of(spec)
        import flwr_datasets
        assert "flwr_datasets.partitioner" in sys.modules
        from fl_poison.core.lazy_imports import DeferredModule
        assert isinstance(flwr_datasets.visualization, DeferredModule), "plotting imported eagerly"
        assert "seaborn" not in sys.modules
        assign_training_split(partitioner, source_of(spec).train, spec.seed)
        figure, axes, frame = flwr_datasets.visualization.plot_label_distributions(partitioner, label_name="label")
        from flwr_datasets.visualization import plot_comparison_label_distribution
        assert callable(plot_comparison_label_distribution) and "seaborn" in sys.modules
        assert frame.shape == (4, 10) and int(frame.to_numpy().sum()) == len(source_of(spec).train)
        print("ok")
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.strip().splitlines()[-1] == "ok"


def test_every_attack_leaves_cached_read_only_data_alone(cache_dir):
    """A write into a read-only memory map kills the process: run every attack on cached data in a child."""
    spec = spec_of()
    client_data(spec, 1), held_out_data(spec), dataset_info(spec)
    probe = textwrap.dedent(
        """
        import json, sys
        import numpy as np
        import torch
        from clients.base import TrainingJob
        from clients.registry import behaviour_for, evaluation_for, registered_attacks
        from fl_poison.apps.algorithms import experiment_config
        from fl_poison.core.catalogue import UPDATE_ATTACK_KINDS
        from fl_poison.core.data import DataSpec, client_data, dataset_info, test_data
        from fl_poison.core.models import build_model, resolve_model_name
        from fl_poison.core.training import LocalTraining

        spec = DataSpec(**json.loads(sys.argv[1]))
        info = dataset_info(spec)
        data, test = client_data(spec, 1), test_data(spec)
        before = (data.x.clone(), data.y.clone(), test.x.clone(), test.y.clone())
        for attack in registered_attacks():
            key = "update-attack" if attack.kind in UPDATE_ATTACK_KINDS else "attack"
            config = experiment_config({"num-clients": 5, "malicious-ids": "1", key: attack.name, "local-epochs": 1})
            model = build_model(resolve_model_name(config.model, config.dataset), info.input_shape, info.num_classes)
            job = TrainingJob(model=model, data=data, training=LocalTraining(1, 16, 0.05), device=torch.device("cpu"),
                              seed=1, server_round=2, partition_id=1)
            behaviour_for(config, 1, 2, info).run(job)
            predictions = np.zeros(len(test), dtype=np.int64)
            evaluation_for(config, test, info.num_classes).metrics(model, predictions, torch.device("cpu"), 64, 2)
        after = (data.x, data.y, test.x, test.y)
        assert all(torch.equal(first, second) for first, second in zip(before, after))
        print("ok", len(registered_attacks()))
        """
    )
    env = {**os.environ, data_cache.CACHE_DIR_VARIABLE: str(cache_dir)}
    completed = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(dataclasses.asdict(spec))],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, f"exit {completed.returncode}: {completed.stderr[-3000:]}"
    assert completed.stdout.split()[0] == "ok"


def test_images_are_checked_once_per_version_of_a_local_folder(cache_dir, monkeypatch, tmp_path):
    from fl_poison.core.data import check_data

    folder = png_folder(tmp_path / "images")
    spec = spec_of(dataset=str(folder), **{"num-clients": 3})
    checked: list[str] = []
    real_check = data_module.check_images
    monkeypatch.setattr(data_module, "check_images", lambda s: checked.append(s.dataset) or real_check(s))
    check_data(spec)
    forget_memo()
    check_data(spec)  # the verdict is in the cache: the headers are not read again
    assert checked == [str(folder)]
    # a changed file is another version of the folder: checked again, and a bad image is found
    (folder / "train" / "class0" / "0.png").write_bytes(b"not an image")
    forget_memo()
    data_cache._source_fingerprint_json.cache_clear()  # a process fingerprints a folder once; this is a new one
    data_cache._entry.cache_clear()
    data_module._source.cache_clear()
    with pytest.raises(ConfigError, match=r"^dataset: .*0\.png"):
        check_data(spec_of(dataset=str(folder), **{"num-clients": 3}))
    assert checked == [str(folder), str(folder)]


def test_missing_labels_are_refused_without_reading_row_by_row():
    from fl_poison.core.data_sources import checked_labels

    split = datasets.Dataset.from_dict(
        {"label": [1, None, 0]}, features=datasets.Features({"label": datasets.Value("int64")})
    )
    with pytest.raises(ConfigError, match=r"^label-column: column 'label' of dataset 'x' has missing labels"):
        checked_labels(split, "label", "dataset", "x")
    labelled = datasets.Dataset.from_dict(
        {"label": [2, 0, 1, 2]}, features=datasets.Features({"label": datasets.ClassLabel(num_classes=3)})
    )
    assert checked_labels(labelled.select([3, 1]), "label", "dataset", "x") == 3
    with pytest.raises(ConfigError, match=r"has label 2; allowed: classes 0 \.\. 1"):
        checked_labels(labelled, "label", "dataset", "x", num_classes=2)
