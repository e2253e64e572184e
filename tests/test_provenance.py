"""The fingerprint of the code a run executes (fl_poison/core/provenance.py: source_fingerprint)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fl_poison.core.provenance import RUN_PACKAGES, source_fingerprint


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
