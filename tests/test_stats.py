"""Statistic collectors against Grams computed by hand from the same inputs."""

import pytest
import torch

from lorm.lora import inject_lora, kaiming_uniform
from lorm.backbones.timm_vit import build_backbone
from lorm.stats import StatsCollector


@pytest.fixture
def model_and_layers():
    model = build_backbone("tiny-vit", num_classes=4, seed=1)
    layers = inject_lora(model, rank=3)
    gen = torch.Generator().manual_seed(0)
    for layer in layers.values():
        layer.set_factors(a=kaiming_uniform(tuple(layer.A.shape), gen),
                          b=torch.randn(layer.B.shape, generator=gen) * 0.1)
    return model.eval(), layers


def inputs_by_hand(model, layers, x):
    seen = {}
    handles = [layer.register_forward_hook(
        lambda m, i, o, name=name: seen.setdefault(name, []).append(i[0].reshape(-1, i[0].shape[-1])))
        for name, layer in layers.items()]
    handles.append(model.head.register_forward_hook(
        lambda m, i, o: seen.setdefault("head", []).append(i[0])))
    model(x)
    for h in handles:
        h.remove()
    return {k: torch.cat(v).double() for k, v in seen.items()}


@pytest.mark.parametrize("mode", ["diag", "full", "lowrank"])
def test_collector_matches_hand_computed_grams(model_and_layers, mode):
    model, layers = model_and_layers
    x = torch.randn(5, 1, 8, 8)
    rows = inputs_by_hand(model, layers, x)
    with torch.no_grad(), StatsCollector(layers, mode, model.head) as stats:
        model(x[:2])
        model(x[2:])  # streaming over two batches
    for name, layer in layers.items():
        r = rows[name]
        if mode == "full":
            torch.testing.assert_close(stats.grams[name].double(), r.T @ r, rtol=1e-5, atol=1e-4)
        else:
            torch.testing.assert_close(stats.grams[name].double(), (r * r).sum(0), rtol=1e-5, atol=1e-4)
        if mode == "lowrank":
            z = r @ layer.A.detach().double().T
            torch.testing.assert_close(stats.projected[name].double(), z.T @ z, rtol=1e-5, atol=1e-4)
    head = rows["head"]
    torch.testing.assert_close(stats.head_gram.double(), head.T @ head, rtol=1e-5, atol=1e-4)
    assert stats.rows == 5


def test_removing_hooks_leaves_outputs_bit_identical(model_and_layers):
    model, layers = model_and_layers
    x = torch.randn(3, 1, 8, 8)
    before = model(x)
    collector = StatsCollector(layers, "lowrank", model.head)
    with torch.no_grad():
        model(x)
    collector.remove()
    assert all(not layer._forward_hooks for layer in layers.values())
    assert not model.head._forward_hooks
    assert torch.equal(model(x), before)


def test_unknown_mode_is_an_error(model_and_layers):
    with pytest.raises(ValueError, match="mode must be"):
        StatsCollector(model_and_layers[1], "sparse")
