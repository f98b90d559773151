"""`lorm export` and `lorm eval` on a text run: the deployed MiniLM as a folder that
transformers loads by itself (LoRA residuals folded in, head and card beside it), and
the accuracy recomputed from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dataset_fixtures import fake_clinc
from lorm.backbones import make_backbone
from lorm.backbones.base import build_lora
from lorm.cli import main as cli_main
from lorm.export import build_exported_model, evaluate
from lorm.fcil import checkpoint, load_config, run
from lorm.fcil.config import Config
from lorm.fcil.datasets import clinc150
from test_text import TINY_TEXT, needs_minilm

NUM_CLASSES = 4  # TINY_TEXT's max_classes


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> tuple[Path, dict, Path]:
    """A finished 2-task MiniLM run on a made-up CLINC150 file, and its export folder."""
    root = tmp_path_factory.mktemp("text")
    data = fake_clinc(root / clinc150.FILE)
    out = root / "run"
    assert cli_main(["run", *TINY_TEXT, "--set", f"data_root={root}", "--output", str(out),
                     "--quiet"]) == 0
    folder = root / "exported"
    assert cli_main(["export", str(out), "--out", str(folder)]) == 0
    return out, json.loads((out / "summary.json").read_text()), data


def lorm_deployed(run_dir: Path) -> tuple[torch.nn.Module, dict, dict]:
    """The run's deployed model the way the loop serves it: LoRA layers over ``W0``
    serving ``W0 + delta`` (LoRA term off), the merged head; its config; the tensors."""
    tensors, state = checkpoint.load(run_dir)
    config = Config(**state["config"]).validate()
    model, layers, head = build_lora(make_backbone(config.backbone), config, NUM_CLASSES)
    for name, layer in layers.items():
        layer.set_factors(a=tensors[f"{name}.A"], b=tensors[f"{name}.B"])
        layer.deploy(tensors[f"{name}.delta"])  # every layer serves a merged residual
    with torch.no_grad():
        head.weight.copy_(tensors["head.weight"])
        head.bias.copy_(tensors["head.bias"])
    return model.eval(), config, tensors


@needs_minilm
def test_the_folder_loads_with_transformers_and_predicts_as_lorm(text_run):
    from transformers import AutoModel, AutoTokenizer

    from lorm.backbones.hf_encoder import minilm_folder

    run_dir, _, data = text_run
    folder = run_dir.parent / "exported"
    card = json.loads((folder / "lorm.json").read_text())
    assert {k: card[k] for k in ("format", "backbone", "num_classes", "tasks_done", "pooling",
                                 "max_length")} == {
        "format": "lorm-deployed-hf-v1", "backbone": "minilm", "num_classes": NUM_CLASSES,
        "tasks_done": 2, "pooling": "mean", "max_length": 16}
    assert {"tokenizer.json", "vocab.txt", "tokenizer_config.json"} <= set(card["tokenizer_files"])
    for name in card["tokenizer_files"]:  # copied byte for byte: the folder stands alone
        assert (folder / name).read_bytes() == (minilm_folder() / name).read_bytes()

    encoder, info = AutoModel.from_pretrained(str(folder), output_loading_info=True)
    assert type(encoder).__name__ == "BertModel" and info["missing_keys"] in ([], set())
    model, config, tensors = lorm_deployed(run_dir)
    base = AutoModel.from_pretrained(str(minilm_folder()))
    name = "encoder.encoder.layer.3.attention.self.value"  # TextClassifier.encoder is the BertModel
    w0 = base.get_submodule(name[len("encoder."):]).weight
    delta = tensors[f"{name}.delta"]
    assert float(delta.abs().max()) > 0  # the run learned something to fold in
    assert torch.equal(encoder.get_submodule(name[len("encoder."):]).weight, w0 + delta)
    assert torch.equal(encoder.pooler.dense.weight, base.pooler.dense.weight)

    raw = json.loads(data.read_text())["test"]
    texts = [t for t, intent in raw if intent < f"intent_{NUM_CLASSES:03d}"]
    tokens = AutoTokenizer.from_pretrained(str(folder))(
        texts, padding=True, truncation=True, max_length=card["max_length"], return_tensors="pt")
    head = torch.nn.Linear(encoder.config.hidden_size, card["num_classes"])
    head.load_state_dict(load_file(str(folder / card["head"])))
    with torch.no_grad():
        hidden = encoder(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        theirs = head((hidden * mask).sum(1) / mask.sum(1))
        ours = model({"input_ids": tokens["input_ids"],
                      "attention_mask": tokens["attention_mask"]})
        rebuilt = build_exported_model(folder)(dict(tokens))
    assert len(texts) == 30 * NUM_CLASSES and theirs.shape == (len(texts), NUM_CLASSES)
    assert torch.equal(theirs.argmax(1), ours.argmax(1))
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rebuilt, ours, rtol=1e-4, atol=1e-5)


@needs_minilm
def test_eval_gives_the_runs_last_accuracy_row(text_run, tmp_path, capsys):
    run_dir, summary, _ = text_run
    folder = run_dir.parent / "exported"
    last = summary["accuracy_matrix"][-1]
    assert evaluate(run_dir) == last
    assert evaluate(run_dir, folder) == last
    capsys.readouterr()
    assert cli_main(["eval", str(run_dir), "--weights", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == "accuracy per task (%): " + " ".join(f"{100 * a:.2f}" for a in last)
    # eval reads the exported files: a head that always says class 0 gives task 0
    # (classes 0 and 1, 3 test queries each) 50% and task 1 (classes 2 and 3) 0%
    always_0 = tmp_path / "always0"
    shutil.copytree(folder, always_0)
    head = load_file(str(always_0 / "head.safetensors"))
    save_file({"weight": torch.zeros_like(head["weight"]),
               "bias": torch.tensor([1.0, 0.0, 0.0, 0.0])}, str(always_0 / "head.safetensors"))
    assert evaluate(run_dir, always_0) == [0.5, 0.0]


@needs_minilm
def test_export_refuses_a_file_or_a_foreign_folder_and_replaces_its_own(text_run, tmp_path,
                                                                      capsys):
    run_dir, _, _ = text_run
    assert cli_main(["export", str(run_dir), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "exports as a folder" in capsys.readouterr().err
    assert not (tmp_path / "m.safetensors").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli_main(["export", str(run_dir), "--out", str(foreign)]) == 2
    assert "not an lorm export" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    again = tmp_path / "again"
    for _ in range(2):  # a second export replaces the first, nothing left beside it
        assert cli_main(["export", str(run_dir), "--out", str(again)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "mine"]
    assert (again / "lorm.json").is_file() and (again / "model.safetensors").is_file()


@needs_minilm
def test_eval_refuses_an_export_of_another_model(text_run, tmp_path, capsys):
    run_dir, _, _ = text_run
    folder = run_dir.parent / "exported"
    other = tmp_path / "cls"
    other.mkdir()
    card = json.loads((folder / "lorm.json").read_text())
    (other / "lorm.json").write_text(json.dumps({**card, "pooling": "cls"}))
    assert cli_main(["eval", str(run_dir), "--weights", str(other)]) == 2
    err = capsys.readouterr().err
    assert "different model" in err and "pooling 'cls' vs 'mean'" in err
    vit = tmp_path / "vit"
    settings = ["num_tasks=1", "num_clients=2", "rounds=1", "local_epochs=1", "num_threads=1"]
    run(load_config(None, settings), vit, quiet=True)
    assert cli_main(["eval", str(vit), "--weights", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "format 'lorm-deployed-hf-v1' vs 'lorm-deployed-v1'" in err


def test_export_help_says_text_runs_write_a_folder(capsys):
    with pytest.raises(SystemExit) as done:
        cli_main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert done.value.code == 0
    assert "Text runs: the folder to write" in text and "AutoModel.from_pretrained" in text
