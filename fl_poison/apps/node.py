"""What a SuperNode says about itself in its node config: who it is, its data, and any attack of its own.

The simulation engine sets ``partition-id`` and ``num-partitions`` for every virtual SuperNode;
on real machines the operator passes the node config with ``--node-config``:

- ``partition-id=3 num-partitions=10``: train on partition 3 of the run's dataset, which this
  machine can read (digits, a hub dataset in its cache, or the same local folder);
- ``partition-id=3 data-path="/data/site3"``: train on this machine's own folder, read with the
  loaders of local datasets (see :func:`fl_poison.core.data.node_data`); ``partition-id`` is then
  only the client's id in the results (it must still be unique, in ``0 .. num-clients-1``);
- ``malicious=true``: this node attacks, whatever the run config says; any key of
  :meth:`~fl_poison.core.catalogue.Catalogue.node_attack_keys` (how it attacks, and every
  registered attack's own settings: ``attack="badnets"``, ``poison-rate=0.8``, ...) overrides the
  run's for this node. The server learns of it only from the replies, for
  forensics. A node's own ``update-attack`` may not name a model-poisoning attack: those forge
  replies on the server, in simulation only.

Any other key is refused, so that a typo does not silently leave a node benign.

:func:`check_node` is the node's join check (the ClientApp's ``query``, before any training):
the node's whole effective config (the run's settings with the node's own attack settings),
its attack's classes against the data's number of classes, and its data (its partition, or its
own folder: it exists, is readable, holds images of the run's shape and labels of the run's
classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fl_poison.apps.algorithms import catalogue, check_attack_classes, experiment_config
from fl_poison.core.catalogue import MODEL_POISONING, UPDATE_TRANSFORM
from fl_poison.core.config import AUTO_UPDATE_ATTACK, NO_ATTACK, ExperimentConfig
from fl_poison.core.data import DatasetInfo, DataSpec, client_data, dataset_info, node_data
from fl_poison.core.settings import ConfigError, boolean, integer

IDENTITY_KEYS = ("partition-id", "num-partitions", "data-path", "malicious")
NODE_CONFIG_HELP = (
    '--node-config "partition-id=<id> num-partitions=<n>" or "partition-id=<id> data-path=\'/folder\'", '
    "optionally malicious=true and attack settings"
)


@dataclass(frozen=True)
class NodeIdentity:
    """A node's place in the federation.

    Attributes
    ----------
    partition_id : int
        Which partition of the dataset this node trains on; for a node with its own data, its
        client id in the results.
    num_partitions : int
        How many partitions the dataset is divided into; 0 for a node with its own data that
        does not say.
    data_path : str
        The node's own data folder; empty when it trains on a partition of the run's dataset.
    """

    partition_id: int
    num_partitions: int
    data_path: str = ""

    @property
    def has_own_data(self) -> bool:
        """Whether the node trains on its own folder rather than on a partition."""
        return bool(self.data_path)

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, object]) -> NodeIdentity:
        """Read the node config; fail with a one-line error for a missing, bad or unknown key.

        Parameters
        ----------
        node_config : Mapping[str, object]
            The node config (``context.node_config``).
        """
        check_node_keys(node_config)
        data_path = str(node_config.get("data-path", "")).strip()
        required = ("partition-id",) if data_path else ("partition-id", "num-partitions")
        missing = [key for key in required if key not in node_config]
        if missing:
            raise ConfigError(f"node config: missing {missing[0]}; allowed: {NODE_CONFIG_HELP}")
        partition_id = integer(0)("partition-id", node_config["partition-id"])
        num_partitions = integer(0)("num-partitions", node_config.get("num-partitions", 0))
        if partition_id < 0 or (num_partitions and partition_id >= num_partitions):
            allowed = f"0 .. {num_partitions - 1}" if num_partitions else "an integer >= 0"
            raise ConfigError(f"partition-id: bad value {partition_id}; allowed: {allowed}")
        if not data_path and num_partitions < 1:
            raise ConfigError(f"num-partitions: bad value {num_partitions}; allowed: an integer >= 1")
        return cls(partition_id, num_partitions, data_path)

    def check_against(self, config: ExperimentConfig) -> None:
        """Fail with a one-line error when this node does not fit a run of ``config``.

        Parameters
        ----------
        config : ExperimentConfig
            The run's settings.
        """
        if not self.has_own_data and self.num_partitions != config.num_clients:
            raise ConfigError(
                f"num-clients: bad value {config.num_clients}; allowed: the federation's number of "
                f"partitions ({self.num_partitions})"
            )
        if self.partition_id >= config.num_clients:
            raise ConfigError(
                f"partition-id: bad value {self.partition_id}; allowed: 0 .. num-clients - 1 ({config.num_clients - 1})"
            )


def check_node_keys(node_config: Mapping[str, object]) -> None:
    """Refuse keys that are neither identity keys nor attack settings.

    Parameters
    ----------
    node_config : Mapping[str, object]
        The node config (``context.node_config``).
    """
    attack_keys = catalogue().node_attack_keys()
    unknown = sorted(set(node_config) - set(IDENTITY_KEYS) - set(attack_keys))
    if unknown:
        raise ConfigError(f"node config: unknown key {unknown[0]}; allowed: {', '.join(IDENTITY_KEYS + attack_keys)}")
    if "malicious" in node_config:
        boolean("malicious", node_config["malicious"])


def node_attack_settings(node_config: Mapping[str, object]) -> dict[str, object]:
    """The attack settings the node config overrides.

    Parameters
    ----------
    node_config : Mapping[str, object]
        The node config (``context.node_config``).
    """
    attack_keys = catalogue().node_attack_keys()
    return {key: value for key, value in node_config.items() if key in attack_keys}


def config_for_node(run_config: Mapping[str, object], node_config: Mapping[str, object]) -> ExperimentConfig:
    """The run's config with this node's attack settings in place of the run's.

    Parameters
    ----------
    run_config : Mapping[str, object]
        The run config (``context.run_config``).
    node_config : Mapping[str, object]
        The node config (``context.node_config``).

    Raises
    ------
    ConfigError
        For a bad run config, or a bad attack setting of the node (its message then starts
        with ``node config``).
    """
    config = experiment_config(run_config)
    overrides = node_attack_settings(node_config)
    if not overrides:
        return config
    refuse_server_side_attack(overrides)
    try:
        return experiment_config({**run_config, **overrides})
    except ConfigError as error:
        raise ConfigError(f"node config {error}") from None


def refuse_server_side_attack(node_config: Mapping[str, object]) -> None:
    """Refuse a node config whose ``update-attack`` is a model-poisoning attack (simulation only).

    Such an attack forges the attackers' replies in the ServerApp from other clients' updates; a
    real node can only attack with what it sends itself.

    Parameters
    ----------
    node_config : Mapping[str, object]
        The node config (or its attack settings).

    Raises
    ------
    ConfigError
        One line naming ``update-attack``.
    """
    value = node_config.get("update-attack")
    if value is not None and str(value) in catalogue().attack_names(MODEL_POISONING):
        allowed = " | ".join((AUTO_UPDATE_ATTACK, NO_ATTACK, *catalogue().attack_names(UPDATE_TRANSFORM)))
        raise ConfigError(
            f"node config update-attack: bad value {value!r}; allowed: {allowed} (a model-poisoning attack "
            "forges replies on the server: simulation only)"
        )


def check_node(
    run_config: Mapping[str, object], node_config: Mapping[str, object], info: DatasetInfo | None = None
) -> tuple[NodeIdentity, ExperimentConfig]:
    """The node's join check: its whole effective config and its data, before any training.

    Parameters
    ----------
    run_config : Mapping[str, object]
        The run config (``context.run_config``).
    node_config : Mapping[str, object]
        The node config (``context.node_config``).
    info : DatasetInfo | None
        The run's classes and input shape as the server sends them; None to read them from the
        run's dataset (a node with its own folder that cannot read the run's dataset then checks
        its folder alone).

    Returns
    -------
    tuple[NodeIdentity, ExperimentConfig]
        Who the node is, and the run's settings with the node's attack settings in place.

    Raises
    ------
    ConfigError
        One line naming the key at fault (starting with ``node config`` for a key of the node
        config): a bad or unknown key, a partition that does not fit the run, an attack class the
        data lacks, a data folder that is missing, unreadable, of the wrong image shape or labels.
    """
    identity = NodeIdentity.from_node_config(node_config)
    config = config_for_node(run_config, node_config)
    identity.check_against(config)
    spec = DataSpec.from_config(config)
    if info is None:
        try:
            info = dataset_info(spec)
        except ConfigError:
            if not identity.has_own_data:
                raise
    if info is not None:
        try:
            check_attack_classes(config, info.num_classes)
        except ConfigError as error:
            raise ConfigError(f"node config {error}" if node_attack_settings(node_config) else str(error)) from None
    if identity.has_own_data:
        node_data(identity.data_path, spec.image_column, spec.label_column, info)
    else:
        client_data(spec, identity.partition_id)
    return identity, config
