"""Flower's own simulation engine (run_simulation, Ray) gives `lorm run`'s accuracy
matrix and, to float32 round-off, its weights: 2 tasks, 1 round each, 3 nodes."""

from __future__ import annotations

import pytest

pytest.importorskip("flwr", reason="Flower is not installed (pip install 'lorm[flower]')")
pytest.importorskip("ray", reason="Flower's simulation needs Ray (pip install 'flwr[simulation]')")

from flwr.simulation import run_simulation  # noqa: E402

from lorm.fcil import checkpoint, load_config, run  # noqa: E402
from lorm.flower import make_client_app, make_server_app  # noqa: E402

from flower_helpers import TINY, assert_same_model  # noqa: E402

SIM = TINY + ["rounds=1"]


def test_run_simulation_equals_lorm_run(tmp_path):
    config = load_config(None, SIM)
    reference = run(config, tmp_path / "lorm", quiet=True)
    server = make_server_app(load_config(None, SIM), run_dir=tmp_path / "flower", poll=0.02,
                             round_timeout=300)
    run_simulation(server_app=server, client_app=make_client_app(), num_supernodes=3,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    ours = checkpoint.latest_state(tmp_path / "flower")
    assert ours is not None, "the ServerApp wrote no checkpoint"
    assert ours["progress"]["acc"] == reference["accuracy_matrix"]
    theirs_t, ours_t = checkpoint.load(tmp_path / "lorm")[0], checkpoint.load(tmp_path / "flower")[0]
    assert_same_model(ours_t, theirs_t)
