"""Clients sharded over torch.distributed ranks (gloo, loopback) equal the
single-process run; a dead rank stops the others with a clear error, and resuming
from the last checkpoint finishes like an uninterrupted run.

Tolerance: ranks sum their clients' float64 statistics locally and all-reduce the
partial sums, so the order of additions differs from the single-process run by
float64 round-off (~1e-16 relative). The merged weights are stored in float32, where
such differences vanish except at rare rounding ties; the test allows 1e-6 relative on
the weights and requires identical accuracy matrices.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from lorm.fcil import checkpoint

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ["num_tasks=2", "num_clients=3", "rounds=2", "local_epochs=2", "batch_size=8",
            "num_threads=1", "dist_timeout=60"]


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), str(ROOT)])}


def lorm_run(out: Path, nproc: int, extra: list[str] = (), resume: bool = False):
    args = ["--resume", str(out)] if resume else \
        [*sum((["--set", s] for s in SETTINGS + list(extra)), []), "--output", str(out)]
    if nproc == 1:
        cmd = [sys.executable, "-m", "lorm", "run", "--quiet", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "lorm", "run", "--quiet", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env())


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(out)[0]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    result = lorm_run(out, 1)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("nproc,participation", [(2, 1.0), (3, 1.0), (2, 0.6)])
def test_sharded_run_equals_single_process(single, tmp_path, nproc, participation):
    extra = [f"participation={participation}"]
    if participation < 1.0:  # its own single-process reference with the same sampling
        single = tmp_path / "single"
        assert lorm_run(single, 1, extra).returncode == 0
    result = lorm_run(tmp_path / "sharded", nproc, extra)
    assert result.returncode == 0, result.stderr[-12000:]
    tmp_path = tmp_path / "sharded"
    ours = json.loads((tmp_path / "summary.json").read_text())
    reference = json.loads((single / "summary.json").read_text())
    assert ours["accuracy_matrix"] == reference["accuracy_matrix"]
    sampled = [json.loads(line)["clients"] for line in (tmp_path / "metrics.jsonl").read_text()
               .splitlines() if '"round"' in line]
    assert sampled == [json.loads(line)["clients"] for line in (single / "metrics.jsonl")
                       .read_text().splitlines() if '"round"' in line]
    assert ours["bytes_per_client_per_round"] == reference["bytes_per_client_per_round"]
    mine, theirs = final_weights(tmp_path), final_weights(single)
    assert mine.keys() == theirs.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], theirs[key], rtol=1e-6, atol=1e-7)


def test_sharded_run_under_secure_aggregation_equals_single_process(single, tmp_path):
    """Two ranks, each hosting its share of the clients' masking parties: the masked
    inputs are summed per rank and all-reduced, every rank unmasks the same sum. The
    fixed-point sums differ from the float64 sums of float32 values by at most
    n * 2^-(f+1) per entry (lorm.secagg.fixed_point: 2^-40 relative here), so the merged
    weights agree far inside the tolerance and the accuracy matrix is the same."""
    result = lorm_run(tmp_path, 2, ["secure_aggregation=secagg+"])
    assert result.returncode == 0, result.stderr[-12000:]
    ours = json.loads((tmp_path / "summary.json").read_text())
    reference = json.loads((single / "summary.json").read_text())
    assert ours["accuracy_matrix"] == reference["accuracy_matrix"]
    assert ours["bytes_per_client_per_round"] > reference["bytes_per_client_per_round"]
    mine, theirs = final_weights(tmp_path), final_weights(single)
    for key in mine:
        torch.testing.assert_close(mine[key], theirs[key], rtol=1e-5, atol=1e-6)


CRASHING_RANK = textwrap.dedent("""
    import os, sys
    from lorm.fcil import load_config, run
    from lorm.fcil.loop import Run
    original = Run.run_round
    def run_round(self, task, rnd):
        if self.transport.ctx.rank == 1 and (task, rnd) == (1, 0):
            os._exit(3)  # the rank dies without a word
        return original(self, task, rnd)
    Run.run_round = run_round
    run(load_config(None, sys.argv[2:]), sys.argv[1], quiet=True)
""")


def test_dead_rank_stops_the_others_and_resume_finishes(tmp_path):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    master_port = str(port.getsockname()[1])
    port.close()
    procs = []
    start = time.monotonic()
    for rank in range(2):
        rank_env = {**env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": master_port}
        procs.append(subprocess.Popen([sys.executable, "-c", CRASHING_RANK, str(tmp_path),
                                       *SETTINGS, "dist_timeout=30"],
                                      env=rank_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=300) for p in procs]
    elapsed = time.monotonic() - start
    assert procs[1].returncode == 3
    assert procs[0].returncode != 0
    assert "rank 0 of 2: task 1 round 0" in outputs[0][1], outputs[0][1][-2000:]
    assert elapsed < 240
    progress = checkpoint.latest_state(tmp_path)["progress"]
    assert progress["task"] == 1 and progress["round"] == 0

    resumed = lorm_run(tmp_path, 2, resume=True)
    assert resumed.returncode == 0, resumed.stderr[-12000:]
    uninterrupted = tmp_path.parent / (tmp_path.name + "-whole")
    assert lorm_run(uninterrupted, 2).returncode == 0
    assert json.loads((tmp_path / "summary.json").read_text())["accuracy_matrix"] == \
        json.loads((uninterrupted / "summary.json").read_text())["accuracy_matrix"]


GLOO_THREADS_AFTER_SHUTDOWN = textwrap.dedent("""
    import os, sys, torch
    from lorm.distributed import all_reduce_numbers, init_from_env, shutdown
    ctx = init_from_env(60.0, use_cuda=False)
    import torchvision  # noqa: F401  (a run imports it after joining the group)
    all_reduce_numbers([1.0], ctx, "check", torch.device("cpu"))
    shutdown()
    names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    sys.exit(3 if any("gloo" in name for name in names) else 0)
""")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's /proc")
def test_shutdown_stops_the_gloo_threads(tmp_path):
    """A group still referenced after destroy_process_group keeps gloo's threads alive
    into interpreter shutdown, where they can abort the process (SIGABRT, 'terminate
    called without an active exception'). torchvision's import chain used to capture the
    group in torch.distributed.nn's default arguments."""
    script = tmp_path / "threads.py"
    script.write_text(GLOO_THREADS_AFTER_SHUTDOWN)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(script)],
                            capture_output=True, text=True, timeout=300, env=env())
    assert result.returncode == 0, result.stderr[-12000:]
