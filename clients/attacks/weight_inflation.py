"""Weight inflation: the attacker reports ``factor`` times its real example count.

Paper: Portnoy, Tirosh and Hendler, 2022, "Towards Federated Learning With Byzantine-Robust
Client Weighting" (Applied Sciences 12(17), 8847), §3: FedAvg weights client ``k`` by its
reported ``n_k``, so a Byzantine client that over-reports its data size takes over the weighted
average without changing a single weight of its update. An update transform: it sends the
trained weights as they are (clean, or poisoned by any data-poisoning attack it follows) and
forges only the count. The server's ``client-weighting=capped`` is the defense (see
:mod:`fl_poison.core.client_weighting`).

The forged count stays at or below the largest count the server's screening accepts (2**53,
:data:`fl_poison.core.reply_checks.MAX_NUM_EXAMPLES`): an attacker gains nothing by being rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.base import TrainingJob
from clients.spec import AttackContext, AttackSpec
from fl_poison.core.catalogue import UPDATE_TRANSFORM
from fl_poison.core.reply_checks import MAX_NUM_EXAMPLES
from fl_poison.core.settings import Setting, number_in

# Above 1e12 the forged count of any real partition already meets the screening's 2**53 ceiling.
MAX_INFLATION_FACTOR = 1e12

INFLATION_FACTOR = Setting(
    "inflation-factor",
    1e6,
    "Weight inflation: the attacker reports this many times its real example count (below 1 deflates it).",
    number_in(0, MAX_INFLATION_FACTOR, False, True),
)


@dataclass(frozen=True)
class WeightInflation:
    """Send the trained weights unchanged, report ``factor`` times the real example count.

    Parameters
    ----------
    factor : float
        The multiple of the real count reported.
    """

    factor: float

    def transform(
        self, job: TrainingJob, trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """``trained`` unchanged (see :class:`~clients.malicious.UpdateTransform` for the parameters)."""
        return trained

    def reported_examples(self, job: TrainingJob, count: int) -> int:
        """``factor × count`` rounded, between 1 and the screening's ceiling (see :class:`~clients.malicious.UpdateTransform`)."""
        return int(min(max(round(self.factor * count), 1), MAX_NUM_EXAMPLES))


def weight_inflation(context: AttackContext) -> WeightInflation:
    """The transform of an attacker with the run's ``inflation-factor``.

    Parameters
    ----------
    context : AttackContext
        The attacker's settings (see :class:`~clients.spec.AttackContext`).
    """
    return WeightInflation(context.config[INFLATION_FACTOR])


ATTACK = AttackSpec(
    name="weight-inflation",
    kind=UPDATE_TRANSFORM,
    summary="Reports inflation-factor times its real example count to take over weighted averages (Portnoy et al., 2022).",
    settings=(INFLATION_FACTOR,),
    transform=weight_inflation,
)
