"""The classifiers: shapes, the features/classifier split, ADA's layer sizes, weight exchange."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from torch import nn

from fl_poison.core.config import ConfigError
from fl_poison.core.models import MODEL_BUILDERS, build_model
from fl_poison.core.weights import float_state, load_array_record, to_array_record

INPUT_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


@pytest.mark.parametrize("input_shape", INPUT_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_model_builds_and_splits_into_features_and_classifier(name, input_shape):
    torch.manual_seed(0)
    model = build_model(name, input_shape, 10).eval()
    x = torch.rand(3, *input_shape)
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
        recombined = model.classifier(features)
    assert isinstance(model.classifier, nn.Linear)
    assert logits.shape == (3, 10)
    assert features.shape == (3, model.classifier.in_features)
    assert model.classifier.out_features == 10
    assert torch.equal(logits, recombined)
    assert torch.isfinite(logits).all()


def test_ada_cnn_has_the_paper_layer_sizes_on_28x28():
    model = build_model("ada-cnn", (1, 28, 28), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding) for c in convs] == [
        (1, 20, (5, 5), (1, 1), (0, 0)),
        (20, 50, (5, 5), (1, 1), (0, 0)),
    ]
    # 28 - 4 = 24, 24 - 4 = 20: a 50 x 20 x 20 feature map.
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(50 * 20 * 20, 200), (200, 10)]
    assert model.classifier is linears[-1]
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules())


def test_build_model_rejects_unknown_and_non_square():
    with pytest.raises(ConfigError):
        build_model("vgg", (1, 28, 28), 10)
    with pytest.raises(ConfigError):
        build_model("small-cnn", (1, 28, 20), 10)


def test_resnet18_float_state_excludes_num_batches_tracked():
    model = build_model("resnet18", (3, 32, 32), 10)
    full = model.state_dict()
    state = float_state(model)
    tracked = [name for name in full if name.endswith("num_batches_tracked")]
    assert tracked  # BatchNorm has them ...
    assert not any(name.endswith("num_batches_tracked") for name in state)  # ... but they are not exchanged
    assert set(state) == {name for name, tensor in full.items() if tensor.is_floating_point()}
    assert set(full) - set(state) == set(tracked)
    assert any(name.endswith("running_mean") for name in state)  # float buffers are exchanged


def test_array_record_round_trip_is_exact():
    torch.manual_seed(0)
    source = build_model("resnet18", (3, 32, 32), 10)
    # Give the BatchNorm buffers non-default values.
    source.train()
    with torch.no_grad():
        source(torch.rand(4, 3, 32, 32))
    torch.manual_seed(1)
    target = build_model("resnet18", (3, 32, 32), 10)
    assert not torch.equal(float_state(source)["features.conv1.weight"], float_state(target)["features.conv1.weight"])
    target_tracked = {k: v.clone() for k, v in target.state_dict().items() if k.endswith("num_batches_tracked")}

    load_array_record(target, to_array_record(source))

    expected, loaded = float_state(source), float_state(target)
    assert set(expected) == set(loaded)
    for name in expected:
        assert loaded[name].dtype == expected[name].dtype, name
        assert torch.equal(loaded[name], expected[name]), name
    # Integer buffers keep their local values.
    for name, value in target_tracked.items():
        assert torch.equal(target.state_dict()[name], value)
    # The two models now compute the same thing.
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


def test_array_record_keeps_values_not_references():
    source = build_model("small-cnn", (1, 8, 8), 10)
    target = build_model("small-cnn", (1, 8, 8), 10)
    record = to_array_record(source)
    load_array_record(target, record)
    with torch.no_grad():
        target.classifier.bias.add_(1.0)
    assert not torch.equal(source.classifier.bias, target.classifier.bias)


def test_load_array_record_with_missing_key_raises_key_error():
    model = build_model("small-cnn", (1, 8, 8), 10)
    state = float_state(model)
    del state["classifier.bias"]
    with pytest.raises(KeyError, match="classifier.bias"):
        load_array_record(model, ArrayRecord(state))


def test_load_array_record_with_extra_key_raises_key_error():
    model = build_model("small-cnn", (1, 8, 8), 10)
    state = float_state(model)
    state["extra.weight"] = torch.zeros(2)
    with pytest.raises(KeyError, match="extra.weight"):
        load_array_record(model, ArrayRecord(state))


def test_array_record_holds_float_numpy_arrays():
    model = build_model("resnet18", (1, 8, 8), 10)
    record = to_array_record(model)
    arrays = dict(zip(record.keys(), record.to_numpy_ndarrays(), strict=True))
    assert all(np.issubdtype(array.dtype, np.floating) for array in arrays.values())
    assert set(arrays) == set(float_state(model))
