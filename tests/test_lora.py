"""LoRA injection into a timm ViT, factor switching, deployment."""

import pytest
import torch
import torch.nn.functional as F

from lorm.lora import LoRALinear, inject_lora, kaiming_uniform, train_factor
from lorm.backbones.timm_vit import build_backbone


def tiny(seed=0):
    return build_backbone("tiny-vit", num_classes=6, seed=seed)


def test_injection_targets_freezes_and_keeps_outputs():
    model = tiny()
    x = torch.randn(3, 1, 8, 8)
    before = model(x)
    layers = inject_lora(model, rank=2)
    assert sorted(layers) == sorted(f"blocks.{b}.{n}" for b in range(2)
                                    for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"))
    assert all(isinstance(model.get_submodule(n), LoRALinear) for n in layers)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"} | {f"{n}.{f}" for n in layers for f in "AB"}
    torch.testing.assert_close(model(x), before)  # B = 0: the residual is zero


def test_train_factor_switches_gradients():
    model = tiny()
    layers = inject_lora(model, rank=2)
    train_factor(layers, "B")
    assert all(l.B.requires_grad and not l.A.requires_grad for l in layers.values())
    train_factor(layers, "AB")
    assert all(l.B.requires_grad and l.A.requires_grad for l in layers.values())
    train_factor(layers, None)
    assert not any(l.B.requires_grad or l.A.requires_grad for l in layers.values())
    with pytest.raises(ValueError, match="factor must be"):
        train_factor(layers, "C")


def test_forward_and_deploy_match_the_merged_weight():
    base = torch.nn.Linear(6, 4)
    layer = LoRALinear(base, rank=2)
    gen = torch.Generator().manual_seed(0)
    layer.set_factors(a=kaiming_uniform((2, 6), gen), b=torch.randn(4, 2, generator=gen))
    x = torch.randn(5, 6)
    merged = base.weight + layer.B @ layer.A
    torch.testing.assert_close(layer(x), F.linear(x, merged, base.bias))
    delta = torch.randn(4, 6, generator=gen)
    layer.deploy(delta)
    torch.testing.assert_close(layer(x), F.linear(x, base.weight + delta, base.bias))
    with pytest.raises(ValueError, match="delta must be"):
        layer.set_delta(torch.zeros(6, 4))
    with pytest.raises(ValueError, match="A must be"):
        layer.set_factors(a=torch.zeros(3, 6))
    with pytest.raises(ValueError, match="rank must be"):
        LoRALinear(base, rank=5)


def test_kaiming_uniform_is_seeded_and_bounded():
    a1 = kaiming_uniform((4, 9), torch.Generator().manual_seed(3))
    a2 = kaiming_uniform((4, 9), torch.Generator().manual_seed(3))
    assert torch.equal(a1, a2)
    assert a1.abs().max() <= 1 / 9**0.5 + 1e-6  # a = sqrt(5): bound = 1 / sqrt(fan_in)
