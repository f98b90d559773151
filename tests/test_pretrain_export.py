"""The shipped backbone, `lorm pretrain`, Fashion-MNIST, `lorm compare`, `lorm export`
and `lorm eval`, with their bad inputs."""

import gzip
import json
import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import yaml
import torch
from safetensors.torch import save_file

from lorm import pretrained as pretrained_module
from lorm.cli import main as cli_main
from lorm.compare import compare, format_report, paired_difference
from lorm.export import build_exported_model, evaluate
from lorm.fcil import load_config, run
from lorm.fcil.data import build_benchmark
from lorm.fcil.datasets import fashion_mnist
from lorm.fcil.datasets.digits import load_digits_split
from lorm.backbones.timm_vit import TINY_VIT, build_backbone, load_pretrained

HAS_FMNIST = all(p is not None for pair in [[fashion_mnist._find(fashion_mnist.DEBIAN_FOLDER, n)
                                            for n in names] for names in fashion_mnist.FILES.values()]
                 for p in pair)
needs_fmnist = pytest.mark.skipif(not HAS_FMNIST, reason="Fashion-MNIST is not installed: "
                                  "apt-get install dataset-fashion-mnist (where apt-get is usable)")
SMALL = ["num_tasks=2", "num_clients=2", "rounds=2", "local_epochs=1", "batch_size=32",
         "num_threads=1"]


def test_shipped_backbone_matches_its_card():
    weights, card_path = pretrained_module.shipped_paths()
    card = json.loads(card_path.read_text())
    assert pretrained_module.sha256_of(weights) == card["sha256"]
    assert weights.stat().st_size < 10 * 2 ** 20
    assert card["architecture"] == {"timm": "VisionTransformer", "img_size": 8, **TINY_VIT}
    assert card["test_accuracy"] >= 0.8 and card["training"]["epochs"] >= 1
    model = build_backbone("tiny-vit", 10, 0, 8)
    load_pretrained(model, weights)  # every backbone tensor present, shapes checked
    assert pretrained_module.verify_shipped() == weights


def test_a_damaged_shipped_file_is_refused(tmp_path, monkeypatch, capsys):
    weights, card = pretrained_module.shipped_paths()
    data = bytearray(weights.read_bytes())
    data[-5] ^= 1
    (tmp_path / weights.name).write_bytes(bytes(data))
    shutil.copy(card, tmp_path / card.name)
    monkeypatch.setattr(pretrained_module, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match="sha256"):
        pretrained_module.verify_shipped()
    out = tmp_path / "run"
    assert cli_main(["run", "--quiet", "--output", str(out)]) == 2
    assert "sha256" in capsys.readouterr().err and not out.exists()


@needs_fmnist
def test_pretrain_one_short_epoch_writes_a_loadable_file(tmp_path, capsys):
    assert cli_main(["pretrain", "--output", str(tmp_path), "--epochs", "1", "--quiet"]) == 0
    card = json.loads((tmp_path / "tiny-vit-fmnist.json").read_text())
    weights = tmp_path / "tiny-vit-fmnist.safetensors"
    assert card["sha256"] == pretrained_module.sha256_of(weights)
    assert card["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    load_pretrained(build_backbone("tiny-vit", 10, 0, 8), weights)
    summary = run(load_config(None, SMALL + [f"pretrained={weights}"]), tmp_path / "run",
                  quiet=True)
    assert len(summary["accuracy_matrix"]) == 2


def write_idx(path: Path, array: np.ndarray, magic: bytes | None = None) -> None:
    header = magic or bytes([0, 0, 8, array.ndim])
    data = header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def fake_fashion_folder(root: Path, n: int = 20) -> Path:
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, (images, labels) in fashion_mnist.FILES.items():
        write_idx(raw / images, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(raw / f"{labels}.gz", (np.arange(n) % 10).astype(np.uint8))
    return raw


def test_fashion_mnist_reads_a_torchvision_folder_plain_or_gzipped(tmp_path):
    fake_fashion_folder(tmp_path)
    train, test, classes = fashion_mnist.load(tmp_path, 8)
    assert classes == 10 and len(train) == 20 and train[0][0].shape == (1, 8, 8)
    x = train.tensors[0]
    assert x.min() >= -1 and x.max() <= 1


def test_corrupt_idx_files_are_named(tmp_path):
    raw = fake_fashion_folder(tmp_path)
    images = raw / fashion_mnist.FILES["train"][0]
    good = images.read_bytes()
    images.write_bytes(b"\x00\x00\x09\x03" + good[4:])
    with pytest.raises(ValueError, match="magic"):
        fashion_mnist.load(tmp_path, 8)
    images.write_bytes(good[:-100])
    with pytest.raises(ValueError, match="truncated"):
        fashion_mnist.load(tmp_path, 8)


def test_missing_fashion_mnist_says_what_to_put_where(tmp_path, capsys):
    code = cli_main(["pretrain", "--data-root", str(tmp_path / "nothing"), "--output",
                     str(tmp_path / "out"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert code == 2 and "apt-get install dataset-fashion-mnist" in err
    assert "FashionMNIST/raw" in err and not (tmp_path / "out").exists()


@needs_fmnist
def test_fashion_mnist_is_a_fcil_dataset():
    bench = build_benchmark(load_config(None, ["dataset=fashion-mnist"]))
    assert bench.num_classes == 10 and [len(c) for c in bench.task_classes] == [2] * 5
    assert bench.train[0][0].shape == (1, 8, 8) and len(bench.train) == 60_000


# -- compare --------------------------------------------------------------------------------

def test_paired_difference_by_hand():
    d = paired_difference([0.5, 0.6, 0.7], [0.4, 0.6, 0.5])
    # diffs 0.1, 0, 0.2: mean 0.1, sd 0.1; t(0.975, 2) = 4.3027 -> half-width 0.24841
    assert d["mean"] == pytest.approx(0.1)
    assert d["low"] == pytest.approx(0.1 - 4.302653 * 0.1 / math.sqrt(3), abs=1e-5)
    assert d["high"] == pytest.approx(0.1 + 4.302653 * 0.1 / math.sqrt(3), abs=1e-5)
    assert d["significant"] is False
    assert paired_difference([0.9, 0.8, 0.85], [0.5, 0.45, 0.5])["significant"] is True


def test_compare_runs_every_cell_and_reuses_finished_ones(tmp_path):
    report = compare(["lorm", "fedavg-lora"], [0, 1], [None], tmp_path, None, SMALL, quiet=True)
    block = report["by_beta"]["0.5"]
    assert set(block["rows"]) == {"lorm", "fedavg-lora"}
    lorm_faa = block["rows"]["lorm"]["per_seed_faa"]
    for seed, faa in enumerate(lorm_faa):
        summary = json.loads((tmp_path / "beta0.5" / "lorm" / f"seed{seed}" / "summary.json")
                             .read_text())
        assert summary["final_average_accuracy"] == faa
    assert (tmp_path / "compare.json").is_file() and (tmp_path / "compare.png").is_file()
    text = format_report(report)
    assert "FAA lorm - fedavg-lora" in text and "significant" in text
    marker = tmp_path / "beta0.5" / "lorm" / "seed0" / "summary.json"
    before = marker.stat().st_mtime_ns
    compare(["lorm", "fedavg-lora"], [0, 1], [None], tmp_path, None, SMALL, quiet=True)
    assert marker.stat().st_mtime_ns == before  # reused, not rerun
    parallel = compare(["lorm", "fedavg-lora"], [0, 1], [None], tmp_path / "jobs", None, SMALL,
                       quiet=True, jobs=2)
    for method in ("lorm", "fedavg-lora"):  # separate processes, the same results
        assert parallel["by_beta"]["0.5"]["rows"][method]["per_seed_faa"] == \
            block["rows"][method]["per_seed_faa"]


def test_joint_federated_row_is_lorm_on_one_task_over_the_clients(tmp_path):
    """fed-mammoth's joint reference (joint-oos): the federated method over the same
    Dirichlet clients with every class in one task, a row apart from the centralised
    ``joint``."""
    report = compare(["joint-federated"], [0], [None], tmp_path, None, SMALL, quiet=True)
    config = yaml.safe_load((tmp_path / "beta0.5" / "joint-federated" / "seed0" / "config.yaml")
                            .read_text())
    assert (config["method"], config["num_tasks"], config["num_clients"]) == ("lorm", 1, 2)
    matrix = json.loads((tmp_path / "beta0.5" / "joint-federated" / "seed0" / "summary.json")
                        .read_text())["accuracy_matrix"]
    assert len(matrix) == 1  # one task
    assert "joint-federated" in report["by_beta"]["0.5"]["rows"]


# -- export and eval --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    return out, run(load_config(None, SMALL), out, quiet=True)


def test_exported_model_gives_the_runs_final_accuracy(finished, tmp_path):
    run_dir, summary = finished
    path = tmp_path / "model.safetensors"
    assert cli_main(["export", str(run_dir), "--out", str(path)]) == 0
    model = build_exported_model(path)  # a plain timm VisionTransformer, strict load
    assert type(model).__name__ == "VisionTransformer"
    assert not any("lora" in type(m).__name__.lower() for m in model.modules())
    x, y = load_digits_split(0).test.tensors
    model.eval()
    with torch.no_grad():
        faa = (model(x).argmax(1) == y).double().mean().item()
    assert faa == pytest.approx(summary["final_average_accuracy"], abs=1e-12)
    assert evaluate(run_dir) == summary["accuracy_matrix"][-1]
    assert evaluate(run_dir, path) == summary["accuracy_matrix"][-1]


def test_eval_refuses_an_export_for_another_model(finished, tmp_path, capsys):
    run_dir, _ = finished
    other = tmp_path / "other.safetensors"
    save_file({"head.weight": torch.zeros(5, 64)}, str(other), metadata={"lorm": json.dumps(
        {"format": "lorm-deployed-v1", "backbone": "tiny-vit", "num_classes": 5, "img_size": 8,
         "tasks_done": 1, "timm_kwargs": {}})})
    assert cli_main(["eval", str(run_dir), "--weights", str(other)]) == 2
    err = capsys.readouterr().err
    assert "different model" in err and "num_classes 5 vs 10" in err
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    assert cli_main(["eval", str(run_dir), "--weights", str(plain)]) == 2
    assert "lorm export" in capsys.readouterr().err


def test_export_refuses_a_run_inside_a_task(tmp_path, capsys, monkeypatch):
    from lorm.fcil.loop import Run
    original = Run.run_round

    def stop_in_task_1(self, task, rnd):
        if (task, rnd) == (1, 1):
            raise KeyboardInterrupt
        return original(self, task, rnd)

    monkeypatch.setattr(Run, "run_round", stop_in_task_1)
    with pytest.raises(KeyboardInterrupt):
        run(load_config(None, SMALL), tmp_path / "run", quiet=True)
    out = tmp_path / "m.safetensors"
    assert cli_main(["export", str(tmp_path / "run"), "--out", str(out)]) == 2
    assert "inside task 1" in capsys.readouterr().err and not out.exists()
