"""The core settings and the typed experiment configuration every process parses once.

Settings arrive as a flat mapping of kebab-case keys (Flower's run config, ``fl-poison run
KEY=VALUE``, a sweep cell, a node config). The settings of the core (data, model, training,
sampling, threat model, results) are declared here as :data:`CORE_SETTINGS` and become typed
attributes of :class:`ExperimentConfig`. Each attack and defense declares its own settings in its
module; their values live in :attr:`ExperimentConfig.options` and are read with
``config[SETTING]``. Parsing (:func:`fl_poison.core.catalogue.parse_config`) needs the catalogue
of registered algorithms, because the allowed ``attack``, ``update-attack`` and ``strategy``
names come from it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar, cast

from fl_poison.core.client_weighting import CAPPED, WEIGHTINGS
from fl_poison.core.settings import (
    ConfigError,
    Setting,
    auto_or,
    boolean,
    choice,
    clients_per_round,
    folder_path,
    id_list,
    integer,
    number_in,
    positive_number,
    run_name,
    text,
)

T = TypeVar("T")

DATASET_ALIASES = {
    "mnist": "ylecun/mnist",
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
}
BUILTIN_DATASETS = ("digits",)
PARTITIONINGS = ("iid", "dirichlet", "pathological", "random-subsets")
MODELS = ("auto", "small-cnn", "ada-cnn", "cnn3", "resnet18")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
NO_ATTACK = "none"
AUTO_UPDATE_ATTACK = "auto"
# Placeholders the catalogue fills with the registered names (see catalogue.settings_of).
ATTACK_NAMES, UPDATE_ATTACK_NAMES, STRATEGY_NAMES = "{attacks}", "{update-attacks}", "{strategies}"
# A Hugging Face hub id as the hub accepts them: owner/name, each part letters, digits, '_', '-'
# and '.', starting with a letter or a digit (so no '..' path and nothing a shell reads).
HUB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
# Bounds of the local optimizer. A learning rate above 1e3 moves a weight by more than a thousand
# for a unit gradient: no model of the lab trains with it, and a few such steps (times SGD's
# momentum accumulation) leave float32's range (3.4e38), so such a value is a typo (1e300) or a
# unit mix-up, never an experiment. Heavy-ball momentum must stay below 1 for the velocity to
# decay, and a weight decay above 1 shrinks weights by more than the learning rate per step.
MAX_LEARNING_RATE = 1e3
# Waits longer than a week are typos (a timeout of 1e300 s overflows the clocks Flower adds it to).
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0


def dataset_source(key: str, value: object) -> str:
    """digits, an alias (mnist, fashion-mnist, cifar10), a hub id ``owner/name`` or a local folder."""
    name = text(key, value)
    allowed = (
        "digits | mnist | fashion-mnist | cifar10 | a Hugging Face hub id 'owner/name' "
        "| an existing local dataset folder"
    )
    lowered = name.lower()
    if lowered in BUILTIN_DATASETS or lowered in DATASET_ALIASES:
        return lowered
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return os.path.abspath(expanded)
    if name.startswith(("/", ".", "~")):
        raise ConfigError(f"{key}: local dataset path {name!r} does not exist; allowed: {allowed}")
    if HUB_ID_PATTERN.fullmatch(name) and ".." not in name:
        return name
    raise ConfigError.bad_value(key, value, allowed)


def algorithm_name(key: str, value: object) -> str:
    """A registered algorithm name, lower-cased; the catalogue checks that it exists."""
    return text(key, value).lower()


CORE_SETTINGS: tuple[Setting[Any], ...] = (
    Setting(
        "dataset",
        "digits",
        "digits (built in), mnist, fashion-mnist, cifar10, any hub id owner/name, or a local dataset folder.",
        dataset_source,
    ),
    Setting("image-column", "auto", "Image column of a hub/local dataset ('auto' finds image or img).", text),
    Setting("label-column", "label", "Label column of a hub/local dataset.", text),
    Setting(
        "test-fraction",
        0.2,
        "Share of the training split held out for testing when the dataset has no test split.",
        number_in(0, 1, False, False),
    ),
    Setting(
        "partitioning",
        "iid",
        "How the training split is divided among clients: iid, dirichlet, pathological or random-subsets.",
        choice(*PARTITIONINGS),
    ),
    Setting(
        "dirichlet-alpha", 0.5, "Concentration of the Dirichlet label skew (smaller = more skewed).", positive_number
    ),
    Setting(
        "min-partition-size",
        10,
        "Dirichlet partitioning redraws until every client has at least this many samples.",
        integer(0),
    ),
    Setting("classes-per-client", 2, "Classes per client under pathological partitioning.", integer(1)),
    Setting(
        "samples-per-client",
        500,
        "Rows each client draws at random (clients may share rows) under random-subsets partitioning.",
        integer(1),
    ),
    Setting(
        "train-rows",
        0,
        "Training rows used, 0 = all: a random subset (drawn with seed) taken before partitioning, to scale a study down.",
        integer(0),
    ),
    Setting(
        "test-rows",
        0,
        "Test rows the server evaluates on, 0 = all: one fixed random subset, the same for every seed and run.",
        integer(0),
    ),
    Setting("seed", 42, "Seed for partitions, model initialisation, client sampling and local shuffling.", integer(0)),
    Setting("model", "auto", "auto (per dataset), small-cnn, ada-cnn, cnn3 or resnet18.", choice(*MODELS)),
    Setting(
        "num-clients",
        10,
        "Number of clients (partitions); fl-poison run starts this many virtual SuperNodes.",
        integer(1),
    ),
    Setting(
        "clients-per-round",
        1.0,
        "Clients trained per round: a count (integer) or a fraction of num-clients (float in (0, 1]).",
        clients_per_round,
    ),
    Setting("num-rounds", 20, "Federated rounds.", integer(1)),
    Setting("local-epochs", 2, "Local epochs per round.", integer(1)),
    Setting("batch-size", 32, "Local mini-batch size.", integer(1)),
    Setting("learning-rate", 0.05, "Local learning rate.", number_in(0, MAX_LEARNING_RATE, False, True)),
    Setting("optimizer", "sgd", "Local optimizer: sgd or adam.", choice(*OPTIMIZERS)),
    Setting("momentum", 0.9, "SGD momentum.", number_in(0, 1, True, False)),
    Setting("weight-decay", 0.0, "L2 weight decay of the local optimizer.", number_in(0, 1, True, True)),
    Setting("strategy", "fedavg", "Server aggregation rule: " + STRATEGY_NAMES + ".", algorithm_name),
    Setting(
        "client-weighting",
        CAPPED,
        "Where a client's weight in an average comes from: capped (its reported example count capped at its "
        "partition's true size, its declared size at join, or weight-cap-multiple × the round's median report), "
        "reported (trusted as sent) or uniform.",
        choice(*WEIGHTINGS),
    ),
    Setting(
        "weight-cap-multiple",
        2.0,
        "Under capped weighting, the cap of a client whose size the server cannot justify: this multiple of the "
        "round's median reported count.",
        number_in(1, 1e6, True, True),
    ),
    Setting("device", "auto", "auto (CUDA when the process sees a GPU), cpu or cuda.", choice(*DEVICES)),
    Setting("eval-batch-size", 512, "Batch size of centralized evaluation.", integer(1)),
    Setting(
        "round-timeout",
        600.0,
        "Seconds the server waits for the replies of one round.",
        number_in(0, MAX_TIMEOUT_SECONDS, False, True),
    ),
    Setting(
        "node-wait-timeout",
        120.0,
        "Seconds the server waits for all num-clients nodes to connect.",
        number_in(0, MAX_TIMEOUT_SECONDS, False, True),
    ),
    Setting(
        "output-dir",
        "results",
        "Folder that receives one result folder per run (relative paths resolve against the SuperLink's working directory; fl-poison run makes them absolute).",
        folder_path,
    ),
    Setting("run-name", "", "Result folder name; empty = timestamp plus a short config hash.", run_name),
    Setting("save-model", True, "Save the final global weights (model.pt).", boolean),
    Setting(
        "plot-round",
        0,
        "Round whose update norms before/after the defense are plotted; 0 = the last round.",
        integer(0),
    ),
    Setting(
        "num-malicious",
        0,
        "Number of malicious clients, drawn from seed (ignored when malicious-ids is set).",
        integer(0),
    ),
    Setting(
        "malicious-ids", "", 'Partition ids of the malicious clients, e.g. "3,4" (overrides num-malicious).', id_list
    ),
    Setting("attack", NO_ATTACK, "Attack of malicious clients: none, " + ATTACK_NAMES + ".", algorithm_name),
    Setting(
        "update-attack",
        AUTO_UPDATE_ATTACK,
        "Update transform of malicious clients after training: none, "
        + UPDATE_ATTACK_NAMES
        + ", or auto (the attack's own choice: train-and-scale for ada, none otherwise).",
        algorithm_name,
    ),
    Setting("attack-start-round", 1, "First round in which malicious clients attack.", integer(1)),
    Setting(
        "attack-every",
        1,
        "A malicious client attacks every k-th time it is sampled (from attack-start-round on).",
        integer(1),
    ),
    Setting(
        "attacker-epochs",
        "auto",
        "Local epochs of a malicious client in its attack rounds (every local training its attack does); "
        "auto = local-epochs.",
        auto_or(integer(1), "an integer >= 1"),
    ),
)

# The settings that say how an attacker behaves (not who attacks, nor anything the server
# decides): a compromised SuperNode's operator may set these, and every attack's own settings,
# in its node config.
THREAT_BEHAVIOUR_KEYS: tuple[str, ...] = (
    "attack",
    "update-attack",
    "attack-start-round",
    "attack-every",
    "attacker-epochs",
)


# The settings that existed when cell fingerprints were first kept across sessions (sweeps resume by
# them). They always enter the fingerprint; a setting added since enters it only when set away from its
# default, so that adding a setting never changes the id of a cell already run.
FINGERPRINT_V1_KEYS = frozenset(
    (
        "ada-knowledge",
        "ada-patience",
        "ada-start",
        "attack",
        "attack-every",
        "attack-start-round",
        "batch-size",
        "blend-alpha",
        "bulyan-selection",
        "classes-per-client",
        "client-weighting",
        "clients-per-round",
        "clip-norm",
        "clip-wrap",
        "dataset",
        "device",
        "dirichlet-alpha",
        "eval-batch-size",
        "image-column",
        "inflation-factor",
        "krum-f",
        "krum-m",
        "label-column",
        "learning-rate",
        "local-epochs",
        "loss-percentile",
        "malicious-ids",
        "min-partition-size",
        "model",
        "momentum",
        "node-wait-timeout",
        "norm-bound",
        "num-clients",
        "num-malicious",
        "num-rounds",
        "optimizer",
        "output-dir",
        "partitioning",
        "plot-round",
        "poison-rate",
        "proximal-mu",
        "round-timeout",
        "run-name",
        "samples-per-client",
        "save-model",
        "scale-factor",
        "seed",
        "source-class",
        "strategy",
        "target-class",
        "test-fraction",
        "trigger-image",
        "trigger-position",
        "trigger-size",
        "trigger-value",
        "trim-beta",
        "update-attack",
        "weight-cap-multiple",
        "weight-decay",
    )
)


@dataclass(frozen=True)
class ExperimentConfig:
    """The resolved settings of one experiment.

    Core settings are attributes (the key in snake_case); the settings an attack or a defense
    declares are read with ``config[SETTING]``. ``resolved_update_attack`` is ``update-attack``
    with ``auto`` replaced by the attack's own choice.
    """

    dataset: str
    image_column: str
    label_column: str
    test_fraction: float
    partitioning: str
    dirichlet_alpha: float
    min_partition_size: int
    classes_per_client: int
    samples_per_client: int
    train_rows: int
    test_rows: int
    seed: int
    model: str
    num_clients: int
    clients_per_round: int | float
    num_rounds: int
    local_epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str
    momentum: float
    weight_decay: float
    strategy: str
    client_weighting: str
    weight_cap_multiple: float
    device: str
    eval_batch_size: int
    round_timeout: float
    node_wait_timeout: float
    output_dir: str
    run_name: str
    save_model: bool
    plot_round: int
    num_malicious: int
    malicious_ids: tuple[int, ...]
    attack: str
    update_attack: str
    attack_start_round: int
    attack_every: int
    attacker_epochs: int | None
    resolved_update_attack: str = NO_ATTACK
    options: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    at_default: frozenset[str] = frozenset()

    def __getitem__(self, setting: Setting[T]) -> T:
        """The value of an algorithm's ``setting`` (its key must belong to the catalogue parsed with)."""
        if setting.key not in self.options:
            raise KeyError(f"{setting.key}: not a setting of this configuration (is its algorithm registered?)")
        return cast(T, self.options[setting.key])

    @property
    def sampled_per_round(self) -> int:
        """Clients trained per round, as a count (a fraction is rounded, at least 1)."""
        if isinstance(self.clients_per_round, int):
            return self.clients_per_round
        return max(1, round(self.clients_per_round * self.num_clients))

    @property
    def attackers(self) -> int:
        """The number of malicious clients the run config names (``malicious-ids`` or ``num-malicious``)."""
        return len(self.malicious_ids) or self.num_malicious

    def to_dict(self) -> dict[str, Any]:
        """The settings as a kebab-case mapping, as they would be written in a run config."""
        values = {setting.key: _as_config_value(getattr(self, setting.field)) for setting in CORE_SETTINGS}
        values.update({key: _as_config_value(value) for key, value in self.options.items()})
        return values

    def fingerprint(self) -> str:
        """A short hash of the settings that shape the experiment (not where results go).

        Settings outside :data:`FINGERPRINT_V1_KEYS` count only when they differ from their
        default, so a cell keeps its id (and a sweep its finished cells) when settings are added.
        """
        relevant = {
            key: value
            for key, value in self.to_dict().items()
            if key not in ("output-dir", "run-name") and (key in FINGERPRINT_V1_KEYS or key not in self.at_default)
        }
        digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
        return digest[:8]


def _as_config_value(value: object) -> object:
    """A value as Flower's run config writes it (None → "auto", id tuples → "3,4")."""
    if value is None:
        return "auto"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return value


def check_core_relations(config: ExperimentConfig) -> None:
    """The relations between core settings; raises :class:`ConfigError` naming the key at fault."""
    if config.num_malicious > config.num_clients:
        raise ConfigError.bad_value("num-malicious", config.num_malicious, f"0 .. num-clients ({config.num_clients})")
    outside = [pid for pid in config.malicious_ids if pid >= config.num_clients]
    if outside:
        raise ConfigError.bad_value(
            "malicious-ids", ",".join(map(str, config.malicious_ids)), f"partition ids 0 .. {config.num_clients - 1}"
        )
    if config.plot_round > config.num_rounds:
        raise ConfigError.bad_value("plot-round", config.plot_round, f"0 .. num-rounds ({config.num_rounds})")
    if config.sampled_per_round > config.num_clients:
        raise ConfigError(
            f"clients-per-round: bad value {config.clients_per_round!r}; allowed: a count "
            f"between 1 and num-clients ({config.num_clients}) or a fraction in (0, 1]"
        )
