"""Who a node is: its partition id and the number of partitions, from Flower's node config.

The simulation engine sets ``partition-id`` and ``num-partitions`` for every virtual SuperNode;
on real machines the operator passes them with ``--node-config``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fl_poison.config import ConfigError


@dataclass(frozen=True)
class NodeIdentity:
    """A node's place in the federation.

    Attributes
    ----------
    partition_id : int
        Which partition of the dataset this node trains on.
    num_partitions : int
        How many partitions the dataset is divided into.
    """

    partition_id: int
    num_partitions: int

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> "NodeIdentity":
        """Read ``partition-id`` and ``num-partitions``; fail with a one-line error if absent or bad."""
        try:
            partition_id = int(node_config["partition-id"])  # type: ignore[arg-type]
            num_partitions = int(node_config["num-partitions"])  # type: ignore[arg-type]
        except KeyError as missing:
            raise ConfigError(
                f"node config: missing {missing.args[0]}; allowed: --node-config "
                '"partition-id=<id> num-partitions=<n>"'
            ) from None
        except (TypeError, ValueError):
            raise ConfigError(
                f"node config: bad partition-id/num-partitions {dict(node_config)!r}; allowed: integers"
            ) from None
        if not 0 <= partition_id < num_partitions:
            raise ConfigError(
                f"partition-id: bad value {partition_id}; allowed: 0 .. {num_partitions - 1}"
            )
        return cls(partition_id, num_partitions)
