"""A faulty client that replies with NaN weights, to exercise the server's robustness.

Paper: the arbitrary (Byzantine) client of Blanchard et al., 2017, "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent" (NeurIPS), in its crudest form: every float
parameter and buffer is NaN. A server must reject such a reply before aggregation (see
:mod:`fl_poison.core.reply_checks`). The name is ``nan-weights``, not ``nan``: Flower re-reads
run-config strings as TOML, turns ``"nan"`` into a float NaN, and then fails every ClientApp call
because NaN != NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.base import ClientUpdate, TrainingJob
from clients.spec import AttackContext, AttackSpec
from fl_poison.core.catalogue import CLIENT_BEHAVIOUR


@dataclass(frozen=True)
class NanClient:
    """A faulty client that replies with NaN weights and a NaN loss."""

    def run(self, job: TrainingJob) -> ClientUpdate:
        """``job``'s model with every float parameter and buffer set to NaN (no training)."""
        with torch.no_grad():
            for tensor in job.model.state_dict().values():
                if tensor.is_floating_point():
                    tensor.fill_(float("nan"))
        return ClientUpdate(job.model, float("nan"), len(job.data), malicious=True, attacked=True)


def nan_client(context: AttackContext) -> NanClient:
    """The behaviour of an attacker (see :class:`~clients.spec.AttackContext` for ``context``)."""
    return NanClient()


ATTACK = AttackSpec(
    name="nan-weights",
    kind=CLIENT_BEHAVIOUR,
    summary="A faulty client that replies with NaN weights (Byzantine fault; Blanchard et al., 2017).",
    behaviour=nan_client,
)
