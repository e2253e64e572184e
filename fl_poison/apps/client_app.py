"""The Flower ClientApp: one app for benign and malicious clients, in simulation and deployment.

``query``: the node's join check (:func:`fl_poison.apps.node.check_node`: its whole effective
config, its attack's classes and its data, before any training) and tells the server this node's
partition id (Flower node ids are random per run), whether it trains on its own data folder,
whether it sees a GPU and how many training examples it holds (the server caps the counts this
node reports later at that, see :mod:`fl_poison.core.client_weighting`). ``train``: loads the global weights, asks :mod:`clients.registry` for
this client's behaviour in this round (benign, or what the attack modules of
:mod:`clients.attacks` build for an attacker of the threat model or of the node's own config, see
:mod:`fl_poison.apps.node`), runs it on its partition or its own data, and replies
with the float weights and the metrics ``train_loss``, ``num-examples``, ``partition_id``,
``malicious``, ``attacked`` and ``attack_target`` (every client sends the same keys, which
Flower requires; the last three are ground truth for forensics only).
"""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.base import TrainingJob
from clients.registry import behaviour_for
from fl_poison.apps.node import NodeIdentity, check_node, config_for_node
from fl_poison.core.data import DatasetInfo, DataSpec, LabeledTensors, client_data, dataset_info, node_data
from fl_poison.core.models import build_model, resolve_model_name
from fl_poison.core.reply_checks import REPLY_METRIC_KEYS
from fl_poison.core.training import LocalTraining, resolve_device
from fl_poison.core.weights import load_array_record, to_array_record

app = ClientApp()


def client_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A seed for one client in one round, derived from the experiment seed.

    Parameters
    ----------
    seed : int
        The experiment's ``seed``.
    server_round : int
        The round.
    partition_id : int
        The client.
    """
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])


@app.query()
def describe(msg: Message, context: Context) -> Message:
    """Check the node (:func:`~fl_poison.apps.node.check_node`); reply with its partition id, number of partitions, own data, GPU visibility and example count.

    The whole effective config and the node's data are checked here, before any training: when
    the query's ``config`` record carries ``num-classes`` and ``input-shape`` (as the train
    messages do), the node's data is checked against them, otherwise against the run's dataset.

    Parameters
    ----------
    msg : Message
        The server's query message.
    context : Context
        This node's context (run config, node config, per-client state).
    """
    query_config = msg.content.config_records.get("config")
    info = dataset_info_from_server(query_config) if query_config is not None else None
    identity, config = check_node(context.run_config, context.node_config, info)
    spec = DataSpec.from_config(config)
    metrics = MetricRecord(
        {
            "partition-id": identity.partition_id,
            "num-partitions": identity.num_partitions,
            "own-data": int(identity.has_own_data),
            "cuda-available": int(torch.cuda.is_available()),
            "num-examples": len(training_data(identity, spec, info)),
        }
    )
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Run this client's behaviour for the round and reply with its weights and metrics.

    Parameters
    ----------
    msg : Message
        The server's train (global weights and the round's config) message.
    context : Context
        This node's context (run config, node config, per-client state).
    """
    config = config_for_node(context.run_config, context.node_config)
    identity = NodeIdentity.from_node_config(context.node_config)
    identity.check_against(config)
    server_config = msg.content.config_records["config"]
    spec = DataSpec.from_config(config)
    info = dataset_info_from_server(server_config) or dataset_info(spec)
    model = build_model(resolve_model_name(config.model, config.dataset), info.input_shape, info.num_classes)
    load_array_record(model, msg.content.array_records["arrays"])
    server_round = int(cast(int, server_config["server-round"]))
    proximal_mu = float(cast(float, server_config.get("proximal-mu", 0.0)))
    training = LocalTraining.from_config(config, proximal_mu=proximal_mu)
    job = TrainingJob(
        model=model,
        data=training_data(identity, spec, info),
        training=training,
        device=resolve_device(config.device),
        seed=client_seed(config.seed, server_round, identity.partition_id),
        server_round=server_round,
        partition_id=identity.partition_id,
    )
    behaviour = behaviour_for(config, identity.partition_id, server_round, info, context.node_config, context.state)
    update = behaviour.run(job)
    values = (
        float(update.train_loss),
        int(update.num_examples),
        identity.partition_id,
        int(update.malicious),
        int(update.attacked),
        int(update.attack_target),
    )
    metrics = MetricRecord(dict(zip(REPLY_METRIC_KEYS, values, strict=True)))
    arrays: ArrayRecord = to_array_record(update.model)
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def dataset_info_from_server(server_config: ConfigRecord) -> DatasetInfo | None:
    """The run's classes and input shape as the ServerApp sends them (None when it does not).

    A node with its own data folder need not be able to read the run's dataset.

    Parameters
    ----------
    server_config : ConfigRecord
        The ``config`` record of the server's train message.
    """
    if "num-classes" not in server_config or "input-shape" not in server_config:
        return None
    channels, height, width = (int(size) for size in str(server_config["input-shape"]).split(","))
    return DatasetInfo(num_classes=int(cast(int, server_config["num-classes"])), input_shape=(channels, height, width))


def training_data(identity: NodeIdentity, spec: DataSpec, info: DatasetInfo | None) -> LabeledTensors:
    """The node's own data folder, or its partition of the run's dataset.

    Parameters
    ----------
    identity : NodeIdentity
        Who the node is and where its data lies.
    spec : DataSpec
        The run's data settings.
    info : DatasetInfo | None
        The run's classes and input shape (a node's own folder is read to fit them; None reads
        it as it is).
    """
    if identity.has_own_data:
        return node_data(identity.data_path, spec.image_column, spec.label_column, info)
    return client_data(spec, identity.partition_id)
