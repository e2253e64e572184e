"""The server-side adversary of a model-poisoning attack: it rewrites the attackers' replies of each round.

:class:`ModelPoisoningStage` implements :class:`fl_poison.core.adversary_stage.AdversaryStage`
for the strategy. In each round, after the replies are ordered by partition id and before they
are screened and decoded for the defense, it

1. finds the attacking replies from their own ground-truth metric ``attacked`` (the ClientApp
   sets it for an attacker in its attack rounds; a round without one passes untouched, with
   nothing decoded);
2. decodes the honest updates it may see: each attacker's (``own``), and for ``omniscient`` every
   other reply's (``benign``), as ``reply weights - global weights`` in float64, flattened in the
   order of the server's :class:`~fl_poison.core.round_updates.UpdateLayout` (float arrays only);
   a reply that is an error, malformed or non-finite is left out of the view and left alone, for
   the screening to reject;
3. asks the attack's :class:`~clients.adversary.Adversary` to forge one update per attacker from
   an :class:`~clients.adversary.AdversaryView` with a ``torch.Generator`` seeded by the run's
   seed and the round;
4. writes ``global + forged update``, rounded once to each array's dtype, over the attacker's
   float arrays (its other arrays stay as sent), so that screening, update norms, a defense's
   exact-row path and forensics all see the forged update;
5. returns the knowledge level and the attack's parameters of the round as ``adversary_*``
   columns (``adversary_knowledge``, ``adversary_z``, ...) for ``rounds.csv`` and the attackers'
   rows of ``clients.csv``.

:func:`adversary_stage_for` builds the stage a run needs: None unless ``update-attack`` is a
model-poisoning attack (then the strategy skips the step at no cost). The stage exists in
simulation only; the ServerApp refuses it on real SuperNodes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message

from clients.adversary import (
    ATTACK_KNOWLEDGE,
    OMNISCIENT,
    Adversary,
    AdversaryContext,
    AdversaryView,
    resolve_knowledge,
)
from clients.registry import attack_named
from clients.spec import AttackSpec
from clients.threat_model import ThreatModel
from fl_poison.core.adversary_stage import ADVERSARY_COLUMN_PREFIX, AdversaryRound
from fl_poison.core.catalogue import MODEL_POISONING
from fl_poison.core.config import ExperimentConfig
from fl_poison.core.reply_checks import array_problem, envelope_problem
from fl_poison.core.round_updates import UpdateLayout, npy_payload

KNOWLEDGE_COLUMN = f"{ADVERSARY_COLUMN_PREFIX}knowledge"


def round_seed(seed: int, server_round: int) -> int:
    """The seed of the adversary's generator in ``server_round`` (a 32-bit draw of NumPy's SeedSequence).

    Parameters
    ----------
    seed : int
        The run's ``seed``.
    server_round : int
        The round.
    """
    return int(np.random.SeedSequence([seed, server_round]).generate_state(1)[0])


def parameter_column(name: str) -> str:
    """The ``clients.csv`` / ``rounds.csv`` column of an attack parameter: ``adversary_`` + its name in snake_case.

    Parameters
    ----------
    name : str
        A key of :attr:`Forged.parameters <clients.adversary.Forged>` (``z``, ``epsilon``, ``target-partition``).
    """
    return ADVERSARY_COLUMN_PREFIX + re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def attacked(message: Message) -> bool:
    """Whether ``message`` is the reply of an attacker in an attack round (its ground-truth metric ``attacked`` is 1).

    Parameters
    ----------
    message : Message
        A reply of the round.
    """
    if message.has_error():
        return False
    record = next(iter(message.content.metric_records.values()), None)
    value = record.get("attacked") if record is not None else None
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 1


def honest_update(message: Message, layout: UpdateLayout) -> torch.Tensor | None:
    """The float64 update ``reply weights - global weights`` of ``message`` in ``layout``'s order; None when unusable.

    Parameters
    ----------
    message : Message
        A reply of the round.
    layout : UpdateLayout
        The global model and where its float arrays lie in a row.
    """
    if envelope_problem(message) is not None:
        return None
    record = next(iter(message.content.array_records.values()))
    if set(record.keys()) != set(layout.global_arrays):
        return None
    row = np.empty(layout.size, dtype=np.float64)
    for slot in layout.slots:
        reference = layout.global_arrays[slot.name]
        try:
            values = npy_payload(record[slot.name])
        except (TypeError, ValueError):
            return None
        if array_problem(slot.name, values, reference) is not None:
            return None
        np.subtract(
            values.reshape(-1).astype(np.float64),
            reference.reshape(-1).astype(np.float64),
            out=row[slot.start : slot.stop],
        )
    if not np.all(np.isfinite(row)):
        return None
    return torch.from_numpy(row)


def write_update(message: Message, layout: UpdateLayout, update: torch.Tensor) -> None:
    """Replace the float arrays of ``message`` by ``global + update``, rounded once to each array's dtype.

    Parameters
    ----------
    message : Message
        An attacker's reply (changed in place).
    layout : UpdateLayout
        The global model and where its float arrays lie in ``update``.
    update : torch.Tensor
        ``(d,)``: the forged update.
    """
    values = update.detach().to("cpu", torch.float64).numpy()
    record: ArrayRecord = next(iter(message.content.array_records.values()))
    for slot in layout.slots:
        base = layout.global_arrays[slot.name]
        total = base.astype(np.float64) + values[slot.start : slot.stop].reshape(slot.shape)
        record[slot.name] = Array(np.ascontiguousarray(total.astype(base.dtype)))


class ModelPoisoningStage:
    """Forges the attackers' updates of every round with a model-poisoning attack (see the module's steps).

    Parameters
    ----------
    adversary : Adversary
        The attack, built once for the run.
    knowledge : str
        The resolved knowledge level (``own``, ``colluding`` or ``omniscient``).
    seed : int
        The run's seed (with the round, it seeds each round's generator).
    """

    def __init__(self, adversary: Adversary, knowledge: str, seed: int) -> None:
        self.adversary = adversary
        self.knowledge = knowledge
        self.seed = seed

    def rewrite(
        self,
        server_round: int,
        replies: Sequence[Message],
        global_arrays: Mapping[str, np.ndarray],
        partition_of: Callable[[Message], int],
    ) -> AdversaryRound | None:
        """Forge the attacking replies of ``server_round`` in place (see :class:`~fl_poison.core.adversary_stage.AdversaryStage`)."""
        if not any(attacked(message) for message in replies):
            return None
        layout = UpdateLayout(dict(global_arrays))
        own: list[torch.Tensor] = []
        own_messages: list[Message] = []
        benign: list[torch.Tensor] = []
        benign_messages: list[Message] = []
        for message in replies:
            is_attacker = attacked(message)
            if not is_attacker and self.knowledge != OMNISCIENT:
                continue
            update = honest_update(message, layout)
            if update is None:
                continue
            (own if is_attacker else benign).append(update)
            (own_messages if is_attacker else benign_messages).append(message)
        if not own:
            return None
        view = AdversaryView(
            server_round=server_round,
            knowledge=self.knowledge,
            own=torch.stack(own),
            benign=_stacked(benign, layout.size) if self.knowledge == OMNISCIENT else None,
            num_sampled=sum(1 for message in replies if not message.has_error()),
            generator=torch.Generator().manual_seed(round_seed(self.seed, server_round)),
            own_ids=tuple(partition_of(message) for message in own_messages),
            benign_ids=tuple(partition_of(message) for message in benign_messages)
            if self.knowledge == OMNISCIENT
            else (),
        )
        forged = self.adversary.forge(view)
        if tuple(forged.updates.shape) != (len(own), layout.size):
            raise ValueError(
                f"the adversary forged updates of shape {tuple(forged.updates.shape)}; expected {(len(own), layout.size)}"
            )
        for message, update in zip(own_messages, forged.updates, strict=True):
            write_update(message, layout, update)
        columns: dict[str, float | int | str] = {KNOWLEDGE_COLUMN: self.knowledge}
        columns.update({parameter_column(name): _number(value) for name, value in forged.parameters.items()})
        return AdversaryRound(view.own_ids, columns)


def _stacked(rows: list[torch.Tensor], size: int) -> torch.Tensor:
    """``rows`` as a ``(len(rows), size)`` float64 matrix (an empty one when there are none)."""
    return torch.stack(rows) if rows else torch.empty((0, size), dtype=torch.float64)


def _number(value: float) -> float | int:
    """A parameter as written to the CSV files: an integer (a partition id) stays one, anything else is a float."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return float(value)


def adversary_stage_for(
    config: ExperimentConfig, attacks: Sequence[AttackSpec] | None = None
) -> ModelPoisoningStage | None:
    """The adversary stage of a run: None unless ``update-attack`` names a model-poisoning attack.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (``attack-knowledge`` already checked against the attack's levels).
    attacks : Sequence[AttackSpec] | None
        The attacks to look in; None for :func:`~clients.registry.registered_attacks`.
    """
    spec = attack_named(config.resolved_update_attack, attacks)
    if spec is None or spec.kind != MODEL_POISONING or spec.adversary is None:
        return None
    knowledge = resolve_knowledge(spec.name, spec.knowledge, config[ATTACK_KNOWLEDGE])
    context = AdversaryContext(config=config, threat=ThreatModel.from_config(config), knowledge=knowledge)
    return ModelPoisoningStage(spec.adversary(context), knowledge, config.seed)
