"""What a run records of what produced it (fl_poison/core/provenance.py: source_fingerprint, processor_description)."""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path

import torch

from fl_poison.core.provenance import RUN_PACKAGES, processor_description, source_fingerprint


def make_tree(root: Path) -> None:
    (root / "alpha" / "sub").mkdir(parents=True)
    (root / "beta").mkdir()
    (root / "alpha" / "b.py").write_bytes(b"x = 1\n")
    (root / "alpha" / "sub" / "a.py").write_bytes(b"y = 2\n")
    (root / "beta" / "c.py").write_bytes(b"")
    (root / "alpha" / "notes.txt").write_bytes(b"not code")  # left out: not a .py file
    (root / "gamma").mkdir()
    (root / "gamma" / "d.py").write_bytes(b"z = 3\n")  # left out: not one of the packages


def test_the_hash_by_hand(tmp_path):
    make_tree(tmp_path)
    expected = hashlib.sha256(b"alpha/b.py\0x = 1\n\0" + b"alpha/sub/a.py\0y = 2\n\0" + b"beta/c.py\0\0").hexdigest()[
        :16
    ]
    assert source_fingerprint(tmp_path, ("alpha", "beta")) == {"sha256": expected, "files": 3}


def test_one_changed_byte_or_a_renamed_file_changes_it(tmp_path):
    make_tree(tmp_path)
    before = source_fingerprint(tmp_path, ("alpha", "beta"))["sha256"]
    (tmp_path / "alpha" / "b.py").write_bytes(b"x = 2\n")
    changed = source_fingerprint(tmp_path, ("alpha", "beta"))["sha256"]
    assert changed != before
    (tmp_path / "alpha" / "b.py").rename(tmp_path / "alpha" / "e.py")
    renamed = source_fingerprint(tmp_path, ("alpha", "beta"))["sha256"]
    assert renamed not in (before, changed)
    (tmp_path / "alpha" / "notes.txt").write_bytes(b"edited")  # not code
    (tmp_path / "gamma" / "d.py").write_bytes(b"edited")  # not one of the packages
    assert source_fingerprint(tmp_path, ("alpha", "beta"))["sha256"] == renamed


def test_the_projects_own_code_has_a_stable_fingerprint():
    first = source_fingerprint()
    assert first == source_fingerprint()
    root = Path(__file__).resolve().parents[1]
    assert first["files"] == sum(1 for package in RUN_PACKAGES for _ in (root / package).rglob("*.py"))


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
stepping\t: 8
flags\t\t: fpu avx2 avx512f

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: a second core's name, not read
"""


def test_the_processor_is_read_from_the_first_core_of_the_table(tmp_path):
    table = tmp_path / "cpuinfo"
    table.write_text(CPUINFO)
    capability = str(torch.backends.cpu.get_cpu_capability())
    described = processor_description(table)
    assert described["name"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert described["kind"] == "vendor GenuineIntel, family 6, model 143, stepping 8"
    assert described["torch_capability"] == capability
    assert described["signature"] == f"vendor GenuineIntel, family 6, model 143, stepping 8; {capability}"
    assert described["logical_cpus"] == os.cpu_count()
    assert described["arch"] == platform.machine()


def test_without_a_table_the_kind_is_the_platforms_processor_name(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "processor", lambda: "arm")
    described = processor_description(tmp_path / "missing")
    assert (described["name"], described["kind"]) == ("arm", "arm")
    assert described["signature"] == f"arm; {torch.backends.cpu.get_cpu_capability()}"


def test_another_stepping_is_another_signature(tmp_path):
    table = tmp_path / "cpuinfo"
    table.write_text(CPUINFO)
    before = processor_description(table)["signature"]
    table.write_text(CPUINFO.replace("stepping\t: 8", "stepping\t: 7"))
    assert processor_description(table)["signature"] != before
