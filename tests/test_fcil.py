"""The federated class-incremental driver end to end on the embedded digits data."""

import json
import math

import numpy as np
import pytest
import torch

from lorm import merge
from lorm.fcil import load_config, run
from lorm.fcil.config import apply_overrides
from lorm.fcil.data import build_benchmark
from lorm.fcil.partition import dirichlet_partition, sample_clients, split_classes
from lorm.fcil import checkpoint
from lorm.fcil.loop import Run, resume
from lorm.fcil.metrics import summarize

TINY = ["num_clients=3", "rounds=2", "local_epochs=3", "batch_size=8", "lr_a=0.01", "lr_b=0.01",
        "lr_head=0.01", "num_threads=1"]


@pytest.fixture(scope="module")
def lorm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lorm")
    return out, run(load_config(None, TINY), out, quiet=True)


def test_run_learns_and_writes_its_directory(lorm_run):
    out, summary = lorm_run
    acc = summary["accuracy_matrix"]
    assert [len(row) for row in acc] == [1, 2, 3, 4, 5]
    assert acc[0][0] > 0.65                                  # 2 classes: chance is 0.5
    assert summary["average_incremental_accuracy"] > 0.3     # 10 classes: chance is 0.1
    assert summary["final_average_accuracy"] > 0.15
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "accuracy_matrix.png",
                 "checkpoint-000016.json"):  # 1 initial save + (2 rounds + task end) x 5
        assert (out / name).is_file(), name
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records].count("round") == 10
    assert [r["trains"] for r in records if r["type"] == "round"][:2] == ["B", "A"]
    assert 0 < summary["bytes_per_client_per_round"] < 200_000


def test_resume_equals_uninterrupted(lorm_run, tmp_path, monkeypatch):
    _, uninterrupted = lorm_run
    original = Run.run_round

    def crash_at_task_2(self, task, rnd):
        if (task, rnd) == (2, 1):
            raise RuntimeError("simulated crash")
        return original(self, task, rnd)

    monkeypatch.setattr(Run, "run_round", crash_at_task_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(load_config(None, TINY), tmp_path, quiet=True)
    assert checkpoint.latest_state(tmp_path)["progress"]["task"] == 2
    monkeypatch.setattr(Run, "run_round", original)
    resumed = resume(tmp_path, quiet=True)
    assert resumed["accuracy_matrix"] == uninterrupted["accuracy_matrix"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 15 and len(set(lines)) == 15  # no duplicated records after resume


def test_one_round_equals_merge_on_hand_collected_statistics(tmp_path):
    """A B-step round's merged B equals lorm.merge.merge_b_step on Grams collected by
    plain torch hooks from each client's trained model."""
    config = load_config(None, TINY + ["alpha_backbone=0.5"])
    runner = Run(config, tmp_path, quiet=True)
    (tmp_path / "metrics.jsonl").write_text("")
    server, client = runner.server, runner.transport.client
    server.start_task(0)
    shared_a = {n: l.A.detach().clone() for n, l in server.layers.items()}
    by_hand = {n: ([], []) for n in server.layers}           # name -> (Bs, grams)
    original = client.round_update

    def round_update(task, rnd, index):
        update = original(task, rnd, index)
        rows = {n: [] for n in client.layers}
        hooks = [layer.register_forward_hook(
            lambda m, i, o, n=n: rows[n].append(i[0].reshape(-1, i[0].shape[-1]).double()))
            for n, layer in client.layers.items()]
        data = runner.bench.train
        with torch.no_grad():
            for i in runner.bench.client_indices[task][index]:
                client.model.eval()(data[i][0].unsqueeze(0))
        for h in hooks:
            h.remove()
        for n, layer in client.layers.items():
            x = torch.cat(rows[n])
            by_hand[n][0].append(layer.B.detach().clone())
            by_hand[n][1].append(x.T @ x)
        return update

    client.round_update = round_update
    runner.run_round(0, 0)
    assert len(by_hand[next(iter(by_hand))][0]) == config.num_clients
    for name, (bs, grams) in by_hand.items():
        expected = merge.merge_b_step(bs, shared_a[name], grams, 0.5, dtype=torch.float64)
        torch.testing.assert_close(server.layers[name].B.double(), expected, rtol=1e-4, atol=1e-5)


def test_missing_dataset_gives_the_documented_error(tmp_path):
    config = load_config(None, ["dataset=cifar100", f"data_root={tmp_path / 'nowhere'}"])
    with pytest.raises(FileNotFoundError, match="cifar-100-python/train"):
        build_benchmark(config)
    config = load_config(None, ["dataset=imagenet-r", f"data_root={tmp_path}"])
    with pytest.raises(FileNotFoundError, match="imagenet-r/<wnid>/<image>"):
        build_benchmark(config)
    with pytest.raises(FileNotFoundError, match="needs --set data_root"):
        build_benchmark(load_config(None, ["dataset=eurosat"]))


def test_dirichlet_partition_covers_every_sample_once():
    labels = np.repeat(np.arange(4), 50)
    parts = dirichlet_partition(labels, [1, 3], num_clients=5, beta=0.1, min_samples=3,
                                rng=np.random.default_rng(0))
    flat = sorted(i for p in parts for i in p)
    assert flat == sorted(np.flatnonzero(np.isin(labels, [1, 3])).tolist())
    assert min(len(p) for p in parts) >= 3
    with pytest.raises(ValueError, match="could not give"):
        dirichlet_partition(labels, [0], 40, 0.05, 5, np.random.default_rng(0), max_tries=5)


def test_task_split_and_client_sampling():
    tasks = split_classes(196, 10, seed=0, last_task_classes=16)
    assert [len(t) for t in tasks] == [20] * 9 + [16]
    assert sorted(sum(tasks, [])) == list(range(196))
    with pytest.raises(ValueError, match="do not split evenly"):
        split_classes(10, 3, seed=0)
    assert sample_clients(10, 1.0, 0, 0, 0) == list(range(10))
    picked = sample_clients(10, 0.3, 0, 1, 2)
    assert len(picked) == 3 and picked == sample_clients(10, 0.3, 0, 1, 2)


def test_metrics_on_a_known_matrix():
    acc = [[0.9], [0.6, 0.8], [0.5, 0.7, 0.9]]
    out = summarize(acc, [10, 10, 20])
    assert math.isclose(out["final_average_accuracy"], (5 + 7 + 18) / 40)
    assert math.isclose(out["forgetting"], ((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert math.isclose(out["average_incremental_accuracy"], (0.9 + 0.7 + 30 / 40) / 3)


def test_config_overrides_and_errors(tmp_path):
    config = load_config(None, ["rank=8", "lr_a=1e-2", "targets=[attn.qkv]"])
    assert config.rank == 8 and config.lr_a == 0.01 and config.targets == ["attn.qkv"]
    with pytest.raises(ValueError, match="unknown config keys"):
        apply_overrides(config, ["rnak=3"])
    with pytest.raises(ValueError, match="method = 'sgd': must be one of"):
        load_config(None, ["method=sgd"])
    with pytest.raises(ValueError, match="solve_precision = 'half': must be mixed or float64"):
        load_config(None, ["solve_precision=half"])
    assert load_config(None, ["solve_precision=float64"]).solve_precision == "float64"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    preset = tmp_path / "p.yaml"
    preset.write_text("method: fedavg-lora\nrounds: 3\n")
    assert load_config(preset, ["rounds=4"]).rounds == 4


@pytest.mark.parametrize("method", ["fedavg-lora", "regmean-lora", "lorm-a", "lorm-b"])
def test_every_method_runs_and_learns_the_first_task(method, tmp_path):
    summary = run(load_config(None, TINY + [f"method={method}", "num_tasks=5"]), tmp_path,
                  quiet=True)
    assert summary["accuracy_matrix"][0][0] > 0.6

