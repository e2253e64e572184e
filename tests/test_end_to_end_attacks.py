"""End-to-end runs with attackers and defenses through the real Flower runtime (digits, few rounds)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

import pytest
import torch
from e2e_helpers import fl_poison_run, read_rows

pytestmark = pytest.mark.e2e


def test_badnets_under_krum_records_attackers_and_decisions(warm_env: dict[str, str], tmp_path: Path) -> None:
    completed = fl_poison_run(
        warm_env,
        "strategy=krum",
        "attack=badnets",
        "malicious-ids=3",
        "num-clients=5",
        "num-rounds=2",
        f"output-dir={tmp_path}",
        "run-name=krum",
        "save-model=false",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    clients = read_rows(tmp_path / "krum" / "clients.csv")
    assert len(clients) == 2 * 5
    assert {row["partition_id"] for row in clients if row["malicious"] == "1"} == {"3"}
    assert all(row["attacked"] == row["malicious"] for row in clients)
    for server_round in ("1", "2"):
        decisions = [row["decision"] for row in clients if row["round"] == server_round]
        assert sorted(decisions) == ["accepted"] + ["rejected"] * 4  # Krum keeps exactly one update
    summary = json.loads((tmp_path / "krum" / "summary.json").read_text())
    assert {"asr", "mta", "detection_recall", "detection_fpr"} <= set(summary)
    # Krum rejects and never clips: a rejection is its only way to flag, so both readings agree
    for name in ("precision", "recall", "fpr"):
        assert summary[f"rejection_{name}"] == summary[f"detection_{name}"]
    rounds = read_rows(tmp_path / "krum" / "rounds.csv")
    assert all(0.0 <= float(row["asr"]) <= 1.0 for row in rounds)
    assert (tmp_path / "krum" / "update_norms.png").is_file()


def test_nan_client_is_rejected_and_the_model_stays_finite(warm_env: dict[str, str], tmp_path: Path) -> None:
    completed = fl_poison_run(
        warm_env,
        "attack=nan-weights",
        "malicious-ids=1",
        "num-clients=4",
        "num-rounds=2",
        f"output-dir={tmp_path}",
        "run-name=nan",
        "save-model=true",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    folder = tmp_path / "nan"
    clients = read_rows(folder / "clients.csv")
    attacker_rows = [row for row in clients if row["partition_id"] == "1"]
    assert len(attacker_rows) == 2
    assert all(row["status"] == "rejected" and "non-finite" in row["reason"] for row in attacker_rows)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["detection_recall"] == 1.0 and summary["detection_fpr"] == 0.0
    assert summary["rejection_recall"] == 1.0 and summary["rejection_fpr"] == 0.0  # the screening rejected it
    assert math.isfinite(summary["accuracy"]) and math.isfinite(summary["loss"])

    state = torch.load(folder / "model.pt", weights_only=True)
    assert state, "model.pt holds no tensors"
    not_finite = [name for name, tensor in state.items() if not torch.isfinite(tensor).all()]
    assert not_finite == [], f"non-finite weights in the final model: {not_finite}"

    rounds = read_rows(folder / "rounds.csv")
    assert [row["round"] for row in rounds] == ["0", "1", "2"]
    for row in rounds:
        assert row["accuracy"] != "" and row["loss"] != ""
        not_finite = {column: value for column, value in row.items() if value != "" and not math.isfinite(float(value))}
        assert not_finite == {}, f"round {row['round']}: non-finite values {not_finite}"


def test_an_out_of_range_class_is_refused_before_flower_starts(warm_env: dict[str, str], tmp_path: Path) -> None:
    completed = fl_poison_run(warm_env, "attack=label-flip", "target-class=12", f"output-dir={tmp_path}")
    assert completed.returncode == 2
    assert completed.stderr.strip() == "fl-poison: error: target-class: bad value 12; allowed: 0 .. 9"
    assert list(tmp_path.iterdir()) == []


def test_a_run_in_which_no_update_is_aggregated_fails_loudly(warm_env: dict[str, str], tmp_path: Path) -> None:
    completed = fl_poison_run(
        warm_env,
        "attack=nan-weights",
        "num-malicious=3",
        "num-clients=3",
        "num-rounds=2",
        f"output-dir={tmp_path}",
        "run-name=all-nan",
        "save-model=true",
    )
    assert completed.returncode != 0
    folder = tmp_path / "all-nan"
    failure = json.loads((folder / "failed.json").read_text())
    assert failure["status"] == "failed"
    assert "no client update was aggregated in 2 round(s)" in failure["error"] and "non-finite" in failure["error"]
    assert not (folder / "summary.json").exists() and not (folder / "model.pt").exists()
    rounds = read_rows(folder / "rounds.csv")
    assert [row["aggregated"] for row in rounds if row["round"] != "0"] == ["0", "0"]


def test_alie_forges_identical_updates_and_records_z_in_both_csv_files(
    warm_env: dict[str, str], tmp_path: Path
) -> None:
    """ALIE through Flower's simulation: the server-side stage forges, the CSV files say what it chose."""
    completed = fl_poison_run(
        warm_env,
        "strategy=median",
        "update-attack=alie",
        "malicious-ids=1,2",
        "num-clients=4",
        "num-rounds=2",
        f"output-dir={tmp_path}",
        "run-name=alie",
        "save-model=false",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    z = NormalDist().inv_cdf(3 / 4)  # n = 4, f = 2: s = floor(4/2 + 1) - 2 = 1, z = Φ⁻¹((4 - 1)/4)
    rounds = {row["round"]: row for row in read_rows(tmp_path / "alie" / "rounds.csv")}
    assert rounds["0"]["adversary_knowledge"] == "" and rounds["0"]["adversary_z"] == ""
    clients = read_rows(tmp_path / "alie" / "clients.csv")
    for server_round in ("1", "2"):
        assert rounds[server_round]["adversary_knowledge"] == "colluding"
        assert float(rounds[server_round]["adversary_z"]) == pytest.approx(z, rel=1e-12)
        rows = {row["partition_id"]: row for row in clients if row["round"] == server_round}
        for pid in ("1", "2"):
            assert rows[pid]["attacked"] == "1" and rows[pid]["adversary_knowledge"] == "colluding"
            assert float(rows[pid]["adversary_z"]) == pytest.approx(z, rel=1e-12)
        for pid in ("0", "3"):
            assert rows[pid]["attacked"] == "0" and rows[pid]["adversary_z"] == ""
        # both attackers sent the same forged update mu - z sigma, not their two honest ones
        assert rows["1"]["norm_before"] == rows["2"]["norm_before"]
        assert rows["0"]["norm_before"] != rows["3"]["norm_before"]
