"""The authors' run semantics (docs/fidelity.md), each on a tiny problem whose expected
numbers the test works out itself."""

import json

import pytest
import torch

from lorm.fcil import load_config, run
from lorm.fcil import client as client_module
from lorm.fcil.loop import Run
from lorm.merge import running_mean
from lorm.fcil.methods import RegMeanLoRA, make_method
from lorm.fcil.metrics import forgetting, forgetting_fed_mammoth
from lorm.lora import LoRALinear
from lorm.backbones.timm_vit import build_lora_model

TWO_TASKS = ["num_tasks=2", "num_clients=3", "rounds=2", "local_epochs=1", "batch_size=32",
             "num_threads=1"]


def test_running_mean_of_residuals_by_hand():
    history = {"l": torch.tensor([[2.0, 4.0]])}  # dW_0 + dW_1 = [1, 1] + [1, 3]
    current = {"l": torch.tensor([[3.0, 1.0]])}
    assert torch.equal(running_mean(history, current, 2)["l"], torch.tensor([[5 / 3, 5 / 3]]))
    assert running_mean({}, current, 0)["l"] is current["l"]


def record_task_residuals(monkeypatch) -> list[dict]:
    """Every task's residuals dW_t as the loop takes them from the method."""
    seen = []
    original = Run.end_task

    def end_task(self, task):
        seen.append({n: r.clone() for n, r in self.method.task_residuals(self.server.layers).items()})
        return original(self, task)

    monkeypatch.setattr(Run, "end_task", end_task)
    return seen


def test_statistics_pass_sees_the_running_mean_from_task_1(monkeypatch, tmp_path):
    residuals = record_task_residuals(monkeypatch)
    served = []  # (task, {layer: residual served}, {layer: B_i A_i of the client})
    original = client_module.serving

    def serving(layers, given):
        if all(isinstance(l, LoRALinear) for l in layers.values()):
            served.append(({n: l.B.detach() @ l.A.detach() for n, l in layers.items()},
                           {n: r.clone() for n, r in given.items()}))
        return original(layers, given)

    monkeypatch.setattr(client_module, "serving", serving)
    run(load_config(None, TWO_TASKS + ["method=lorm"]), tmp_path, quiet=True)
    # Task 0 serves only the end-of-task residual (3 clients); from task 1 every round's
    # statistics pass serves (dW_0 + B_i A_i) / 2, and the end-of-task pass serves
    # dW_1 and then (dW_0 + dW_1) / 2.
    dw0, dw1 = residuals
    round_passes = served[3:3 + 2 * 3]
    assert len(round_passes) == 6
    for client_ba, given in round_passes:
        for name in dw0:
            torch.testing.assert_close(given[name], (dw0[name] + client_ba[name]) / 2)
    end_passes = [given for _, given in served[3 + 6:]]
    assert len(end_passes) == 2 * 3
    for name in dw0:
        torch.testing.assert_close(end_passes[1][name], (dw0[name] + dw1[name]) / 2)


def test_current_stats_model_serves_nothing_in_rounds(monkeypatch, tmp_path):
    calls = []
    original = client_module.serving
    monkeypatch.setattr(client_module, "serving", lambda l, r: calls.append(1) or original(l, r))
    run(load_config(None, TWO_TASKS + ["stats_model=current"]), tmp_path, quiet=True)
    assert len(calls) == 2 * 3  # only the end-of-task passes: dW_t, per task and client


def test_fedavg_lora_deploys_the_mean_of_task_residuals_and_sends_no_grams(monkeypatch, tmp_path):
    residuals = record_task_residuals(monkeypatch)
    captured = {}
    original_finish = Run.finish

    def finish(self):
        captured.update({n: l.delta.clone() for n, l in self.server.layers.items()})
        return original_finish(self)

    monkeypatch.setattr(Run, "finish", finish)
    summary = run(load_config(None, TWO_TASKS + ["method=fedavg-lora"]), tmp_path, quiet=True)
    dw0, dw1 = residuals
    for name, delta in captured.items():
        torch.testing.assert_close(delta, (dw0[name] + dw1[name]) / 2)
    assert summary["task_end_bytes_per_client"] == 0
    other = run(load_config(None, TWO_TASKS + ["method=fedavg-lora",
                                               "fedavg_cross_task=gram-merge"]),
                tmp_path / "gram", quiet=True)
    assert other["task_end_bytes_per_client"] > 0


def test_regmean_lora_uses_its_own_alpha_by_hand():
    method = make_method(load_config(None, ["method=regmean-lora"]))
    assert isinstance(method, RegMeanLoRA) and method.alpha_b == 0.5 and method.stats_mode(0) == "full"
    layer = LoRALinear(torch.nn.Linear(2, 1, bias=False), rank=1)
    layer.set_factors(a=torch.tensor([[1.0, 0.0]]), b=torch.tensor([[2.0]]))  # B A = [[2, 0]]

    class Stats:
        grams = {"l": torch.tensor([[4.0, 2.0], [2.0, 1.0]])}

    out = method.layer_stats(0, {"l": layer}, Stats, 1)["l"]
    # 0.5 G + 0.5 diag(G) = [[4, 1], [1, 1]]; p = [[2, 0]] @ that = [[8, 2]]
    assert torch.equal(out.q, torch.tensor([[4.0, 1.0], [1.0, 1.0]], dtype=torch.float64))
    assert torch.equal(out.p, torch.tensor([[8.0, 2.0]], dtype=torch.float64))


def round_clients(run_dir) -> dict[int, list[list[int]]]:
    out: dict[int, list[list[int]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["type"] == "round":
            out.setdefault(record["task"], []).append(record["clients"])
    return out


def test_clients_are_sampled_once_per_task(monkeypatch, tmp_path):
    ends = []
    original = Run.task_end_clients
    monkeypatch.setattr(Run, "task_end_clients",
                        lambda self, task: ends.append(original(self, task)) or ends[-1])
    settings = ["num_tasks=2", "num_clients=6", "participation=0.5", "rounds=3",
                "local_epochs=1", "batch_size=32", "num_threads=1", "min_samples_per_client=0"]
    run(load_config(None, settings), tmp_path / "task", quiet=True)
    per_task = round_clients(tmp_path / "task")
    for task, rounds in per_task.items():
        assert len(rounds[0]) == 3 and all(r == rounds[0] for r in rounds)
        assert ends[task] == rounds[0]
    run(load_config(None, settings + ["client_sampling=per-round"]), tmp_path / "round",
        quiet=True)
    per_round = round_clients(tmp_path / "round")
    assert any(len({tuple(r) for r in rounds}) > 1 for rounds in per_round.values())
    assert ends[2:] == [list(range(6))] * 2  # per-round sampling: every client at task end


def test_forgetting_both_definitions_by_hand():
    acc = [[0.9], [0.5, 0.8], [0.6, 0.7, 0.95]]
    assert forgetting(acc) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.7)) / 2)
    assert forgetting_fed_mammoth(acc) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.7) + 0) / 3)


def test_head_init_is_timm_default_unless_asked():
    _, _, head = build_lora_model("tiny-vit", 10, 4, ["attn.qkv"], seed=0, pretrained="none")
    std = head.weight.std().item()
    assert 0.017 < std < 0.023 and head.weight.abs().max() < 0.1
    assert torch.equal(head.bias, torch.zeros(10))
    _, _, kept = build_lora_model("tiny-vit", 10, 4, ["attn.qkv"], seed=0, pretrained="none",
                                  head_init="backbone")
    assert torch.equal(kept.weight, torch.zeros_like(kept.weight))  # timm's jax init


def test_presets_copy_the_published_run_commands():
    from lorm.presets import preset_names
    presets = {name: load_config(name) for name in preset_names() if not name.startswith("clinc150")}
    assert len(presets) == 18  # the paper's image settings
    # Two of fed-mammoth's README commands, transcribed by hand:
    # seq-cifar100, alpha 0.5: --lr=0.003 --r=1 (regmean_rounds default 1)
    c = presets["cifar100-beta0.5"]
    assert (c.rank, c.lr_a, c.lr_b, c.lr_head, c.stats_passes) == (1, 0.003, 0.003, 0.003, 1)
    # seq-cars, alpha 0.2: --lr=0.01 --lr_B=0.001 --lr_A=0.01 --r=4 --regmean_rounds=2, 10 rounds
    c = presets["cars196-beta0.2"]
    assert (c.rank, c.lr_a, c.lr_b, c.lr_head, c.stats_passes, c.rounds) == \
        (4, 0.01, 0.001, 0.01, 2, 10)
    assert all(p.pretrained == "timm" and p.alpha_backbone == 0 for p in presets.values())
