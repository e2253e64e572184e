"""The server-side adversary: what a model-poisoning attack sees of a round, and what it returns.

Attacks such as ALIE, IPM, MinMax / MinSum, Fang and Mimic need more than the attacker's own
honest update: the attackers train honestly in the ClientApp (their replies are marked malicious
for forensics), then, in simulation only, an adversary stage in the ServerApp replaces their
updates before screening and the defense. The stage hands the attack an :class:`AdversaryView`
holding exactly what the run's ``attack-knowledge`` allows:

- ``own``: nothing beyond each attacker's own honest update (such attacks run in the ClientApp as
  update transforms instead; a model-poisoning attack refuses this level unless it declares it);
- ``colluding``: the honest updates of every attacker trained in the round;
- ``omniscient``: those, plus every benign update of the round.

The defense never sees the ground truth, and the adversary never sees the defense's internals
(an attack adaptive to a named rule, like Fang's, reads the rule's name and settings from the run
config, as its paper's threat model assumes).

A model-poisoning module of :mod:`clients.attacks` declares ``kind=MODEL_POISONING``, the
knowledge levels it supports (``knowledge``, the first being what ``attack-knowledge=auto``
means) and ``adversary``: a builder from an :class:`AdversaryContext` to an :class:`Adversary`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from clients.threat_model import ThreatModel
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.settings import ConfigError, Setting, choice

OWN, COLLUDING, OMNISCIENT = "own", "colluding", "omniscient"
KNOWLEDGE_LEVELS = (OWN, COLLUDING, OMNISCIENT)
AUTO_KNOWLEDGE = "auto"

ATTACK_KNOWLEDGE = Setting(
    "attack-knowledge",
    AUTO_KNOWLEDGE,
    "What model-poisoning attackers know of the round: own (their own honest update), colluding (the honest "
    "updates of all attackers of the round), omniscient (also every benign update); auto = the attack's paper setting "
    "(ignored unless update-attack is a model-poisoning attack).",
    choice(AUTO_KNOWLEDGE, *KNOWLEDGE_LEVELS),
)


@dataclass(frozen=True)
class AdversaryContext:
    """What an adversary's builder may use: the run's settings and its threat model.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (the attack's own ones read with ``config[SETTING]``; ``strategy`` and
        its settings for an attack adaptive to the rule).
    threat : ThreatModel
        The attackers of the run and their schedule.
    knowledge : str
        The resolved knowledge level (``auto`` already replaced by the attack's first level).
    """

    config: ExperimentConfig
    threat: ThreatModel
    knowledge: str


@dataclass(frozen=True)
class AdversaryView:
    """What the adversary sees of one round.

    Parameters
    ----------
    server_round : int
        The round.
    knowledge : str
        The knowledge level this view was built for.
    own : torch.Tensor
        ``(m, d)`` float64: the honest updates (trained weights minus the global model, flattened
        in the layout the server uses) of the ``m`` attackers that replied this round, in
        partition-id order.
    benign : torch.Tensor | None
        ``(b, d)`` float64: the benign clients' updates of the round, in partition-id order, for
        ``omniscient``; None for the other levels.
    num_sampled : int
        How many updates the defense will receive this round (benign and malicious, ``n``).
    generator : torch.Generator
        Seeded by the run's seed and the round (CPU); every random draw of the attack uses it.
    own_ids : tuple[int, ...]
        The partition ids of the rows of ``own``.
    benign_ids : tuple[int, ...]
        The partition ids of the rows of ``benign`` (empty when ``benign`` is None).
    """

    server_round: int
    knowledge: str
    own: torch.Tensor
    benign: torch.Tensor | None
    num_sampled: int
    generator: torch.Generator
    own_ids: tuple[int, ...] = ()
    benign_ids: tuple[int, ...] = ()

    @property
    def num_attackers(self) -> int:
        """``m``, the attackers whose updates are forged this round."""
        return int(self.own.shape[0])

    def reference_updates(self) -> torch.Tensor:
        """The updates the attack may treat as benign: ``benign`` when omniscient, else the attackers' own."""
        return self.benign if self.benign is not None else self.own


@dataclass(frozen=True)
class Forged:
    """The adversary's answer for one round.

    Parameters
    ----------
    updates : torch.Tensor
        ``(m, d)``: one update per attacker of the view, in the same order, to send in place of
        its honest one (the stage adds it to the global model and casts to the model's dtype).
    parameters : Mapping[str, float]
        What the attack chose this round (ALIE's ``z``, IPM's ``epsilon``, MinMax's ``gamma``,
        ...), recorded in ``rounds.csv`` and for each attacker in ``clients.csv``.
    """

    updates: torch.Tensor
    parameters: Mapping[str, float]


class Adversary(Protocol):
    """A model-poisoning attack: forges the attackers' updates of a round from its view."""

    def forge(self, view: AdversaryView) -> Forged:
        """The attackers' updates for the round (see :class:`Forged`).

        Parameters
        ----------
        view : AdversaryView
            What the knowledge level lets the attack see of the round.
        """
        ...


AdversaryBuilder = Callable[[AdversaryContext], Adversary]


def resolve_knowledge(attack: str, declared: Sequence[str], requested: str) -> str:
    """The knowledge level a run of ``attack`` uses: ``requested``, or the attack's first level for ``auto``.

    Parameters
    ----------
    attack : str
        The model-poisoning attack (for the message).
    declared : Sequence[str]
        The levels it supports, its paper's setting first.
    requested : str
        The value of ``attack-knowledge``.

    Raises
    ------
    ConfigError
        One line naming ``attack-knowledge`` when ``requested`` is a level the attack does not support.
    """
    if requested == AUTO_KNOWLEDGE:
        return declared[0]
    if requested not in declared:
        raise ConfigError.bad_value(
            ATTACK_KNOWLEDGE.key, requested, f"{' | '.join((AUTO_KNOWLEDGE, *declared))} (the levels {attack} supports)"
        )
    return requested
