"""Chooses the behaviour of a client in a round from the experiment config."""

from __future__ import annotations

from clients.base import ClientBehaviour
from clients.benign import BenignClient
from fl_poison.config import ExperimentConfig


def behaviour_for(config: ExperimentConfig, partition_id: int, server_round: int) -> ClientBehaviour:
    """The behaviour of ``partition_id`` in ``server_round`` (every client is benign so far).

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (the threat model will live here).
    partition_id : int
        The client.
    server_round : int
        The round.
    """
    del config, partition_id, server_round
    return BenignClient()
