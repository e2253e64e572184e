"""Who is malicious, and in which rounds they attack.

Malicious partitions come from ``malicious-ids`` or, when only ``num-malicious`` is given, from a
draw seeded by ``seed`` (the same in every process). On a real SuperNode the operator can also
declare the node malicious with ``--node-config "... malicious=true"``. A malicious client
attacks from ``attack-start-round`` on, every ``attack-every``-th time it is sampled; the rounds
it is sampled in follow from :func:`fl_poison.core.schedule.sampled_partitions`, so no state is needed.
The server learns the ground truth only from the clients' replies, for forensics; no defense
reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fl_poison.core.config import ExperimentConfig
from fl_poison.core.schedule import sampled_partitions

THREAT_MODEL_SEED_SALT = 7919


def malicious_partitions(
    num_clients: int, num_malicious: int, malicious_ids: tuple[int, ...], seed: int
) -> tuple[int, ...]:
    """The malicious partition ids: ``malicious_ids`` if given, else ``num_malicious`` drawn with ``seed``."""
    if malicious_ids:
        return tuple(sorted(malicious_ids))
    if num_malicious == 0:
        return ()
    generator = np.random.default_rng([seed, THREAT_MODEL_SEED_SALT])
    return tuple(sorted(int(i) for i in generator.choice(num_clients, size=num_malicious, replace=False)))


def declared_malicious(node_config: Mapping[str, object]) -> bool:
    """True when the node's own config says ``malicious=true``."""
    value = node_config.get("malicious", False)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1")
    return bool(value)


@dataclass(frozen=True)
class ThreatModel:
    """The attackers of a run and their schedule.

    Attributes
    ----------
    malicious_ids : tuple[int, ...]
        Partition ids made malicious by the run config.
    num_clients, per_round, seed : int
        The sampling plan (see :func:`fl_poison.core.schedule.sampled_partitions`).
    attack_start_round : int
        First round in which attackers attack.
    attack_every : int
        An attacker attacks every k-th time it is sampled from ``attack_start_round`` on.
    """

    malicious_ids: tuple[int, ...]
    num_clients: int
    per_round: int
    seed: int
    attack_start_round: int = 1
    attack_every: int = 1

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> ThreatModel:
        """The threat model a run config describes."""
        return cls(
            malicious_ids=malicious_partitions(
                config.num_clients, config.num_malicious, config.malicious_ids, config.seed
            ),
            num_clients=config.num_clients,
            per_round=config.sampled_per_round,
            seed=config.seed,
            attack_start_round=config.attack_start_round,
            attack_every=config.attack_every,
        )

    def is_malicious(self, partition_id: int, node_config: Mapping[str, object] | None = None) -> bool:
        """Whether ``partition_id`` is malicious (by the run config or its own node config)."""
        return partition_id in self.malicious_ids or declared_malicious(node_config or {})

    def sampled_in(self, server_round: int) -> list[int]:
        """The partitions that train in ``server_round``."""
        return sampled_partitions(self.num_clients, self.per_round, self.seed, server_round)

    def attacks(self, partition_id: int, server_round: int, node_config: Mapping[str, object] | None = None) -> bool:
        """Whether ``partition_id`` sends a poisoned update in ``server_round`` (assuming it is sampled)."""
        if not self.is_malicious(partition_id, node_config) or server_round < self.attack_start_round:
            return False
        times_sampled = sum(partition_id in self.sampled_in(r) for r in range(self.attack_start_round, server_round))
        return times_sampled % self.attack_every == 0

    def attackers_sampled(self, server_round: int) -> int:
        """How many run-config attackers train in ``server_round`` (at least 1, for the attacker asking)."""
        sampled = set(self.sampled_in(server_round))
        return max(1, sum(1 for pid in self.malicious_ids if pid in sampled))

    def attacker_rank(self, partition_id: int) -> int:
        """The position of an attacker among the run-config attackers (DBA part index)."""
        if partition_id in self.malicious_ids:
            return self.malicious_ids.index(partition_id)
        return partition_id % max(1, len(self.malicious_ids))
