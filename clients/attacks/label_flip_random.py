"""Random label flipping: every label of the attacker is replaced by a uniformly drawn class.

Paper: the untargeted label-flipping baseline of the seed survey (seed 000 §2.1.2); see also
Tolpegin et al., 2020, "Data Poisoning Attacks Against Federated Learning Systems" (ESORICS).
The attacker trains on its own images with labels drawn uniformly from all classes, seeded per
client and round; it has no settings and no metrics of its own (its effect is the clean accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

from clients.base import TrainingJob
from clients.label_flipping import random_labels
from clients.malicious import Poisoned
from clients.spec import AttackContext, AttackSpec
from fl_poison.core.catalogue import DATA_POISONING


@dataclass(frozen=True)
class RandomLabelFlip:
    """Random label flipping.

    Parameters
    ----------
    num_classes : int
        Labels are drawn from ``0 .. num_classes - 1``.
    """

    num_classes: int

    def poison(self, job: TrainingJob) -> Poisoned:
        """``job``'s data with every label replaced by a uniform draw (seeded by ``job.seed``)."""
        return Poisoned(random_labels(job.data, self.num_classes, job.seed))


def random_label_flip(context: AttackContext) -> RandomLabelFlip:
    """The poisoner of an attacker (see :class:`~clients.spec.AttackContext` for ``context``)."""
    return RandomLabelFlip(context.info.num_classes)


ATTACK = AttackSpec(
    name="label-flip-random",
    kind=DATA_POISONING,
    summary="Every label of the attacker replaced by a uniform draw (seed 000 §2.1.2).",
    poisoner=random_label_flip,
)
