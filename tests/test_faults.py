"""Faults and hostile input: crashes at every checkpoint boundary, SIGKILL, damaged
files, occupied run directories, bad config values, poisoned client updates and
damaged wire messages. Each case checks the message and that nothing persisted changed."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

import lorm_ext
from lorm import Aggregator, ClientUpdate, SolveStats, UpdateRejected
from lorm.aggregate import MergeError
from lorm.cli import main as cli_main
from lorm.fcil import checkpoint, load_config, run
from lorm.fcil.loop import resume
from lorm.messages import MAGIC, MalformedUpdate
from run_outcome import assert_same_outcome, outcome

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["num_tasks=2", "num_clients=2", "rounds=2", "local_epochs=1", "batch_size=32",
         "num_threads=1"]
BOUNDARIES = ("before tensors", "after tensors", "after json temp", "after commit")
SAVES = 1 + 2 * (2 + 1)  # the initial save, then per task: each round and the task end


class SimulatedCrash(Exception):
    """Raised at an injected fault point: the process 'dies' there."""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    run(load_config(None, SMALL), out, quiet=True)
    return outcome(out)


@pytest.mark.parametrize("save_index", range(SAVES))
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_crash_at_every_save_boundary_then_resume_is_exact(save_index, boundary, uninterrupted,
                                                           tmp_path, monkeypatch):
    calls = iter(range(10_000))
    target = save_index * len(BOUNDARIES) + BOUNDARIES.index(boundary)

    def crash_at_target(where):
        if next(calls) == target:
            raise SimulatedCrash(f"save {save_index}, {where}")

    monkeypatch.setattr(checkpoint, "fault_point", crash_at_target)
    with pytest.raises(SimulatedCrash):
        run(load_config(None, SMALL), tmp_path, quiet=True)
    monkeypatch.setattr(checkpoint, "fault_point", lambda where: None)
    if save_index == 0 and boundary != "after commit":
        # The run died before its first checkpoint: nothing to resume, and it says so.
        with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
            resume(tmp_path, quiet=True)
        run(load_config(None, SMALL), tmp_path, quiet=True, overwrite=True)
    else:
        resume(tmp_path, quiet=True)
    assert_same_outcome(outcome(tmp_path), uninterrupted)


def test_sigkill_at_random_moments_then_resume_is_exact(uninterrupted, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT)])}
    base = [sys.executable, "-m", "lorm", "run", "--quiet"]
    first = base + sum((["--set", s] for s in SMALL), []) + ["--output", str(tmp_path)]
    rng = random.Random(1234)
    kills = 0
    command = first
    for attempt in range(3):
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("checkpoint-*.json")) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=120)
        command = base + ["--resume", str(tmp_path)]
    finished = subprocess.run(command, env=env, capture_output=True, timeout=300)
    assert finished.returncode == 0, finished.stderr.decode()[-2000:]
    assert kills >= 1
    assert_same_outcome(outcome(tmp_path), uninterrupted)


# -- run directories and checkpoints on disk -------------------------------------------

def cli(*args, capsys) -> tuple[int, str]:
    code = cli_main(["run", "--quiet", *args])
    return code, capsys.readouterr().err


def small_args(out: Path, *extra: str) -> list[str]:
    return [*sum((["--set", s] for s in SMALL + list(extra)), []), "--output", str(out)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    run(load_config(None, SMALL), out, quiet=True)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_a_run_directory_in_use_is_refused_and_left_alone(finished_run, capsys):
    before = snapshot(finished_run)
    code, err = cli(*small_args(finished_run), capsys=capsys)
    assert code == 2 and "not empty" in err and "--resume" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert snapshot(finished_run) == before


def test_overwrite_touches_nothing_until_the_new_run_has_started(finished_run, tmp_path, capsys):
    before = snapshot(finished_run)
    code, err = cli(*small_args(finished_run, f"pretrained={tmp_path / 'missing.safetensors'}"),
                    "--overwrite", capsys=capsys)
    assert code == 2 and "missing.safetensors" in err
    assert snapshot(finished_run) == before


def test_overwrite_replaces_a_finished_run(tmp_path, capsys):
    (tmp_path / "old-file.txt").write_text("from an earlier run")
    code, _ = cli(*small_args(tmp_path), "--overwrite", capsys=capsys)
    assert code == 0
    assert not (tmp_path / "old-file.txt").exists()
    assert (tmp_path / "summary.json").is_file()


def copy_run(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name, data in snapshot(src).items():
        (dst / name).write_bytes(data)
    return dst


def kept_parts(run_dir: Path) -> list[dict[str, dict]]:
    """The parts named by the two kept checkpoint JSONs, older first."""
    names = sorted(run_dir.glob("checkpoint-*.json"))
    assert len(names) == checkpoint.KEEP
    return [json.loads(p.read_text())["parts"] for p in names]


def test_truncated_latest_checkpoint_falls_back_to_the_previous(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path / "run")
    previous, latest = kept_parts(run_dir)
    path = run_dir / latest["round"]["file"]
    path.write_bytes(path.read_bytes()[:1000])
    tensors, state = checkpoint.load(run_dir)
    err = capsys.readouterr().err
    assert path.name in err and "resuming from checkpoint" in err
    assert state["parts"] == previous


def test_values_changed_on_disk_are_detected_and_not_trained_on(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path / "run")
    files = {ref["file"] for parts in kept_parts(run_dir) for ref in parts.values()}
    for path in (run_dir / name for name in files):  # same size, one byte changed (a value)
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x40
        path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.CheckpointError, match="sha256"):
        checkpoint.load(run_dir)
    code = cli_main(["run", "--resume", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and "no whole checkpoint" in err
    assert err.strip().splitlines()[-1].startswith("error:")


def test_checkpoints_write_what_changed_and_keep_only_what_is_named(tmp_path, monkeypatch):
    """A round's save writes the round part alone (head and factors); the cross-task
    sums and residuals (the task part) are written once per task and named by the
    round saves after it; no file outlives the two kept checkpoints that name it."""
    written: list[tuple[str, int]] = []
    original = checkpoint._write_atomically

    def record(path, data):
        written.append((path.name, len(data)))
        original(path, data)

    monkeypatch.setattr(checkpoint, "_write_atomically", record)
    run(load_config(None, SMALL), tmp_path, quiet=True)
    saves = [[n for n, _ in written if n.startswith(f"checkpoint-{k:06d}-")]
             for k in range(1, SAVES + 1)]
    task_end_saves = {1, 4, 7}  # the first save, and each task's end (2 tasks x 2 rounds)
    for k, files in enumerate(saves, start=1):
        parts = sorted(n.rsplit("-", 1)[1] for n in files)
        assert parts == (["round.safetensors", "task.safetensors"] if k in task_end_saves
                         else ["round.safetensors"]), (k, files)
    # between rounds no layer serves a dense delta: the factors and the head alone
    round_bytes = max(b for n, b in written if int(n.split("-")[1]) not in task_end_saves)
    task_bytes = max(b for n, b in written if n.endswith("-task.safetensors"))
    assert round_bytes < task_bytes / 10
    previous, latest = kept_parts(tmp_path)
    assert previous["task"]["file"] == "checkpoint-000004-task.safetensors"
    named = {ref["file"] for parts in (previous, latest) for ref in parts.values()}
    on_disk = {p.name for p in tmp_path.glob("checkpoint-*") if not p.name.endswith(".json")}
    assert on_disk == named
    round_keys = checkpoint._read_part(tmp_path, "", previous["round"]).keys()
    assert round_keys and all(k.startswith("head.") or k.rsplit(".", 1)[1] in ("A", "B", "delta")
                              for k in round_keys)


def test_one_file_checkpoints_of_earlier_lorm_still_load(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    tensors, state = checkpoint.load(run_dir)
    for path in run_dir.glob("checkpoint-*"):
        path.unlink()
    blob = st_save(tensors)
    (run_dir / "checkpoint-000009.safetensors").write_bytes(blob)
    old = {"config": state["config"], "progress": state["progress"],
           "tensors": "checkpoint-000009.safetensors", "sha256": hashlib.sha256(blob).hexdigest()}
    (run_dir / "checkpoint-000009.json").write_text(json.dumps(old))
    again, _ = checkpoint.load(run_dir)
    assert again.keys() == tensors.keys() and all(torch.equal(again[k], tensors[k]) for k in again)
    before = json.loads((run_dir / "summary.json").read_text())["accuracy_matrix"]
    assert resume(run_dir, quiet=True)["accuracy_matrix"] == before


def test_resume_refuses_options_that_would_change_the_run(finished_run, capsys):
    for extra in (["--set", "rank=8"], ["--output", "elsewhere"], ["--config", "x.yaml"]):
        code = cli_main(["run", "--resume", str(finished_run), *extra])
        err = capsys.readouterr().err
        assert code == 2 and "--resume" in err, (extra, err)


def test_resume_accepts_knobs_that_cannot_change_results(finished_run, tmp_path, capsys):
    run_dir = copy_run(finished_run, tmp_path / "run")
    before = json.loads((run_dir / "summary.json").read_text())["accuracy_matrix"]
    code = cli_main(["run", "--quiet", "--resume", str(run_dir), "--set", "num_threads=1",
                     "--set", "dist_timeout=30"])
    assert code == 0
    assert json.loads((run_dir / "summary.json").read_text())["accuracy_matrix"] == before


# -- config and CLI ---------------------------------------------------------------------

@pytest.mark.parametrize("setting, field", [
    ("rounds=abc", "rounds"), ("rank=[1]", "rank"), ("rounds=1.5", "rounds"),
    ("rounds=true", "rounds"), ("amp=maybe", "amp"), ("img_size=0", "img_size"),
    ("targets=attn.qkv", "targets"), ("beta=-1", "beta"), ("lr_a=0", "lr_a"),
    ("device=gpu", "device"), ("participation=1.5", "participation"),
    ("num_threads=-1", "num_threads"), ("data_root=3", "data_root")])
def test_bad_config_values_are_one_line_and_write_nothing(setting, field, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = cli("--set", setting, "--output", str(out), capsys=capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and f"{field} = " in err and "must be" in err
    assert not out.exists()


def test_unknown_backbone_and_missing_device_are_one_line(tmp_path, capsys):
    code, err = cli("--set", "backbone=vit_nonexistent_999", "--output", str(tmp_path / "a"),
                    capsys=capsys)
    assert code == 2 and "unknown backbone" in err and len(err.strip().splitlines()) == 1
    if not torch.cuda.is_available():
        code, err = cli("--set", "device=cuda", "--output", str(tmp_path / "b"), capsys=capsys)
        assert code == 2 and "CUDA device" in err and len(err.strip().splitlines()) == 1


def test_rgb_images_for_a_one_channel_backbone_are_refused_before_training(tmp_path, capsys):
    from PIL import Image
    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    code, err = cli("--set", "dataset=image-folder", "--set", f"data_root={tmp_path / 'data'}",
                    "--set", "num_tasks=1", "--set", "num_clients=1", "--set", "img_size=8",
                    "--output", str(out), capsys=capsys)
    assert code == 2 and "1-channel" in err and "(3, 8, 8)" in err
    assert not out.exists()


# -- client updates that must not reach the sums ----------------------------------------

def gram(d: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(3 * d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    g = x.T @ x
    return (g + g.T) / 2


def a_update(p: torch.Tensor, q: torch.Tensor, samples=5, bias=None, factor="A") -> ClientUpdate:
    head_q = gram(3, 1)
    return ClientUpdate(0, 1, factor, samples, layers={"l": SolveStats(p=p, q=q)},
                        head=SolveStats(p=torch.ones(2, 3, dtype=torch.float64), q=head_q),
                        head_bias=torch.zeros(2, dtype=torch.float64) if bias is None else bias)


def sums_of(agg: Aggregator) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in agg.partial_sums()[0].items()}


def assert_refused(agg: Aggregator, update: ClientUpdate, match: str) -> None:
    before = sums_of(agg)
    with pytest.raises(UpdateRejected, match=match):
        agg.add(update)
    after = sums_of(agg)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_huge_finite_values_cannot_overflow_the_sums():
    agg = Aggregator(0, 1, "A")
    q = gram(4)
    agg.add(a_update(torch.full((2, 4), 1e308, dtype=torch.float64), q))
    assert_refused(agg, a_update(torch.full((2, 4), 1e308, dtype=torch.float64), q), "overflow")
    assert_refused(agg, a_update(torch.ones(2, 4, dtype=torch.float64), q, samples=1000,
                                 bias=torch.full((2,), 1e306, dtype=torch.float64)),
                   "head bias|overflow|NaN or Inf")


def test_result_never_returns_non_finite_tensors():
    agg = Aggregator(0, 1, "A", dtype=torch.float32)
    q = torch.eye(4, dtype=torch.float64) * 1e-30
    agg.add(a_update(torch.full((2, 4), 1e20, dtype=torch.float64), q))  # 1e50 > float32 max
    with pytest.raises(MergeError, match="not finite"):
        agg.result()


def test_crafted_non_symmetric_q_is_refused():
    agg = Aggregator(0, 1, "A")
    q = gram(6)
    q[0, 5] += 1e-9 * q[0, 5].abs()  # an ulp-scale asymmetry a sampled probe misses
    assert_refused(agg, a_update(torch.ones(2, 6, dtype=torch.float64), q), "not symmetric")


def test_indefinite_q_is_refused_on_arrival(monkeypatch):
    from lorm import aggregate
    # Eigenvalues 1 (x5) and -4.5 along u = ones / sqrt(6); every diagonal entry is
    # 1 - 5.5 / 6 > 0, so only the curvature probes can see it. One probe finds a
    # negative v.T q v with probability ~0.34; 64 probes miss with probability ~3e-12.
    # The probes are drawn when the first update is planned and reused after it, so the
    # count must be raised before that update (8 probes miss with probability ~0.04).
    monkeypatch.setattr(aggregate, "CURVATURE_PROBES", 64)
    agg = Aggregator(0, 1, "A")
    agg.add(a_update(torch.ones(2, 6, dtype=torch.float64), gram(6)))
    u = torch.full((6, 1), 6 ** -0.5, dtype=torch.float64)
    q = torch.eye(6, dtype=torch.float64) - 5.5 * (u @ u.T)
    q = (q + q.T) / 2
    assert (q.diagonal() > 0).all()
    assert_refused(agg, a_update(torch.ones(2, 6, dtype=torch.float64), q),
                   "negative curvature")


def test_solve_reports_an_indefinite_sum_instead_of_truncating_it():
    q = torch.diag(torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64))
    q = q + 0.0 * torch.ones(3, 3, dtype=torch.float64)  # a full (not diagonal) matrix
    with pytest.raises(ValueError, match="not positive semi-definite"):
        lorm_ext.spd_solve(q, torch.ones(1, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        lorm_ext.reference.spd_solve(q, torch.ones(1, 3, dtype=torch.float64))
    agg = Aggregator(0, 1, "A")
    agg.replace_sums({"layer/l/p": torch.ones(2, 3, dtype=torch.float64), "layer/l/q": q},
                     ["l"], num_clients=1, num_samples=1)
    with pytest.raises(MergeError, match="solving l: .*not positive semi-definite"):
        agg.result()


def test_end_of_task_updates_carry_no_p():
    agg = Aggregator(0, 2, "G")
    update = ClientUpdate(0, 2, "G", 3, layers={"l": SolveStats(p=torch.full((2, 4), float("nan")),
                                                                q=gram(4))})
    assert_refused(agg, update, "sends only q")
    assert agg.num_clients == 0


def test_bool_sample_counts_and_requires_grad_tensors():
    agg = Aggregator(0, 1, "A")
    assert_refused(agg, a_update(torch.ones(2, 4, dtype=torch.float64), gram(4), samples=True),
                   "num_samples")
    p = torch.ones(2, 4, dtype=torch.float64, requires_grad=True)
    agg.add(a_update(p * 2, gram(4)))
    assert all(t.grad_fn is None and not t.requires_grad for t in sums_of(agg).values())
    assert all(t.grad_fn is None for t in agg.partial_sums()[0].values())


# -- wire messages ------------------------------------------------------------------------

def wire_update() -> ClientUpdate:
    return ClientUpdate(2, 1, "A", 37, layers={"blocks.0.attn.qkv": SolveStats(
        p=torch.randn(2, 6, dtype=torch.float64), q=gram(6))},
        head=SolveStats(p=torch.randn(3, 6, dtype=torch.float64), q=gram(6, 2)),
        head_bias=torch.randn(3, dtype=torch.float64))


def test_every_single_bit_flip_is_refused():
    data = wire_update().to_bytes()
    rng = random.Random(0)
    for _ in range(3000):
        bit = rng.randrange(8 * len(data))
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(MalformedUpdate):
            ClientUpdate.from_bytes(bytes(flipped))


def test_every_truncation_is_one_error_type():
    data = wire_update().to_bytes()
    for length in range(0, len(data), 7):
        with pytest.raises(MalformedUpdate):
            ClientUpdate.from_bytes(data[:length])
    back = ClientUpdate.from_bytes(data)
    assert back.num_samples == 37 and back.layers["blocks.0.attn.qkv"].q.shape == (6, 6)


def envelope(tensors: dict, meta: dict) -> bytes:
    body = st_save(tensors, metadata={"lorm": json.dumps(meta)})
    return MAGIC + hashlib.sha256(body).digest() + body


@pytest.mark.parametrize("meta, match", [
    ({"task": 0, "round": 0, "factor": "A", "num_samples": 1, "version": 99}, "wire version 99"),
    ({"task": 0, "round": 0, "factor": "A", "num_samples": True, "version": 2}, "num_samples"),
    ({"task": 0, "round": 0, "factor": "Z", "num_samples": 1, "version": 2}, "factor"),
    ({"task": -1, "round": 0, "factor": "A", "num_samples": 1, "version": 2}, "task and round"),
    ({"task": 0, "round": 0, "factor": "A", "num_samples": 1}, "exactly the keys"),
])
def test_well_formed_messages_with_bad_metadata_are_refused(meta, match):
    tensors = {"layer/l/p": torch.ones(1, 2), "layer/l/q": torch.ones(2)}
    with pytest.raises(MalformedUpdate, match=match):
        ClientUpdate.from_bytes(envelope(tensors, meta))


def test_unknown_or_incomplete_tensors_are_refused():
    meta = {"task": 0, "round": 0, "factor": "A", "num_samples": 1, "version": 2}
    with pytest.raises(MalformedUpdate, match="unexpected tensor"):
        ClientUpdate.from_bytes(envelope({"weights/evil": torch.ones(2)}, meta))
    with pytest.raises(MalformedUpdate, match="no q"):
        ClientUpdate.from_bytes(envelope({"layer/l/p": torch.ones(1, 2)}, meta))


def test_all_gather_json_moves_no_pickles(monkeypatch):
    import pickle

    import torch.distributed as dist
    from lorm.distributed import DistContext, all_gather_json

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        value = {"spec": {"layer/x/q": [3, 3]}, "layers": ["x"]}
        assert all_gather_json(value, DistContext(0, 1), "test", "cpu") == [value]
    finally:
        dist.destroy_process_group()


# -- ops ------------------------------------------------------------------------------------

def test_accumulator_aliasing_its_input_is_refused():
    x = torch.randn(4, 4)
    before = x.clone()
    with pytest.raises(lorm_ext.LormInputError, match="overlaps"):
        lorm_ext.gram_update(x, x)
    assert torch.equal(x, before)
    buffer = torch.randn(20)
    with pytest.raises(lorm_ext.LormInputError, match="overlaps"):
        lorm_ext.gram_update(buffer[:4], buffer[2:18].reshape(4, 4))
    acc = torch.zeros(2, 2)
    with pytest.raises(lorm_ext.LormInputError, match="overlaps"):
        lorm_ext.lowrank_gram_update(acc, torch.randn(3, 4), torch.randn(2, 4), acc.view(-1))
    lorm_ext.gram_update(buffer[:4].clone(), buffer[4:20].reshape(4, 4))  # disjoint: fine


@pytest.mark.parametrize("full", [True, False])
def test_spd_solve_treats_subnormal_q_like_zero(full):
    diagonal = torch.tensor([1e-310, 2e-310], dtype=torch.float64)
    q = torch.diag(diagonal) if full else diagonal
    p = torch.ones(1, 2, dtype=torch.float64)
    x = lorm_ext.spd_solve(q, p)
    assert torch.isfinite(x).all() and torch.equal(x, torch.zeros_like(x))
    assert torch.equal(lorm_ext.reference.spd_solve(q, p), x)


def test_eager_ops_refuse_meta_tensors():
    meta = torch.empty(3, 4, device="meta")
    with pytest.raises(lorm_ext.LormInputError, match="meta"):
        lorm_ext.gram_update(torch.zeros(4, device="meta"), meta)
    with pytest.raises(lorm_ext.LormInputError, match="meta"):
        lorm_ext.spd_solve(torch.eye(4, device="meta"), meta)
