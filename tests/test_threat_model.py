"""Who is malicious and when attackers attack (clients/threat_model.py)."""

from __future__ import annotations

import pytest

from clients.threat_model import ThreatModel, declared_malicious, malicious_partitions
from fl_poison.apps.algorithms import experiment_config
from fl_poison.core.schedule import sampled_partitions

# ---------------------------------------------------------------- malicious partitions


def test_explicit_ids_win_over_the_count_and_are_sorted():
    assert malicious_partitions(10, 5, (7, 2, 4), seed=1) == (2, 4, 7)
    assert malicious_partitions(10, 0, (3,), seed=1) == (3,)


def test_no_ids_and_zero_count_gives_nobody():
    assert malicious_partitions(10, 0, (), seed=123) == ()


@pytest.mark.parametrize("num_clients, count", [(10, 1), (10, 3), (10, 10), (50, 7)])
def test_drawn_ids_have_the_right_count_and_range(num_clients, count):
    for seed in range(5):
        drawn = malicious_partitions(num_clients, count, (), seed)
        assert len(drawn) == count
        assert len(set(drawn)) == count
        assert list(drawn) == sorted(drawn)
        assert all(isinstance(pid, int) and 0 <= pid < num_clients for pid in drawn)
    if count == num_clients:
        assert malicious_partitions(num_clients, count, (), 0) == tuple(range(num_clients))


def test_drawn_ids_are_deterministic_per_seed_and_differ_across_seeds():
    first = malicious_partitions(20, 4, (), seed=42)
    assert malicious_partitions(20, 4, (), seed=42) == first
    draws = {malicious_partitions(20, 4, (), seed) for seed in range(20)}
    assert len(draws) > 1


def test_threat_model_from_config_uses_the_same_draw():
    config = experiment_config({"num-clients": 12, "num-malicious": 3, "seed": 9})
    threat = ThreatModel.from_config(config)
    assert threat.malicious_ids == malicious_partitions(12, 3, (), 9)
    explicit = ThreatModel.from_config(
        experiment_config({"num-clients": 12, "num-malicious": 3, "malicious-ids": "5,1"})
    )
    assert explicit.malicious_ids == (1, 5)


# ---------------------------------------------------------------- node config


@pytest.mark.parametrize(
    "node_config, expected",
    [
        ({"malicious": True}, True),
        ({"malicious": "true"}, True),
        ({"malicious": "True "}, True),
        ({"malicious": "yes"}, True),
        ({"malicious": "1"}, True),
        ({"malicious": False}, False),
        ({"malicious": "false"}, False),
        ({"malicious": "no"}, False),
        ({"malicious": 0}, False),
        ({}, False),
        ({"partition-id": 3}, False),
    ],
)
def test_declared_malicious(node_config, expected):
    assert declared_malicious(node_config) is expected


def test_node_config_makes_an_unlisted_partition_malicious():
    threat = ThreatModel(malicious_ids=(2,), num_clients=5, per_round=5, seed=0)
    assert threat.is_malicious(2)
    assert not threat.is_malicious(3)
    assert not threat.is_malicious(3, {"malicious": "no"})
    assert threat.is_malicious(3, {"malicious": "yes"})
    assert threat.attacks(3, 1, {"malicious": True})
    assert not threat.attacks(3, 1, {})


# ---------------------------------------------------------------- attack schedule


def expected_attack_rounds(
    pid: int, num_clients: int, per_round: int, seed: int, start: int, every: int, last: int
) -> list[int]:
    """Rounds in which ``pid`` is sampled and attacks: the 1st, (1+every)th, ... sampling from ``start`` on."""
    sampled_rounds = [r for r in range(start, last + 1) if pid in sampled_partitions(num_clients, per_round, seed, r)]
    return sampled_rounds[::every]


def test_benign_clients_never_attack():
    threat = ThreatModel(malicious_ids=(1,), num_clients=4, per_round=4, seed=0)
    assert not any(threat.attacks(0, r) for r in range(1, 10))


def test_no_attack_before_the_start_round():
    threat = ThreatModel(malicious_ids=(0, 3), num_clients=4, per_round=4, seed=0, attack_start_round=5)
    assert [r for r in range(1, 10) if threat.attacks(3, r)] == [5, 6, 7, 8, 9]


def test_attack_every_one_attacks_every_sampled_round():
    threat = ThreatModel(malicious_ids=(4,), num_clients=10, per_round=3, seed=11, attack_start_round=3)
    sampled = [r for r in range(1, 31) if 4 in sampled_partitions(10, 3, 11, r)]
    attacked = [r for r in sampled if threat.attacks(4, r)]
    assert attacked == [r for r in sampled if r >= 3]


@pytest.mark.parametrize("seed, start, every", [(11, 1, 2), (11, 4, 2), (3, 2, 3), (7, 1, 2)])
def test_attack_every_k_attacks_on_every_kth_sampling(seed, start, every):
    num_clients, per_round, last = 10, 4, 40
    for pid in (0, 5, 9):
        threat = ThreatModel((0, 5, 9), num_clients, per_round, seed, attack_start_round=start, attack_every=every)
        sampled = [r for r in range(1, last + 1) if pid in sampled_partitions(num_clients, per_round, seed, r)]
        attacked = [r for r in sampled if threat.attacks(pid, r)]
        expected = expected_attack_rounds(pid, num_clients, per_round, seed, start, every, last)
        assert attacked == expected
        # sanity of the fixture: the client is sampled often enough that some sampled rounds are skipped
        assert len(expected) >= 2 and len(expected) < len([r for r in sampled if r >= start])


def test_attack_every_two_when_sampled_every_round():
    # Sampled in every round: attacks in rounds start, start+2, start+4, ...
    threat = ThreatModel((1,), num_clients=3, per_round=3, seed=0, attack_start_round=2, attack_every=2)
    assert [r for r in range(1, 10) if threat.attacks(1, r)] == [2, 4, 6, 8]


def test_attackers_sampled_matches_a_direct_count():
    malicious = (0, 2, 5, 7)
    threat = ThreatModel(malicious, num_clients=8, per_round=3, seed=5)
    counts = []
    for r in range(1, 30):
        drawn = sampled_partitions(8, 3, 5, r)
        direct = len(set(malicious) & set(drawn))
        assert threat.attackers_sampled(r) == max(1, direct)
        counts.append(direct)
    assert 0 in counts and max(counts) >= 2  # the draws exercise both the floor and real counts


def test_attackers_sampled_is_at_least_one_without_attackers():
    threat = ThreatModel((), num_clients=8, per_round=3, seed=5)
    assert all(threat.attackers_sampled(r) == 1 for r in range(1, 5))


def test_sampled_in_is_the_schedule():
    threat = ThreatModel((), num_clients=9, per_round=4, seed=2)
    for r in range(1, 6):
        assert threat.sampled_in(r) == sampled_partitions(9, 4, 2, r)


def test_attacker_rank():
    threat = ThreatModel((8, 3, 5), num_clients=10, per_round=10, seed=0)
    # malicious_ids as given to the dataclass (from_config always passes them sorted)
    assert [threat.attacker_rank(pid) for pid in (8, 3, 5)] == [0, 1, 2]
    sorted_threat = ThreatModel((3, 5, 8), num_clients=10, per_round=10, seed=0)
    assert [sorted_threat.attacker_rank(pid) for pid in (3, 5, 8)] == [0, 1, 2]
    # a node-declared attacker outside the list gets pid mod number of attackers
    assert sorted_threat.attacker_rank(7) == 7 % 3
    assert ThreatModel((), 10, 10, 0).attacker_rank(7) == 0
