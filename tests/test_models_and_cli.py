"""Pretrained weights from local files, and the `lorm` command."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from lorm.cli import main
from lorm.backbones.timm_vit import build_backbone, build_lora_model, load_pretrained


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_weights_load_from_a_local_file(tmp_path, suffix):
    source = build_backbone("tiny-vit", num_classes=3, seed=7)
    state = {k: v for k, v in source.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"model": state}, path)
    model, layers, head = build_lora_model("tiny-vit", 5, rank=2, targets=["mlp.fc1"], seed=0,
                                           pretrained=str(path))
    assert torch.equal(model.blocks[0].mlp.fc1.weight, source.blocks[0].mlp.fc1.weight)
    assert torch.equal(model.patch_embed.proj.weight, source.patch_embed.proj.weight)
    assert head.out_features == 5  # the head is the benchmark's, not the file's


def test_pretrained_shape_mismatch_and_missing_file(tmp_path):
    other = build_backbone("tiny-vit", num_classes=3, seed=0)
    state = other.state_dict()
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(5, 5)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(ValueError, match="blocks.0.mlp.fc1.weight: file \\(5, 5\\)"):
        load_pretrained(build_backbone("tiny-vit", 3, 0), path)
    with pytest.raises(FileNotFoundError, match="put the backbone's"):
        load_pretrained(build_backbone("tiny-vit", 3, 0), tmp_path / "none.safetensors")


def test_cli_run_report_and_errors(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--set", "num_tasks=2", "--set", "num_clients=2", "--set", "rounds=1",
                 "--set", "local_epochs=1", "--set", "num_threads=1", "--output", str(out),
                 "--quiet"])
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["config"]["num_tasks"] == 2
    assert main(["report", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "accuracy matrix" in printed and "task 1:" in printed
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert main(["run", "--set", "dataset=cifar100", "--set", f"data_root={tmp_path}",
                 "--output", str(tmp_path / "x"), "--quiet"]) == 2
    assert "cifar-100-python" in capsys.readouterr().err


def test_python_dash_m_lorm_help():
    result = subprocess.run([sys.executable, "-m", "lorm", "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0
    for command in ("demo", "run", "report"):
        assert command in result.stdout
