"""The server's own clean root dataset and its update on it: what FLTrust (Cao et al., NDSS 2021) trusts.

A defense that needs the server to train (``fltrust``) asks for a root set of some size through
:meth:`RootDataset.server_update`; only then are the rows drawn, and the run's evaluation set may
change (see below). The root set is held-out data, never a row of a client's partition: rows of
the test split (clients train on partitions of the training split).

Which test rows (drawn uniformly without replacement with a generator seeded by the run's
``seed``, so that another seed draws another root set):

1. when ``test-rows`` leaves at least ``size`` rows of the test split out of the evaluation set,
   the root set is drawn from those unevaluated rows and the evaluation set stays what every other
   defense is evaluated on;
2. otherwise it is drawn from the evaluation set, and those rows are left out of the run's
   evaluation (accuracy, attack metrics) so that the model is never scored on rows the server
   trained on: the run evaluates on ``size`` fewer rows than a run of another defense.

``config.json`` records which case applied, the size and the rows (:meth:`RootDataset.record`).

The server's update (:class:`RootTraining`) is local training exactly as a client's
(:func:`fl_poison.core.training.train_locally` with the run's epochs, batch size, optimizer,
learning rate, momentum and weight decay; no proximal term) from the round's global model on the
root set, flattened like the clients' updates (the float arrays of the global model, in order).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from fl_poison.core.config import ConfigError
from fl_poison.core.data import DataSpec, LabeledTensors, test_data, test_subset
from fl_poison.core.round_updates import UpdateLayout
from fl_poison.core.training import LocalTraining, train_locally

# Salts of the seed sequences (the run's seed first): the root rows, and the server's batch order.
ROOT_ROWS_SALT, ROOT_TRAINING_SALT = 7919, 7927
FROM_UNEVALUATED = "test rows outside the evaluation set (test-rows); the evaluation set is unchanged"
FROM_EVALUATED = "test rows of the evaluation set, left out of this run's evaluation"


@dataclass(frozen=True)
class RootSplit:
    """A root set drawn from the test split, and what the run evaluates on.

    Attributes
    ----------
    root : LabeledTensors
        The root set.
    evaluation : LabeledTensors
        The rows the run evaluates on.
    root_rows : tuple[int, ...]
        The root set's rows of the test split (sorted).
    evaluation_rows : tuple[int, ...]
        The evaluation set's rows of the test split (sorted).
    source : str
        :data:`FROM_UNEVALUATED` or :data:`FROM_EVALUATED`.
    """

    root: LabeledTensors
    evaluation: LabeledTensors
    root_rows: tuple[int, ...]
    evaluation_rows: tuple[int, ...]
    source: str


def largest_root_set(test_split_rows: int, evaluated_rows: int) -> int:
    """The largest root set a test split allows: all unevaluated rows, or all evaluated rows but one.

    Parameters
    ----------
    test_split_rows : int
        Rows of the test split.
    evaluated_rows : int
        Rows of it the run evaluates on.
    """
    return max(test_split_rows - evaluated_rows, evaluated_rows - 1)


def draw_root_rows(
    test_split_rows: int, evaluated: tuple[int, ...], size: int, seed: int
) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """The root rows, the evaluation rows and the case (see the module docstring), from row counts alone.

    Parameters
    ----------
    test_split_rows : int
        Rows of the test split.
    evaluated : tuple[int, ...]
        The rows the run would evaluate on without a root set (sorted).
    size : int
        Rows of the root set.
    seed : int
        The run's seed.

    Raises
    ------
    ConfigError
        Naming ``fltrust-root-size`` when the split cannot hold ``size`` rows (see :func:`largest_root_set`).
    """
    largest = largest_root_set(test_split_rows, len(evaluated))
    if not 1 <= size <= largest:
        raise ConfigError.bad_value(
            "fltrust-root-size",
            size,
            f"an integer between 1 and {largest} (the test split holds {test_split_rows} rows, {len(evaluated)} of them "
            "evaluated; the root set comes from the unevaluated ones or leaves at least one to evaluate on)",
        )
    generator = np.random.default_rng([seed, ROOT_ROWS_SALT])
    chosen = set(evaluated)
    unevaluated = [row for row in range(test_split_rows) if row not in chosen]
    if size <= len(unevaluated):
        picks = generator.choice(len(unevaluated), size=size, replace=False)
        return tuple(sorted(unevaluated[int(i)] for i in picks)), evaluated, FROM_UNEVALUATED
    picks = generator.choice(len(evaluated), size=size, replace=False)
    root = tuple(sorted(evaluated[int(i)] for i in picks))
    taken = set(root)
    return root, tuple(row for row in evaluated if row not in taken), FROM_EVALUATED


def split_root_set(spec: DataSpec, size: int, seed: int) -> RootSplit:
    """Draw a root set of ``size`` rows from ``spec``'s test split (see the module docstring).

    Parameters
    ----------
    spec : DataSpec
        The run's data settings (its source and ``test-rows``).
    size : int
        Rows of the root set.
    seed : int
        The run's seed.

    Raises
    ------
    ConfigError
        Naming ``fltrust-root-size`` when the test split cannot hold the root set.
    """
    split = test_data(replace(spec, test_rows=0))
    evaluated = test_subset(spec.test_rows, len(split))
    evaluation_rows = tuple(range(len(split))) if evaluated is None else tuple(evaluated)
    root_rows, evaluation_rows, source = draw_root_rows(len(split), evaluation_rows, size, seed)
    return RootSplit(
        root=split.rows(root_rows),
        evaluation=split.rows(evaluation_rows),
        root_rows=root_rows,
        evaluation_rows=evaluation_rows,
        source=source,
    )


class RootTraining:
    """The server's update on the root set from a round's global model (FLTrust's g0).

    Parameters
    ----------
    model : nn.Module
        A model of the run's architecture, used only for this training.
    root : LabeledTensors
        The root set.
    training : LocalTraining
        The clients' local training settings.
    device : torch.device
        Where to train.
    seed : int
        The run's seed; round t's batch order is seeded with ``(seed, salt, t)``, as a client's is
        with its seed, the round and its partition id.
    """

    def __init__(
        self, model: nn.Module, root: LabeledTensors, training: LocalTraining, device: torch.device, seed: int
    ) -> None:
        self.model = model
        self.root = root
        self.training = training
        self.device = device
        self.seed = seed

    def __call__(self, layout: UpdateLayout, server_round: int) -> torch.Tensor:
        """Train from ``layout``'s global model on the root set; the update as a float64 CPU vector of ``layout.size``.

        Parameters
        ----------
        layout : UpdateLayout
            The round's global model and the order of its float arrays in an update row.
        server_round : int
            The round (seeds the batch order).
        """
        start = {slot.name: torch.from_numpy(np.array(layout.global_arrays[slot.name])) for slot in layout.slots}
        self.model.load_state_dict(start, strict=False)
        batch_seed = int(np.random.SeedSequence([self.seed, ROOT_TRAINING_SALT, server_round]).generate_state(1)[0])
        train_locally(self.model, self.root, self.training, self.device, batch_seed)
        trained = self.model.state_dict()
        update = torch.empty(layout.size, dtype=torch.float64)
        for slot in layout.slots:
            after = trained[slot.name].detach().to("cpu", torch.float64).reshape(-1)
            update[slot.start : slot.stop] = after - start[slot.name].to(torch.float64).reshape(-1)
        return update


class RootDataset:
    """Draws the root set when a defense asks for the server's update, and says what the run evaluates on.

    Parameters
    ----------
    spec : DataSpec
        The run's data settings.
    test_set : LabeledTensors
        The evaluation set without a root set (``test_data(spec)``).
    build_model : Callable[[], nn.Module]
        Builds a fresh model of the run's architecture.
    training : LocalTraining
        The clients' local training settings.
    device : torch.device
        Where the server trains.
    seed : int
        The run's seed.
    """

    def __init__(
        self,
        spec: DataSpec,
        test_set: LabeledTensors,
        build_model: Callable[[], nn.Module],
        training: LocalTraining,
        device: torch.device,
        seed: int,
    ) -> None:
        self.spec = spec
        self.test_set = test_set
        self.build_model = build_model
        self.training = training
        self.device = device
        self.seed = seed
        self.split: RootSplit | None = None

    def server_update(self, size: int) -> Callable[[UpdateLayout, int], torch.Tensor]:
        """Draw a root set of ``size`` rows (once per run) and return the server's update function on it.

        Parameters
        ----------
        size : int
            Rows of the root set.

        Raises
        ------
        ConfigError
            Naming ``fltrust-root-size`` when the test split cannot hold it.
        ValueError
            When a root set of another size was drawn before.
        """
        if self.split is None:
            self.split = split_root_set(self.spec, size, self.seed)
        elif len(self.split.root_rows) != size:
            raise ValueError(f"a root set of {len(self.split.root_rows)} rows was drawn; asked for {size}")
        return RootTraining(self.build_model(), self.split.root, self.training, self.device, self.seed)

    @property
    def evaluation_set(self) -> LabeledTensors:
        """What the run evaluates on: the test set, less the root rows when they were drawn from it."""
        return self.test_set if self.split is None else self.split.evaluation

    def record(self) -> Mapping[str, object] | None:
        """The root set for ``config.json`` (None when no defense asked for one)."""
        if self.split is None:
            return None
        labels = self.split.root.y.tolist()
        return {
            "size": len(self.split.root_rows),
            "drawn_from": self.split.source,
            "draw": "uniform without replacement, numpy default_rng([seed, 7919])",
            "rows": list(self.split.root_rows),
            "evaluation_rows": len(self.split.evaluation_rows),
            "class_counts": {str(label): labels.count(label) for label in sorted(set(labels))},
            "training": "the clients' local training (epochs, batch size, optimizer, learning rate, momentum, weight decay)",
        }
