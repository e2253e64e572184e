"""The Flower ServerApp: waits for the federation, runs the strategy, evaluates, writes results.

Flow of one run:

1. parse and validate the run config (a bad setting fails the run with one line);
2. wait until ``num-clients`` nodes are connected and ask each for its partition id (on real
   SuperNodes this also checks every node config, before any training);
3. build the global model (seeded) and the strategy named by ``strategy``, with the adversary
   stage of a model-poisoning ``update-attack`` (refused outside the simulation engine, before
   any node is asked anything);
4. run ``num-rounds`` rounds; after round 0 and every round, evaluate the global model on the
   held-out test set and rewrite ``rounds.csv`` / ``clients.csv``;
5. write ``summary.json`` (with the number of rounds in which no update was aggregated), the
   final weights and the plots; a run in which no client update was aggregated at all fails
   instead, with ``failed.json`` naming the first client error, and no summary.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from clients.adversary_stage import adversary_stage_for
from clients.registry import evaluation_for
from fl_poison.apps.algorithms import experiment_config
from fl_poison.apps.data_checks import check_run_against_data
from fl_poison.core.config import ConfigError, ExperimentConfig
from fl_poison.core.data import DatasetInfo, DataSpec, all_partition_indices, test_data
from fl_poison.core.detection import detection_scores, rejection_scores
from fl_poison.core.evaluation import predict_probabilities
from fl_poison.core.metrics import classification_metrics
from fl_poison.core.models import build_model, resolve_model_name
from fl_poison.core.plots import plot_training_curves, plot_update_norms
from fl_poison.core.provenance import (
    environment_versions,
    processor_description,
    result_folder_path,
    source_fingerprint,
)
from fl_poison.core.reply_checks import MAX_NUM_EXAMPLES
from fl_poison.core.reply_polling import send_and_receive
from fl_poison.core.results import (
    ATTACK_SUMMARY_METRICS,
    DONE_MARKER,
    SUMMARY_METRICS,
    ResultFolder,
    create_result_folder,
)
from fl_poison.core.root_dataset import RootDataset
from fl_poison.core.round_log import AGGREGATED_DECISIONS, CLIENT_COLUMNS, RoundLog, first_client_error
from fl_poison.core.timings import PhaseClock
from fl_poison.core.training import LocalTraining, resolve_device
from fl_poison.core.weights import load_array_record, to_array_record
from strategies.registry import build_strategy
from strategies.sampling import PartitionSampler

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run one experiment with the settings of ``context.run_config``."""
    clock = PhaseClock()
    with clock.phase("setup"):
        config = experiment_config(context.run_config)
        adversary = adversary_stage_for(config)
        if adversary is not None and not in_simulation(grid):
            raise simulation_only_error(config)
        spec = DataSpec.from_config(config)
        info = check_run_against_data(config)
        folder = create_result_folder(result_folder_path(config))
        model_name = resolve_model_name(config.model, config.dataset)
        device = resolve_device(config.device)
        test_set = test_data(spec)

    with clock.phase("nodes"):
        federation = discover_partitions(grid, config, info)
    sampler = PartitionSampler(federation.node_of_partition, config.sampled_per_round, config.seed)
    round_log = RoundLog(sampler.partition_of_node)
    root_dataset = RootDataset(
        spec,
        test_set,
        lambda: build_model(model_name, info.input_shape, info.num_classes),
        LocalTraining.from_config(config),
        device,
        config.seed,
    )
    strategy = build_strategy(
        config, sampler, round_log, justified_examples(spec, federation), clock, adversary, root_dataset.server_update
    )
    with clock.phase("setup"):  # the test set less the root set, when a defense drew one from it (FLTrust)
        evaluation_set = root_dataset.evaluation_set
        attack_evaluation = evaluation_for(config, evaluation_set, info.num_classes)

    torch.manual_seed(config.seed)
    model = build_model(model_name, info.input_shape, info.num_classes)
    folder.write_config(
        config.to_dict(),
        {
            "model": model_name,
            "num_classes": info.num_classes,
            "input_shape": list(info.input_shape),
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "server_device": str(device),
            "clients_seeing_cuda": len(federation.cuda_partitions),
            "own_data_partitions": list(federation.own_data_partitions),
            "versions": environment_versions(),
            "source": source_fingerprint(),
            "processor": processor_description(),
            **({"root_set": root_dataset.record()} if root_dataset.split is not None else {}),
        },
    )
    print(f"[fl-poison] results -> {folder.path}", flush=True)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        with clock.phase("evaluate"):
            return evaluate_round(server_round, arrays)

    def evaluate_round(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        load_array_record(model, arrays)
        probabilities = predict_probabilities(model, evaluation_set, device, config.eval_batch_size)
        metrics = classification_metrics(evaluation_set.y.numpy(), probabilities)
        metrics.update(
            attack_evaluation.metrics(
                model, probabilities.argmax(axis=1), device, config.eval_batch_size, round_log.latest_attack_target()
            )
        )
        clients = round_log.for_round(server_round)
        if server_round > 0:
            metrics.update(detection_scores(clients))
            metrics.update(rejection_scores(clients))
        row = {
            "round": server_round,
            **metrics,
            "sampled": len(clients),
            "accepted": sum(1 for c in clients if c.status == "ok"),
            "aggregated": sum(1 for c in clients if c.decision in AGGREGATED_DECISIONS),
            "rejected": sum(1 for c in clients if c.status == "rejected"),
            "failures": sum(1 for c in clients if c.status == "failed"),
            "attackers": sum(1 for c in clients if c.attacked),
            "train_loss": _mean([c.loss for c in clients if c.status == "ok"]),
            "wall_seconds": round(clock.elapsed(), 3),
            **round_log.adversary_columns(server_round),
            **round_log.defense_columns(server_round),
        }
        folder.add_round(row)
        folder.add_clients(round_log.rows(server_round), CLIENT_COLUMNS)
        attack_text = "".join(f" {name}={metrics[name]:.4f}" for name in ATTACK_SUMMARY_METRICS if name in metrics)
        print(
            f"[fl-poison] round {server_round}/{config.num_rounds} accuracy={metrics['accuracy']:.4f} "
            f"loss={metrics['loss']:.4f}{attack_text} ({row['wall_seconds']:.1f}s)",
            flush=True,
        )
        return MetricRecord({name: float(metrics[name]) for name in ("accuracy", "loss")})

    strategy.start(
        grid=grid,
        initial_arrays=to_array_record(model),
        num_rounds=config.num_rounds,
        timeout=config.round_timeout,
        train_config=dataset_record(info),
        evaluate_fn=evaluate,
    )
    if not any(record.decision in AGGREGATED_DECISIONS for record in round_log.records):
        cause = first_client_error(round_log.records) or "every reply was rejected by the defense"
        reason = f"no client update was aggregated in {config.num_rounds} round(s); first client error: {cause}"
        folder.mark_failed(reason)
        folder.write_timings(clock.as_dict())
        raise RuntimeError(reason)
    with clock.phase("finish"):
        summary = finish(config, folder, round_log, model, clock)
    folder.write_timings(clock.as_dict())
    print(f"{DONE_MARKER} accuracy={summary['accuracy']:.4f} -> {folder.path}", flush=True)


def finish(
    config: ExperimentConfig, folder: ResultFolder, round_log: RoundLog, model: torch.nn.Module, clock: PhaseClock
) -> dict[str, object]:
    """Write the summary (and return it), the final model and the plots of a run that aggregated at least one update.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings.
    folder : ResultFolder
        The run's folder (its ``rounds.csv`` complete).
    round_log : RoundLog
        Every client of every round.
    model : torch.nn.Module
        The final global model.
    clock : PhaseClock
        The run's clock (its elapsed time is the summary's ``wall_seconds``).
    """
    # ``model`` holds the global weights of the last evaluation, i.e. the final global model
    # (Flower's result.arrays stays empty when no round could aggregate anything).
    final = folder.round_rows[-1]
    summary = {name: final[name] for name in SUMMARY_METRICS}
    summary.update({name: final[name] for name in ATTACK_SUMMARY_METRICS if name in final})
    summary.update(detection_scores(round_log.records))
    summary.update(rejection_scores(round_log.records))
    idle_rounds = sum(1 for row in folder.round_rows if int(str(row["round"])) > 0 and row["aggregated"] == 0)
    summary.update(
        {
            "rounds": config.num_rounds,
            "rounds_without_update": idle_rounds,
            "wall_seconds": round(clock.elapsed(), 3),
        }
    )
    folder.write_summary(summary)
    if config.save_model:
        folder.save_model(model.state_dict())
    title = f"{config.dataset} · {config.strategy} · attack {config.attack} · {folder.path.name}"
    plot_training_curves(folder.round_rows, folder.path / "accuracy_loss.png", title)
    plot_round = config.plot_round or config.num_rounds
    plot_update_norms(
        round_log.for_round(plot_round), folder.path / "update_norms.png", f"{title} · round {plot_round}"
    )
    return summary


def in_simulation(grid: Grid) -> bool:
    """Whether the ServerApp runs in Flower's simulation engine (its in-memory grid) rather than on a real SuperLink.

    The engine's module is looked up among the loaded ones, not imported (importing it costs 2 s):
    a grid of that class exists only once the engine has loaded it.

    Parameters
    ----------
    grid : Grid
        The run's grid.
    """
    engine = sys.modules.get("flwr.superlink.grid.inmemory_grid")
    return engine is not None and isinstance(grid, engine.InMemoryGrid)


def simulation_only_error(config: ExperimentConfig) -> ConfigError:
    """The one-line refusal of a model-poisoning attack outside the simulation engine.

    Parameters
    ----------
    config : ExperimentConfig
        The run's settings (its ``update-attack`` is a model-poisoning attack).
    """
    return ConfigError(
        f"update-attack: bad value {config.resolved_update_attack!r}; allowed on real SuperNodes: none or an update "
        "transform (a model-poisoning attack forges replies on the server: simulation only, fl-poison run)"
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@dataclass(frozen=True)
class Federation:
    """Who answered the join query.

    Attributes
    ----------
    node_of_partition : dict[int, int]
        The Flower node id of every partition id.
    cuda_partitions : tuple[int, ...]
        The partition ids whose ClientApp sees a GPU.
    own_data_partitions : tuple[int, ...]
        The partition ids of nodes training on their own data folder (``data-path``).
    declared_examples : dict[int, int]
        The training-set size every node declared (partitions that declared none or an
        unusable value are absent).
    """

    node_of_partition: dict[int, int]
    cuda_partitions: tuple[int, ...]
    own_data_partitions: tuple[int, ...]
    declared_examples: dict[int, int]


def justified_examples(spec: DataSpec, federation: Federation) -> dict[int, int]:
    """The example count the server can justify for every partition (the caps of ``client-weighting=capped``).

    A partition of the run's dataset has the size the server computes from the partition plan (as
    its client does); a node training on its own data folder has the size it declared when it
    joined, when it declared one.

    Parameters
    ----------
    spec : DataSpec
        The run's data settings (the partition plan).
    federation : Federation
        Who joined, and what they declared.
    """
    partitions = all_partition_indices(spec)
    own = set(federation.own_data_partitions)
    justified = {pid: len(partitions[pid]) for pid in federation.node_of_partition if pid not in own}
    justified.update({pid: federation.declared_examples[pid] for pid in own if pid in federation.declared_examples})
    return {pid: count for pid, count in justified.items() if count >= 1}


def discover_partitions(grid: Grid, config: ExperimentConfig, info: DatasetInfo) -> Federation:
    """Wait for ``num-clients`` nodes and ask each who it is (each checks its node config and data then).

    Parameters
    ----------
    grid : Grid
        The run's grid.
    config : ExperimentConfig
        The run's settings.
    info : DatasetInfo
        The run's classes and input shape, sent with the query so that a node with its own data
        folder checks it against them.
    """
    deadline = time.monotonic() + config.node_wait_timeout
    while len(node_ids := list(grid.get_node_ids())) < config.num_clients:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"num-clients: bad value {config.num_clients}; allowed: at most the {len(node_ids)} "
                f"connected nodes (waited {config.node_wait_timeout:g}s; in simulation set "
                "num-supernodes to num-clients)"
            )
        time.sleep(0.5)
    messages = [
        Message(RecordDict({"config": dataset_record(info)}), dst_node_id=node_id, message_type=MessageType.QUERY)
        for node_id in node_ids
    ]
    replies = send_and_receive(grid, messages, config.node_wait_timeout)
    node_of_partition: dict[int, int] = {}
    cuda_partitions: list[int] = []
    own_data_partitions: list[int] = []
    declared_examples: dict[int, int] = {}
    for reply in replies:
        if reply.has_error():
            lines = [line for line in (reply.error.reason or "").strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else "no reason given"
            raise RuntimeError(f"node {reply.metadata.src_node_id} refused to join: {reason}")
        node = reply.metadata.src_node_id
        metrics = reply.content.metric_records.get("metrics", MetricRecord())
        partition_id, num_partitions = (
            _reply_int(metrics, "partition-id", node),
            _reply_int(metrics, "num-partitions", node),
        )
        own_data = bool(_reply_int(metrics, "own-data", node))
        if not own_data and num_partitions != config.num_clients:
            raise ConfigError(
                f"num-clients: bad value {config.num_clients}; allowed: the federation's number of "
                f"partitions ({num_partitions})"
            )
        if partition_id in node_of_partition:
            raise RuntimeError(f"two nodes claim partition-id {partition_id}")
        node_of_partition[partition_id] = reply.metadata.src_node_id
        if own_data:
            own_data_partitions.append(partition_id)
        if _reply_int(metrics, "cuda-available", node):
            cuda_partitions.append(partition_id)
        declared = metrics.get("num-examples")
        if isinstance(declared, int) and not isinstance(declared, bool) and 1 <= declared <= MAX_NUM_EXAMPLES:
            declared_examples[partition_id] = declared
    if len(node_of_partition) != config.num_clients:
        raise RuntimeError(
            f"only {len(node_of_partition)} of {config.num_clients} nodes answered within {config.node_wait_timeout:g}s"
        )
    return Federation(
        node_of_partition, tuple(sorted(cuda_partitions)), tuple(sorted(own_data_partitions)), declared_examples
    )


def _reply_int(metrics: MetricRecord, key: str, node: int) -> int:
    """The integer ``key`` of a node's query reply; a missing or non-integer value fails the run in one line.

    Parameters
    ----------
    metrics : MetricRecord
        The reply's metrics.
    key : str
        The metric read.
    node : int
        The node's id, for the message.
    """
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise RuntimeError(f"node {node} described itself with {key}={value!r}; allowed: an integer")
    return int(value)


def dataset_record(info: DatasetInfo) -> ConfigRecord:
    """The run's number of classes and input shape as the ClientApp reads them (``num-classes``, ``input-shape``).

    Parameters
    ----------
    info : DatasetInfo
        The run's data description.
    """
    return ConfigRecord(
        {"num-classes": info.num_classes, "input-shape": ",".join(str(size) for size in info.input_shape)}
    )
