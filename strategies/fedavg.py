"""FedAvg and FedProx, sampled by partition id and observed for forensics.

FedAvg: McMahan et al., 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data" — the average of client weights, weighted by reported example counts.
FedProx: Li et al., 2020, "Federated Optimization in Heterogeneous Networks" — FedAvg whose
clients add ``mu/2 * ||w - w_global||^2`` to their loss; the server sends ``proximal-mu``.
Both are Flower's built-in strategies with :class:`~strategies.lab.LabStrategy` mixed in.
"""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg, FedProx

from strategies.lab import LabStrategy


class LabFedAvg(LabStrategy, FedAvg):
    """Flower's FedAvg with seeded partition sampling and per-client records.

    Parameters
    ----------
    sampler, round_log :
        See :class:`~strategies.lab.LabStrategy`.
    **kwargs :
        Flower FedAvg arguments.
    """


class LabFedProx(LabStrategy, FedProx):
    """Flower's FedProx with seeded partition sampling and per-client records.

    Parameters
    ----------
    sampler, round_log :
        See :class:`~strategies.lab.LabStrategy`.
    proximal_mu : float
        The proximal weight mu sent to clients.
    **kwargs :
        Other Flower FedProx arguments.
    """
