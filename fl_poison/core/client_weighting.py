"""How much a client's update counts in a weighted average: ``client-weighting``.

FedAvg (McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", AISTATS) weights client ``k`` by ``n_k / n``, its example count over the
round's total, and the count is whatever the client reports. One dishonest count takes the
average over: a client claiming 1e12 examples against ten honest ones of 150 gets weight
0.9999999985. Portnoy, Tirosh and Hendler (2022, "Towards Federated Learning With
Byzantine-Robust Client Weighting", Applied Sciences 12(17)) bound the damage by truncating the
reported counts before weighting; ``capped`` does that with the best bound the server has:

- ``reported``: the counts as reported (FedAvg's trust; for studying the attack);
- ``capped`` (default): a count is capped at what the server can justify: the true size of the
  client's partition when the server computes the partitions (simulation, and real nodes that
  train on their partition of the run's dataset), the size a node declared when it joined when
  it trains on its own data folder, and otherwise ``weight-cap-multiple`` times the median of
  the round's reports;
- ``uniform``: every usable update counts the same (weight 1).

Counts and their sums are float64: every count is at most 2**53 after screening
(:mod:`fl_poison.core.reply_checks`), so a round's total cannot overflow.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

REPORTED = "reported"
CAPPED = "capped"
UNIFORM = "uniform"
WEIGHTINGS = (CAPPED, REPORTED, UNIFORM)


@dataclass(frozen=True)
class ClientWeighting:
    """Turns the example counts the clients of a round reported into the counts their weights use.

    Parameters
    ----------
    mode : str
        ``capped``, ``reported`` or ``uniform`` (see the module docstring).
    justified : Mapping[int, int]
        The count the server can justify for each partition id (its true partition size, or the
        size its node declared at join); partitions absent here are capped by the round's median.
    median_multiple : float
        For ``capped``, the cap of a partition without a justified count: this multiple of the
        median of the round's reported counts.

    Raises
    ------
    ValueError
        For an unknown ``mode``, a ``median_multiple`` below 1 or a justified count below 1.
    """

    mode: str = CAPPED
    justified: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    median_multiple: float = 2.0

    def __post_init__(self) -> None:
        if self.mode not in WEIGHTINGS:
            raise ValueError(f"client-weighting: bad value {self.mode!r}; allowed: {' | '.join(WEIGHTINGS)}")
        if not self.median_multiple >= 1.0:
            raise ValueError(f"weight-cap-multiple: bad value {self.median_multiple!r}; allowed: a number >= 1")
        small = [pid for pid, count in self.justified.items() if count < 1]
        if small:
            raise ValueError(f"justified count of partition {small[0]} is {self.justified[small[0]]}; allowed: >= 1")
        object.__setattr__(self, "justified", MappingProxyType(dict(self.justified)))

    def used_counts(self, partition_ids: Sequence[int], reported: Sequence[float]) -> tuple[float, ...]:
        """The counts the weights of a round's usable updates are computed from (float64).

        Parameters
        ----------
        partition_ids : Sequence[int]
            The client of every usable update.
        reported : Sequence[float]
            The count each reported (screened: positive, finite, at most 2**53).

        Raises
        ------
        ValueError
            When the two sequences differ in length.
        """
        if len(partition_ids) != len(reported):
            raise ValueError(f"{len(partition_ids)} partition ids for {len(reported)} reported counts")
        if self.mode == REPORTED:
            return tuple(float(count) for count in reported)
        if self.mode == UNIFORM:
            return tuple(1.0 for _ in reported)
        unjustified = [count for pid, count in zip(partition_ids, reported, strict=True) if pid not in self.justified]
        median_cap = self.median_multiple * statistics.median(reported) if unjustified else 0.0
        return tuple(
            float(min(count, self.justified.get(pid, median_cap)))
            for pid, count in zip(partition_ids, reported, strict=True)
        )

    def describe(self) -> str:
        """One line for the run's log: the mode and where the caps come from."""
        if self.mode != CAPPED:
            return self.mode
        return (
            f"capped ({len(self.justified)} partition sizes known; others at {self.median_multiple:g} × the round's "
            "median report)"
        )
