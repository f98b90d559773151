"""A real deployment on loopback: scripts/flower-local.sh starts a SuperLink and 3
SuperNodes on 127.0.0.1 with Flower's own commands and runs examples/flower-digits
through them; the accuracy matrix equals `lorm run`'s, and no process it started is
left behind (also when the run fails). Once more as a real federation runs: TLS and
SuperNode authentication (LORM_FLOWER_SECURE=1: throw-away credentials, only the nodes'
keys registered; a SuperNode with an unregistered key is turned away) and secure
aggregation (the server receives masked statistics only), with the same matrix."""

from __future__ import annotations

import json
import os
import re
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


def run_script(tmp_path: Path, extra: list[str], limit: int, nodes: int = 3,
               **knobs: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LORM_FLOWER_NODES=str(nodes),
               LORM_FLOWER_PORT=str(free_port_block(nodes + 4)),
               LORM_FLOWER_TIMEOUT=str(limit), LORM_FLOWER_LOGS=str(tmp_path / "logs"),
               LORM_FLOWER_ROUND_TIMEOUT="300",  # then a lost reply is asked for again
               LORM_VENV=str(Path(sys.executable).parent.parent), **knobs)
    return subprocess.run(["bash", "scripts/flower-local.sh", str(tmp_path / "out"), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit + 120,
                          start_new_session=True, check=False)


def stop_left_processes(logs: Path) -> list[int]:
    """Kill (and return) what is left of a run: never leave it running, even when an
    assertion about it fails."""
    left = flower_processes(logs)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


@pytest.fixture(scope="module")
def reference_matrix(tmp_path_factory) -> list[list[float]]:
    """`lorm run`'s accuracy matrix on the deployment's configuration (once a module)."""
    reference = run(load_config(None, ["num_clients=3", "num_threads=1", *SMALL]),
                    tmp_path_factory.mktemp("lorm"), quiet=True)
    return reference["accuracy_matrix"]


def activated_nodes(superlink_log: Path) -> set[str]:
    """Node ids the SuperLink let in (Flower 1.42 logs each Fleet ActivateNode)."""
    return set(re.findall(r"\[Fleet\.ActivateNode\] Activated node_id=(\d+)",
                          superlink_log.read_text(errors="replace")))


def test_loopback_deployment_gives_lorm_runs_accuracy_matrix(tmp_path, reference_matrix):
    done = run_script(tmp_path, SMALL, LIMIT)
    left = stop_left_processes(tmp_path / "logs")
    assert done.returncode == 0, done.stderr[-3000:] + "\n" + done.stdout[-2000:]
    assert not left, f"processes left running: {left}"
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["accuracy_matrix"] == reference_matrix
    assert "final average accuracy" in done.stdout


def test_tls_deployment_with_node_authentication_gives_the_same_matrix(tmp_path,
                                                                       reference_matrix):
    """TLS on the SuperLink, `--enable-supernode-auth` with the 3 nodes' keys registered,
    and a 4th SuperNode on a real partition that is not (it tries to register itself,
    as an open SuperLink allows), and `secure_aggregation: secagg+` (each exchange four
    message steps, the nodes keeping their parties in Context.state): the run completes
    over TLS with exactly the 3 registered nodes and `lorm run`'s accuracy matrix."""
    done = run_script(tmp_path, SMALL + ["secure_aggregation=secagg+"], 2 * LIMIT,
                      LORM_FLOWER_SECURE="1", LORM_FLOWER_UNLISTED="1")
    logs = tmp_path / "logs"
    left = stop_left_processes(logs)
    assert done.returncode == 0, done.stderr[-3000:] + "\n" + done.stdout[-2000:]
    assert not left, f"processes left running: {left}"
    superlink = (logs / "superlink.log").read_text(errors="replace")
    assert "Uvicorn running on https://127.0.0.1" in superlink  # TLS, not plain HTTP
    assert "unlisted SuperNode 0 refused by the SuperLink" in done.stderr
    assert len(activated_nodes(logs / "superlink.log")) == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["config"]["secure_aggregation"] == "secagg+"
    assert summary["accuracy_matrix"] == reference_matrix
    # the throw-away credentials stay in the logs folder, out of the checkout
    assert (logs / "credentials" / "server.key").stat().st_mode & 0o077 == 0
    untracked = subprocess.run(["git", "ls-files", "--others"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split()
    assert not [f for f in untracked if Path(f).name in ("ca.crt", "server.key", "server.pem")
                or Path(f).name.startswith(("supernode-", "unlisted-"))]


def test_a_failed_deployment_run_stops_every_process_it_started(tmp_path):
    start = time.monotonic()
    done = run_script(tmp_path, ["method=no-such-method"], limit=60)
    assert done.returncode != 0
    assert time.monotonic() - start < 60 + 180  # the limit, plus starting and stopping
    assert not flower_processes(tmp_path / "logs")


def test_a_supernode_whose_key_is_not_registered_is_refused(tmp_path):
    """The short check: a SuperLink with TLS and SuperNode authentication, one registered
    node and two that are not: one without a key (it tries Flower's self-registration,
    which an open SuperLink accepts) and one with a key pair nobody registered. Both are
    refused (their exits and the SuperLink's log say why), the registered one is let in,
    then the run fails (a bad method) and every process is stopped."""
    start = time.monotonic()
    done = run_script(tmp_path, ["method=no-such-method"], limit=60, nodes=1,
                      LORM_FLOWER_SECURE="1", LORM_FLOWER_UNLISTED="2")
    logs = tmp_path / "logs"
    left = stop_left_processes(logs)
    assert not left, f"processes left running: {left}"
    assert time.monotonic() - start < 60 + 180
    assert done.returncode != 0
    for k in (0, 1):
        assert f"unlisted SuperNode {k} refused by the SuperLink" in done.stderr, \
            done.stderr[-3000:]
    assert "flwr run ended without a summary" in done.stderr  # it got past the check
    keyless = (logs / "unlisted-0.log").read_text(errors="replace")
    assert "All SuperNodes must be registered via the CLI" in keyless
    keyed = (logs / "unlisted-1.log").read_text(errors="replace")
    assert "Failed to activate SuperNode" in keyed
    superlink = (logs / "superlink.log").read_text(errors="replace")
    assert "No SuperNode found with the given public key" in superlink
    assert len(activated_nodes(logs / "superlink.log")) == 1  # the registered node only
