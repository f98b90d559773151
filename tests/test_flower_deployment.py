"""A real deployment on loopback: scripts/flower-local.sh starts a SuperLink and 3
SuperNodes on 127.0.0.1 with Flower's own commands and runs examples/flower-digits
through them; the accuracy matrix equals `lorm run`'s, and no process it started is
left behind (also when the run fails)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("flwr", reason="Flower is not installed (pip install 'lorm[flower]')")
if shutil.which("flower-superlink", path=os.path.dirname(sys.executable)) is None:
    pytest.skip("flower-superlink is not in this environment", allow_module_level=True)

from lorm.fcil import load_config, run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["num_tasks=2", "max_classes=4", "max_train_per_class=30", "max_test_per_class=20",
         "rounds=1", "local_epochs=1", "lr_a=0.01", "lr_b=0.01"]
LIMIT = 1200  # seconds for the deployment run: 5-10 min were measured on a loaded 2-core machine


def free_port_block(size: int) -> int:
    """The first of ``size`` consecutive loopback ports that are free now."""
    for start in range(20000, 40000, 97):
        ok = True
        for port in range(start, start + size):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    ok = False
                    break
        if ok:
            return start
    raise RuntimeError("no free block of loopback ports")


def flower_processes(logs: Path) -> list[int]:
    """Ids of live processes whose command line names this run's Flower home."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"FLWR_HOME={logs}/flwr-home".encode() in environ:
            found.append(int(entry.name))
    return found


def run_script(tmp_path: Path, extra: list[str], limit: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, LORM_FLOWER_NODES="3", LORM_FLOWER_PORT=str(free_port_block(6)),
               LORM_FLOWER_TIMEOUT=str(limit), LORM_FLOWER_LOGS=str(tmp_path / "logs"),
               LORM_FLOWER_ROUND_TIMEOUT="300",  # then a lost reply is asked for again
               LORM_VENV=str(Path(sys.executable).parent.parent))
    return subprocess.run(["bash", "scripts/flower-local.sh", str(tmp_path / "out"), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit + 120,
                          start_new_session=True)


def test_loopback_deployment_gives_lorm_runs_accuracy_matrix(tmp_path):
    done = run_script(tmp_path, SMALL, LIMIT)
    logs = tmp_path / "logs"
    left = flower_processes(logs)
    for pid in left:  # never leave them running, even when the assertion below fails
        os.kill(pid, signal.SIGKILL)
    assert done.returncode == 0, done.stderr[-3000:] + "\n" + done.stdout[-2000:]
    assert not left, f"processes left running: {left}"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    reference = run(load_config(None, ["num_clients=3", "num_threads=1", *SMALL]),
                    tmp_path / "lorm", quiet=True)
    assert summary["accuracy_matrix"] == reference["accuracy_matrix"]
    assert "final average accuracy" in done.stdout


def test_a_failed_deployment_run_stops_every_process_it_started(tmp_path):
    start = time.monotonic()
    done = run_script(tmp_path, ["method=no-such-method"], limit=60)
    assert done.returncode != 0
    assert time.monotonic() - start < 60 + 180  # the limit, plus starting and stopping
    assert not flower_processes(tmp_path / "logs")
