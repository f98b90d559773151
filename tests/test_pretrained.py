"""pretrained: timm read from timm's hub cache only, its offline error, and the
weights record a run keeps."""

from __future__ import annotations

import json

import pytest
import torch

from lorm.cli import main as cli_main
from lorm.backbones.timm_vit import build_lora_model
from lorm.pretrained import resolve_weights, sha256_of

TAG = "test_vit.r160_in1k"  # timm's own tiny test ViT with hub weights (timm/test_vit.r160_in1k)


def _fill_hub_cache(cache, tag: str = TAG) -> tuple[dict, object]:
    """Writes ``tag``'s weights into ``cache`` in huggingface_hub's layout
    (models--<org>--<name>/refs/main -> snapshots/<rev>/model.safetensors)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(3)
    state = {k: v.contiguous() for k, v in timm.create_model(tag, pretrained=False).state_dict().items()}
    repo = cache / "models--timm--test_vit.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(state, str(snapshot / "model.safetensors"))
    return state, snapshot / "model.safetensors"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_timm_weights_come_from_the_cache_head_excepted(hub_cache):
    state, path = _fill_hub_cache(hub_cache)
    weights = resolve_weights(TAG, "timm")
    assert (weights.source, weights.tag, weights.path) == ("timm", TAG, path)
    assert resolve_weights(TAG, "auto") == weights  # auto is timm for a timm backbone
    model, _, head = build_lora_model(TAG, 7, 2, ["attn.qkv"], seed=0, pretrained="timm")
    own = model.state_dict()
    assert torch.equal(own["blocks.0.mlp.fc1.weight"], state["blocks.0.mlp.fc1.weight"])
    assert torch.equal(own["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    assert head.weight.shape == (7, state["head.weight"].shape[1])  # the benchmark's head
    assert weights.record()["sha256"] == sha256_of(path)


def test_empty_cache_is_one_error_naming_tag_cache_and_the_way_out(hub_cache):
    with pytest.raises(FileNotFoundError) as err:
        resolve_weights(TAG, "timm")
    text = str(err.value)
    assert TAG in text and str(hub_cache) in text and "--set pretrained=FILE" in text


def test_cli_reports_the_missing_weights_without_a_traceback(hub_cache, tmp_path, capsys):
    # a dataset that is not there either: the weights are checked before any data is read
    code = cli_main(["run", "--set", f"backbone={TAG}", "--set", "img_size=8",
                     "--set", "dataset=cifar100", "--set", f"data_root={tmp_path / 'none'}",
                     "--output", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: pretrained: timm needs") and "Traceback" not in err


def test_pretrained_choices_refuse_the_wrong_backbone():
    with pytest.raises(ValueError, match="pretrained: timm needs a timm backbone"):
        resolve_weights("tiny-vit", "timm")
    with pytest.raises(ValueError, match="shipped is the tiny ViT's"):
        resolve_weights(TAG, "shipped")
    with pytest.raises(ValueError, match="unknown backbone 'vit_nonexistent_patch16'"):
        resolve_weights("vit_nonexistent_patch16", "timm")  # not a timm model at all
    assert resolve_weights(TAG, "none").record() == {"source": "none", "tag": None,
                                                      "path": None, "sha256": None}
    assert resolve_weights("tiny-vit", None).source == "none"


def test_summary_records_the_weights_used(tmp_path):
    from lorm.fcil import load_config, run
    summary = run(load_config(None, ["num_tasks=1", "rounds=1", "local_epochs=1", "num_clients=2",
                                     "num_threads=1", "method=fedavg-lora"]),
                  tmp_path / "run", quiet=True)
    record = json.loads((tmp_path / "run" / "summary.json").read_text())["weights"]
    assert record == summary["weights"] and record["source"] == "shipped"
    assert record["sha256"] == sha256_of(record["path"])
