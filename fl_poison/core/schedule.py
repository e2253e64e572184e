"""Which partitions train in which round: a pure function of the seed, shared by server and clients.

The server samples with it (:class:`strategies.sampling.PartitionSampler`); a malicious client
uses it to know how often it has been sampled (``attack-every``) and how many colluding attackers
share its round (the scaling attack's default gamma), without any state.
"""

from __future__ import annotations

import numpy as np


def sampled_partitions(num_partitions: int, per_round: int, seed: int, server_round: int) -> list[int]:
    """The sorted partition ids among ``0 .. num_partitions - 1`` drawn for ``server_round``.

    Round ``r`` uses a generator seeded with ``(seed, r)``, so a round's draw does not depend on
    the rounds before it. Drawing all partitions returns all of them.
    """
    if not 1 <= per_round <= num_partitions:
        raise ValueError(f"per_round must be in 1..{num_partitions}, got {per_round}")
    generator = np.random.default_rng([seed, server_round])
    return sorted(int(i) for i in generator.choice(num_partitions, size=per_round, replace=False))
