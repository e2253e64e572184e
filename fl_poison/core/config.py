"""One typed, validated experiment configuration shared by the ServerApp, the ClientApp and the CLI.

Settings arrive as a flat mapping of kebab-case keys (Flower's run config, ``fl-poison run
KEY=VALUE``, a sweep cell). :func:`parse_config` casts every value, checks it and the relations
between values, and returns a frozen :class:`ExperimentConfig`. Any problem raises
:class:`ConfigError` whose message is one line: the key, the bad value and what is allowed.
The defaults live in ``pyproject.toml`` (``[tool.flwr.app.config]``) and in :data:`SETTINGS`;
a test keeps the two identical.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DATASET_ALIASES = {
    "mnist": "ylecun/mnist",
    "fashion-mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
}
BUILTIN_DATASETS = ("digits",)
PARTITIONINGS = ("iid", "dirichlet", "pathological", "random-subsets")
MODELS = ("auto", "small-cnn", "ada-cnn", "cnn3", "resnet18")
OPTIMIZERS = ("sgd", "adam")
STRATEGIES = ("fedavg", "fedprox", "krum", "multikrum", "norm-clip", "loss-filter", "median", "trimmed-mean", "bulyan")
CLIP_WRAPPABLE = tuple(name for name in STRATEGIES if name != "norm-clip")
DEVICES = ("auto", "cpu", "cuda")
# The faulty NaN client is "nan-weights", not "nan": Flower re-reads run-config strings as TOML,
# turns "nan" into a float NaN, and then fails every ClientApp call because NaN != NaN.
DATA_ATTACKS = ("none", "label-flip-random", "label-flip", "blend", "badnets", "dba", "ada", "nan-weights")
UPDATE_ATTACKS = ("auto", "none", "scaling", "train-and-scale")
TRIGGER_POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")
SOURCE_TARGETED_ATTACKS = ("label-flip", "ada")
BACKDOOR_ATTACKS = ("blend", "badnets", "dba")


class ConfigError(ValueError):
    """A setting is unknown or has a value that is not allowed; the message is one line."""

    @classmethod
    def bad_value(cls, key: str, value: object, allowed: str) -> "ConfigError":
        """Build the standard message: ``key: bad value 'v'; allowed: ...``."""
        return cls(f"{key}: bad value {value!r}; allowed: {allowed}")


@dataclass(frozen=True)
class Setting:
    """One run-config key.

    Parameters
    ----------
    key : str
        The kebab-case name used on the command line and in ``pyproject.toml``.
    default : bool | int | float | str
        The value used when the key is not given.
    help : str
        One sentence for the README table and ``fl-poison settings``.
    cast : Callable[[str, object], object]
        Converts the raw value and checks it on its own; raises :class:`ConfigError`.
    """

    key: str
    default: bool | int | float | str
    help: str
    cast: Callable[[str, object], object]

    @property
    def field(self) -> str:
        """The attribute name on :class:`ExperimentConfig`."""
        return self.key.replace("-", "_")


def _as_int(key: str, value: object, minimum: int | None = None) -> int:
    if isinstance(value, bool):
        raise ConfigError.bad_value(key, value, "an integer")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError.bad_value(key, value, "an integer") from None
    if not isinstance(value, int):
        raise ConfigError.bad_value(key, value, "an integer")
    if minimum is not None and value < minimum:
        raise ConfigError.bad_value(key, value, f"an integer >= {minimum}")
    return value


def _as_float(key: str, value: object) -> float:
    if isinstance(value, bool):
        raise ConfigError.bad_value(key, value, "a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError.bad_value(key, value, "a number") from None
    if not math.isfinite(number):
        raise ConfigError.bad_value(key, value, "a finite number")
    return number


def integer(minimum: int) -> Callable[[str, object], int]:
    """A validator for integers ``>= minimum``."""
    return lambda key, value: _as_int(key, value, minimum)


def positive_number(key: str, value: object) -> float:
    """A validator for numbers ``> 0``."""
    number = _as_float(key, value)
    if number <= 0:
        raise ConfigError.bad_value(key, value, "a number > 0")
    return number


def non_negative_number(key: str, value: object) -> float:
    """A validator for numbers ``>= 0``."""
    number = _as_float(key, value)
    if number < 0:
        raise ConfigError.bad_value(key, value, "a number >= 0")
    return number



def number_in(low: float, high: float, low_included: bool, high_included: bool) -> Callable[[str, object], float]:
    """A validator for numbers in an interval, e.g. ``number_in(0, 1, False, True)`` for (0, 1]."""
    allowed = f"a number in {'[' if low_included else '('}{low:g}, {high:g}{']' if high_included else ')'}"

    def cast(key: str, value: object) -> float:
        number = _as_float(key, value)
        above = number >= low if low_included else number > low
        below = number <= high if high_included else number < high
        if not (above and below):
            raise ConfigError.bad_value(key, value, allowed)
        return number

    return cast


def choice(*names: str) -> Callable[[str, object], str]:
    """A validator for one of ``names`` (case-insensitive)."""

    def cast(key: str, value: object) -> str:
        text = str(value).strip().lower()
        if text not in names:
            raise ConfigError.bad_value(key, value, " | ".join(names))
        return text

    return cast


def boolean(key: str, value: object) -> bool:
    """A validator for booleans; accepts true/false, yes/no, 1/0."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise ConfigError.bad_value(key, value, "true | false")


def text(key: str, value: object) -> str:
    """A validator for free text."""
    if isinstance(value, (dict, list)):
        raise ConfigError.bad_value(key, value, "a string")
    return str(value).strip()


def run_name(key: str, value: object) -> str:
    """A validator for a result folder name: no path separators."""
    name = text(key, value)
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ConfigError.bad_value(key, value, "a folder name without '/' (empty = automatic)")
    return name


def clients_per_round(key: str, value: object) -> int | float:
    """A count (an integer >= 1, returned as int) or a fraction of all clients (a float in (0, 1])."""
    allowed = "a count >= 1 (integer) or a fraction in (0, 1] (float)"
    if isinstance(value, bool):
        raise ConfigError.bad_value(key, value, allowed)
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        return _as_int(key, value, minimum=1)
    number = _as_float(key, value)
    if 0 < number <= 1:
        return number
    if number > 1 and number.is_integer():
        return int(number)
    raise ConfigError.bad_value(key, value, allowed)


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
    parts = name.split("/")
    if len(parts) == 2 and all(parts):
        return name
    raise ConfigError.bad_value(key, value, allowed)



def auto_or(validator: Callable[[str, object], object], allowed: str) -> Callable[[str, object], object]:
    """A validator accepting ``auto`` (returned as None) or whatever ``validator`` accepts."""

    def cast(key: str, value: object) -> object:
        if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
            return None
        try:
            return validator(key, value)
        except ConfigError:
            raise ConfigError.bad_value(key, value, f"auto | {allowed}") from None

    return cast





def class_or_all(key: str, value: object) -> int:
    """A class index (integer >= 0) or ``all`` (returned as -1)."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return -1
    return _as_int(key, value, minimum=0)


def id_list(key: str, value: object) -> tuple[int, ...]:
    """Comma-separated partition ids (``"3,4"``), sorted and without duplicates; empty = none."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError.bad_value(key, value, 'comma-separated partition ids such as "3,4"')
    parts = [part.strip() for part in value.split(",") if part.strip()]
    try:
        ids = sorted({int(part) for part in parts})
    except ValueError:
        raise ConfigError.bad_value(key, value, 'comma-separated partition ids such as "3,4"') from None
    if any(pid < 0 for pid in ids):
        raise ConfigError.bad_value(key, value, "partition ids >= 0")
    return tuple(ids)


def readable_image(key: str, value: object) -> str:
    """An image file that PIL can open, or empty for the built-in trigger."""
    path = text(key, value)
    if not path:
        return ""
    expanded = os.path.abspath(os.path.expanduser(path))
    try:
        from PIL import Image

        with Image.open(expanded) as image:
            image.verify()
    except (OSError, SyntaxError, ValueError):
        raise ConfigError(f"{key}: cannot read image {path!r}; allowed: a readable image file (PNG, JPEG, ...)") from None
    return expanded


SETTINGS: tuple[Setting, ...] = (
    Setting("dataset", "digits", "digits (built in), mnist, fashion-mnist, cifar10, any hub id owner/name, or a local dataset folder.", dataset_source),
    Setting("image-column", "auto", "Image column of a hub/local dataset ('auto' finds image or img).", text),
    Setting("label-column", "label", "Label column of a hub/local dataset.", text),
    Setting("test-fraction", 0.2, "Share of the training split held out for testing when the dataset has no test split.", number_in(0, 1, False, False)),
    Setting("partitioning", "iid", "How the training split is divided among clients: iid, dirichlet, pathological or random-subsets.", choice(*PARTITIONINGS)),
    Setting("dirichlet-alpha", 0.5, "Concentration of the Dirichlet label skew (smaller = more skewed).", positive_number),
    Setting("min-partition-size", 10, "Dirichlet partitioning redraws until every client has at least this many samples.", integer(0)),
    Setting("classes-per-client", 2, "Classes per client under pathological partitioning.", integer(1)),
    Setting("samples-per-client", 500, "Rows each client draws at random (clients may share rows) under random-subsets partitioning.", integer(1)),
    Setting("seed", 42, "Seed for partitions, model initialisation, client sampling and local shuffling.", integer(0)),
    Setting("model", "auto", "auto (per dataset), small-cnn, ada-cnn, cnn3 or resnet18.", choice(*MODELS)),
    Setting("num-clients", 10, "Number of clients (partitions); fl-poison run starts this many virtual SuperNodes.", integer(1)),
    Setting("clients-per-round", 1.0, "Clients trained per round: a count (integer) or a fraction of num-clients (float in (0, 1]).", clients_per_round),
    Setting("num-rounds", 20, "Federated rounds.", integer(1)),
    Setting("local-epochs", 2, "Local epochs per round.", integer(1)),
    Setting("batch-size", 32, "Local mini-batch size.", integer(1)),
    Setting("learning-rate", 0.05, "Local learning rate.", positive_number),
    Setting("optimizer", "sgd", "Local optimizer: sgd or adam.", choice(*OPTIMIZERS)),
    Setting("momentum", 0.9, "SGD momentum.", non_negative_number),
    Setting("weight-decay", 0.0, "L2 weight decay of the local optimizer.", non_negative_number),
    Setting("strategy", "fedavg", "Server strategy: " + ", ".join(STRATEGIES) + ".", choice(*STRATEGIES)),
    Setting("proximal-mu", 0.1, "FedProx proximal weight mu (used by strategy=fedprox).", non_negative_number),
    Setting("device", "auto", "auto (CUDA when the process sees a GPU), cpu or cuda.", choice(*DEVICES)),
    Setting("eval-batch-size", 512, "Batch size of centralized evaluation.", integer(1)),
    Setting("round-timeout", 600.0, "Seconds the server waits for the replies of one round.", positive_number),
    Setting("node-wait-timeout", 120.0, "Seconds the server waits for all num-clients nodes to connect.", positive_number),
    Setting("output-dir", "results", "Folder that receives one result folder per run (relative paths resolve against the SuperLink's working directory; fl-poison run makes them absolute).", text),
    Setting("run-name", "", "Result folder name; empty = timestamp plus a short config hash.", run_name),
    Setting("save-model", True, "Save the final global weights (model.pt).", boolean),
    Setting("num-malicious", 0, "Number of malicious clients, drawn from seed (ignored when malicious-ids is set).", integer(0)),
    Setting("malicious-ids", "", 'Partition ids of the malicious clients, e.g. "3,4" (overrides num-malicious).', id_list),
    Setting("attack", "none", "Data attack of malicious clients: " + ", ".join(DATA_ATTACKS) + ".", choice(*DATA_ATTACKS)),
    Setting("update-attack", "auto", "Update transform of malicious clients: none, scaling (model replacement), train-and-scale, or auto (train-and-scale for ada, none otherwise).", choice(*UPDATE_ATTACKS)),
    Setting("attack-start-round", 1, "First round in which malicious clients attack.", integer(1)),
    Setting("attack-every", 1, "A malicious client attacks every k-th time it is sampled (from attack-start-round on).", integer(1)),
    Setting("source-class", 2, "Source class of label-flip and ada (label-flip also takes 'all' for all-to-one).", class_or_all),
    Setting("target-class", 0, "Target class of label-flip and of the backdoors.", integer(0)),
    Setting("poison-rate", 0.5, "Share of the attacker's training samples that are poisoned (label-flip injection rate alpha; backdoor poisoning rate).", number_in(0, 1, False, True)),
    Setting("blend-alpha", 0.2, "Weight of the trigger image in the blend backdoor: x' = (1 - a) x + a trigger.", number_in(0, 1, False, True)),
    Setting("trigger-image", "", "Image file used as the blend trigger (resized to the input size); empty = a built-in one-pixel checkerboard.", readable_image),
    Setting("trigger-size", "auto", "Side in pixels of the BadNets patch and of the DBA global trigger; auto = scaled to the input (6 px at 32 px, 5 px at 28 px, 3 px at 8 px).", auto_or(integer(1), "an integer >= 1")),
    Setting("trigger-value", 1.0, "Pixel value of the BadNets / DBA trigger in [0, 1] (1 = white; DBA on colour images stamps red).", number_in(0, 1, True, True)),
    Setting("trigger-position", "bottom-right", "Corner of the BadNets patch and DBA trigger.", choice(*TRIGGER_POSITIONS)),
    Setting("scale-factor", "auto", "Scaling attack gamma in X = gamma (L - G) + G; auto = clients per round / attackers sampled this round.", auto_or(positive_number, "a number > 0")),
    Setting("norm-bound", "auto", "Train-and-scale target norm Q; auto = the mean norm of honest updates the attacker computes itself.", auto_or(positive_number, "a number > 0")),
    Setting("ada-knowledge", "full", "ADA target choice: full (latent class means) or partial (FLAME last-layer gradients).", choice("full", "partial")),
    Setting("ada-start", "round", "When ADA attacks: 'round' (from attack-start-round) or 'converged' (global loss on own data flat for ada-patience rounds).", choice("round", "converged")),
    Setting("krum-f", "auto", "Attackers f assumed by krum, multikrum and bulyan; auto = num-malicious (at least 1).", auto_or(integer(1), "an integer >= 1")),
    Setting("krum-m", "auto", "Updates multikrum keeps; auto = clients per round - f.", auto_or(integer(1), "an integer >= 1")),
    Setting("clip-norm", "auto", "Norm bound of norm-clip; auto = the median update norm of the round.", auto_or(positive_number, "a number > 0")),
    Setting("clip-wrap", "fedavg", "Strategy that aggregates the clipped updates of norm-clip: " + ", ".join(CLIP_WRAPPABLE) + ".", choice(*CLIP_WRAPPABLE)),
    Setting("loss-percentile", 75.0, "loss-filter drops clients whose reported loss is above this percentile of the round's losses.", number_in(0, 100, False, True)),
    Setting("trim-beta", 0.2, "Fraction trimmed at each end, per coordinate, by trimmed-mean.", number_in(0, 0.5, True, False)),
    Setting("plot-round", 0, "Round whose update norms before/after the defense are plotted; 0 = the last round.", integer(0)),
    Setting("ada-patience", 10, "Rounds without a decrease of the global model's loss on the attacker's data before ADA calls it converged.", integer(1)),
)

SETTINGS_BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}

# The settings of what an attacker does (not who attacks, nor anything the server decides): the
# operator of a compromised SuperNode may set these in its node config to override the run's.
NODE_ATTACK_KEYS: tuple[str, ...] = (
    "attack", "update-attack", "attack-start-round", "attack-every", "source-class", "target-class",
    "poison-rate", "blend-alpha", "trigger-image", "trigger-size", "trigger-value", "trigger-position",
    "scale-factor", "norm-bound", "ada-knowledge", "ada-start", "ada-patience",
)


@dataclass(frozen=True)
class ExperimentConfig:
    """The resolved settings of one experiment; attribute names are the keys in snake_case."""

    dataset: str
    image_column: str
    label_column: str
    test_fraction: float
    partitioning: str
    dirichlet_alpha: float
    min_partition_size: int
    classes_per_client: int
    samples_per_client: int
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
    proximal_mu: float
    device: str
    eval_batch_size: int
    round_timeout: float
    node_wait_timeout: float
    output_dir: str
    run_name: str
    save_model: bool
    num_malicious: int
    malicious_ids: tuple[int, ...]
    attack: str
    update_attack: str
    attack_start_round: int
    attack_every: int
    source_class: int
    target_class: int
    poison_rate: float
    blend_alpha: float
    trigger_image: str
    trigger_size: int | None
    trigger_value: float
    trigger_position: str
    scale_factor: float | None
    norm_bound: float | None
    ada_knowledge: str
    ada_start: str
    krum_f: int | None
    krum_m: int | None
    clip_norm: float | None
    clip_wrap: str
    loss_percentile: float
    trim_beta: float
    plot_round: int
    ada_patience: int

    @property
    def sampled_per_round(self) -> int:
        """Clients trained per round, as a count (a fraction is rounded, at least 1)."""
        if isinstance(self.clients_per_round, int):
            return self.clients_per_round
        return max(1, round(self.clients_per_round * self.num_clients))

    @property
    def assumed_attackers(self) -> int:
        """f for krum, multikrum and bulyan: ``krum-f``, else the number of malicious clients (at least 1)."""
        if self.krum_f is not None:
            return self.krum_f
        return max(1, len(self.malicious_ids) or self.num_malicious)

    @property
    def krum_keep(self) -> int:
        """m, the updates multikrum keeps: ``krum-m``, else clients per round - f."""
        return self.krum_m if self.krum_m is not None else self.sampled_per_round - self.assumed_attackers

    @property
    def resolved_update_attack(self) -> str:
        """The update attack in force: ``auto`` means train-and-scale for ada and none otherwise."""
        if self.update_attack != "auto":
            return self.update_attack
        return "train-and-scale" if self.attack == "ada" else "none"

    def to_dict(self) -> dict[str, Any]:
        """The settings as a kebab-case mapping, as they would be written in a run config."""
        return {setting.key: _as_config_value(getattr(self, setting.field)) for setting in SETTINGS}

    def fingerprint(self) -> str:
        """A short hash of the settings that shape the experiment (not where results go)."""
        relevant = {
            key: value
            for key, value in self.to_dict().items()
            if key not in ("output-dir", "run-name")
        }
        digest = hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()
        return digest[:8]


def _as_config_value(value: object) -> object:
    """A field value as Flower's run config writes it (None → "auto", id tuples → "3,4")."""
    if value is None:
        return "auto"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return value


def parse_config(raw: Mapping[str, object]) -> ExperimentConfig:
    """Build a validated :class:`ExperimentConfig` from a flat kebab-case mapping.

    Parameters
    ----------
    raw : Mapping[str, object]
        Run config values (Flower's ``context.run_config`` or parsed ``KEY=VALUE`` pairs).
        Missing keys take their defaults.

    Raises
    ------
    ConfigError
        For an unknown key, a value that cannot be cast or is out of range, or settings that
        contradict each other.
    """
    unknown = sorted(set(raw) - set(SETTINGS_BY_KEY))
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown setting; allowed: {', '.join(SETTINGS_BY_KEY)}"
        )
    values: dict[str, object] = {}
    for setting in SETTINGS:
        given = raw.get(setting.key, setting.default)
        values[setting.field] = setting.cast(setting.key, given)
    config = ExperimentConfig(**values)  # type: ignore[arg-type]
    _check_relations(config)
    return config


def _check_relations(config: ExperimentConfig) -> None:
    if config.num_malicious > config.num_clients:
        raise ConfigError.bad_value(
            "num-malicious", config.num_malicious, f"0 .. num-clients ({config.num_clients})"
        )
    outside = [pid for pid in config.malicious_ids if pid >= config.num_clients]
    if outside:
        raise ConfigError.bad_value(
            "malicious-ids", ",".join(map(str, config.malicious_ids)), f"partition ids 0 .. {config.num_clients - 1}"
        )
    attackers = len(config.malicious_ids) or config.num_malicious
    if config.attack == "dba" and config.trigger_size is not None and config.trigger_size < attackers:
        raise ConfigError.bad_value(
            "trigger-size", config.trigger_size, f"auto or at least the number of DBA attackers ({attackers}), one column each"
        )
    if config.attack == "label-flip" and config.source_class == config.target_class:
        raise ConfigError.bad_value("target-class", config.target_class, "a class other than source-class")
    if config.attack == "ada" and config.source_class < 0:
        raise ConfigError.bad_value("source-class", "all", "a class index for ada")
    if config.plot_round > config.num_rounds:
        raise ConfigError.bad_value("plot-round", config.plot_round, f"0 .. num-rounds ({config.num_rounds})")
    per_round = config.sampled_per_round
    _check_defense(config, per_round)
    if per_round > config.num_clients:
        raise ConfigError(
            f"clients-per-round: bad value {config.clients_per_round!r}; allowed: a count "
            f"between 1 and num-clients ({config.num_clients}) or a fraction in (0, 1]"
        )


def _check_defense(config: ExperimentConfig, per_round: int) -> None:
    """Krum needs 2f + 2 < n, Bulyan n >= 4f + 3, MultiKrum 1 <= m <= n (n = clients per round)."""
    strategies = {config.strategy, config.clip_wrap if config.strategy == "norm-clip" else config.strategy}
    f = config.assumed_attackers
    if strategies & {"krum", "multikrum"} and not 2 * f + 2 < per_round:
        raise ConfigError.bad_value(
            "krum-f", f, f"f with 2f + 2 < clients per round ({per_round}), i.e. at most {max(0, (per_round - 3) // 2)}"
        )
    if "multikrum" in strategies and not 1 <= config.krum_keep <= per_round:
        raise ConfigError.bad_value("krum-m", config.krum_keep, f"1 .. clients per round ({per_round})")
    if "bulyan" in strategies and per_round < 4 * f + 3:
        raise ConfigError.bad_value(
            "krum-f", f, f"f with 4f + 3 <= clients per round ({per_round}) for bulyan"
        )
