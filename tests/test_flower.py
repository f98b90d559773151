"""lorm.flower without processes: records, and LoRMStrategy over an in-process grid
(LocalGrid) against `lorm run` with the same config, plus the faults a federation has."""

from __future__ import annotations

import json
import logging

import pytest
import torch

flwr = pytest.importorskip("flwr", reason="Flower is not installed (pip install 'lorm[flower]')")

from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict  # noqa: E402

from lorm import ClientUpdate, SolveStats  # noqa: E402
from lorm.fcil import checkpoint, load_config, run  # noqa: E402
from lorm.flower import LoRMStrategy, RoundFailed, make_client_app  # noqa: E402
from lorm.flower._local_grid import LocalGrid  # noqa: E402
from lorm.flower.records import (META, STYPE, UPDATE, content_to_update,  # noqa: E402
                                 update_to_content)
from lorm.messages import MalformedUpdate  # noqa: E402

from flower_helpers import TINY, assert_same_model  # noqa: E402


def gram(d: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(3 * d, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return x.T @ x


def an_update(task=0, rnd=1, factor="A") -> ClientUpdate:
    return ClientUpdate(task, rnd, factor, 7, layers={"blocks.0.attn.qkv": SolveStats(
        p=torch.randn(2, 5, dtype=torch.float64), q=gram(5))},
        head=SolveStats(p=torch.randn(3, 5, dtype=torch.float64), q=gram(5, 1)),
        head_bias=torch.randn(3, dtype=torch.float64))


# -- records ------------------------------------------------------------------------------

@pytest.mark.parametrize("wire, gram_dtype", [(torch.float32, None), (torch.bfloat16, torch.float32),
                                              (torch.float64, torch.float16)])
def test_records_carry_the_wire_tensors_exactly(wire, gram_dtype):
    update = an_update()
    content = update_to_content(update, wire, gram_dtype)
    assert all(a.stype == STYPE for a in content[UPDATE].values())
    back, nbytes = content_to_update(content)
    assert nbytes == update.payload_nbytes(wire, gram_dtype)
    assert (back.task, back.round, back.factor, back.num_samples) == (0, 1, "A", 7)
    via_bytes = ClientUpdate.from_bytes(update.to_bytes(wire, gram_dtype), dtype=None)
    for key, t in via_bytes.tensors().items():
        assert torch.equal(back.tensors()[key], t) and back.tensors()[key].dtype == t.dtype


def _tampered(content: RecordDict, key: str, **fields) -> RecordDict:
    def changed(a: Array) -> Array:
        kept = dict(dtype=a.dtype, shape=a.shape, stype=a.stype, data=a.data)
        return Array(**{**kept, **fields})

    arrays = ArrayRecord({k: (changed(a) if k == key else a) for k, a in content[UPDATE].items()})
    return RecordDict({UPDATE: arrays, META: content[META]})


@pytest.mark.parametrize("fields, match", [
    (dict(stype="numpy.ndarray"), "stype"),
    (dict(dtype="int32"), "dtype 'int32'"),
    (dict(dtype="object"), "dtype 'object'"),
    (dict(shape=(2, 4)), "bytes for float32"),
    (dict(data=b"\0" * 3), "3 bytes"),
])
def test_malformed_arrays_are_refused_before_a_byte_is_read(fields, match):
    content = update_to_content(an_update())
    with pytest.raises(MalformedUpdate, match=match):
        content_to_update(_tampered(content, "layer/blocks.0.attn.qkv/p", **fields))


def test_missing_records_and_bad_metadata_are_refused():
    content = update_to_content(an_update())
    with pytest.raises(MalformedUpdate, match="no lorm.meta"):
        content_to_update(RecordDict({UPDATE: content[UPDATE]}))
    meta = dict(content[META], version=99)
    with pytest.raises(MalformedUpdate, match="wire version 99"):
        content_to_update(RecordDict({UPDATE: content[UPDATE], META: ConfigRecord(meta)}))
    with pytest.raises(MalformedUpdate, match="unexpected tensor"):
        content_to_update(RecordDict({UPDATE: ArrayRecord({"weights/evil": Array(
            dtype="float32", shape=(1,), stype=STYPE, data=b"\0" * 4)}), META: content[META]}))


# -- the strategy against lorm run --------------------------------------------------------

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """`lorm run` with TINY: its summary and final checkpoint."""
    out = tmp_path_factory.mktemp("lorm-run")
    summary = run(load_config(None, TINY), out, quiet=True)
    return summary, checkpoint.load(out)[0]


def flower_run(tmp_path, grid: LocalGrid, overrides=(), **kwargs):
    strategy = LoRMStrategy(load_config(None, TINY + list(overrides)), tmp_path, poll=0.0, **kwargs)
    strategy.start(grid)
    return strategy.summary_, checkpoint.load(tmp_path)[0]


def test_flower_run_equals_lorm_run(reference, tmp_path):
    summary, tensors = reference
    ours, our_tensors = flower_run(tmp_path, LocalGrid(make_client_app(), range(3)))
    assert ours["accuracy_matrix"] == summary["accuracy_matrix"]
    assert ours["final_average_accuracy"] == summary["final_average_accuracy"]
    assert_same_model(our_tensors, tensors)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["senders"] for r in records if r["type"] == "round"] == [3, 3, 3, 3]


@pytest.mark.parametrize("method", ["fedavg-lora", "regmean-lora"])
def test_the_baselines_equal_lorm_run_too(method, tmp_path):
    """The same Method objects on both sides: fedavg-lora (no statistics pass, plain
    mean across tasks, nothing sent at task ends) and regmean-lora (dense residuals)."""
    settings = [f"method={method}", "rounds=1"]
    reference = run(load_config(None, TINY + settings), tmp_path / "lorm", quiet=True)
    ours, our_tensors = flower_run(tmp_path / "flower", LocalGrid(make_client_app(), range(3)),
                                   settings)
    assert ours["accuracy_matrix"] == reference["accuracy_matrix"]
    assert_same_model(our_tensors, checkpoint.load(tmp_path / "lorm")[0])


def test_resume_between_rounds_equals_the_uninterrupted_run(reference, tmp_path, monkeypatch):
    summary, tensors = reference
    from lorm.flower import strategy as strategy_module

    original = strategy_module.LoRMStrategy.exchange_train
    calls = []

    def crash_at_task_1(self, task, rnd, *args):
        calls.append((task, rnd))
        if (task, rnd) == (1, 1):
            raise RuntimeError("simulated server crash")
        return original(self, task, rnd, *args)

    monkeypatch.setattr(strategy_module.LoRMStrategy, "exchange_train", crash_at_task_1)
    with pytest.raises(RuntimeError, match="simulated server crash"):
        flower_run(tmp_path, LocalGrid(make_client_app(), range(3)))
    assert checkpoint.latest_state(tmp_path)["progress"]["task"] == 1
    monkeypatch.setattr(strategy_module.LoRMStrategy, "exchange_train", original)
    ours, our_tensors = flower_run(tmp_path, LocalGrid(make_client_app(), range(3)), resume=True)
    assert ours["accuracy_matrix"] == summary["accuracy_matrix"]
    assert_same_model(our_tensors, tensors)


# -- faults -------------------------------------------------------------------------------

ONE_TASK = ["num_tasks=2", "rounds=1"]


def test_a_dead_node_is_named_and_the_round_completes_with_the_minimum(tmp_path, caplog):
    grid = LocalGrid(make_client_app(), range(3))
    grid.die_after(1002, answered=1)  # its partition id, then nothing
    with caplog.at_level(logging.WARNING, logger="lorm.flower"):
        summary, _ = flower_run(tmp_path, grid, ONE_TASK, min_replies=2, round_timeout=0.3)
    assert "no reply from node(s) [1002]" in caplog.text
    assert len(summary["accuracy_matrix"]) == 2  # evaluation share of 1002: counted by the server
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["senders"] for r in records if r["type"] == "round"] == [2, 2]


def test_a_lost_reply_is_asked_for_again_and_the_run_equals_lorm_run(reference, tmp_path):
    summary, tensors = reference
    grid = LocalGrid(make_client_app(), range(3))
    grid.lose(1002, replies=2)  # two answers to the query lost: the third copy gets through
    ours, our_tensors = flower_run(tmp_path, grid, round_timeout=0.2, retries=2)
    assert ours["accuracy_matrix"] == summary["accuracy_matrix"]
    assert_same_model(our_tensors, tensors)


def test_too_few_replies_stop_the_run_at_its_last_checkpoint(tmp_path):
    grid = LocalGrid(make_client_app(), range(3))
    grid.die_after(1002, answered=1)
    with pytest.raises(RoundFailed, match="2 accepted update\\(s\\), 3 needed"):
        flower_run(tmp_path, grid, ONE_TASK, round_timeout=0.2)
    assert checkpoint.latest_state(tmp_path)["progress"]["round"] == 0


def _poison(content: RecordDict) -> RecordDict:
    arrays = ArrayRecord(dict(content[UPDATE].items()))
    key = next(k for k in arrays if k.endswith("/p"))
    a = arrays[key]
    arrays[key] = Array(dtype=a.dtype, shape=a.shape, stype=a.stype,
                        data=torch.full(a.shape, float("nan"), dtype=torch.float32).numpy().tobytes())
    return RecordDict({UPDATE: arrays, META: content[META]})


def _wrong(field: str, value):
    def change(content: RecordDict) -> RecordDict:
        return RecordDict({UPDATE: content[UPDATE], META: ConfigRecord({**dict(content[META]),
                                                                          field: value})})
    return change


def _emptied(content: RecordDict) -> RecordDict:
    return RecordDict()


def _tampering(change):
    """Applies ``change`` to node 1001's round replies (not its task-end Grams)."""
    def tamper(node, reply):
        if node == 1001 and reply.metadata.message_type == "train":
            reply.content = change(reply.content)
        return reply
    return tamper


@pytest.fixture(scope="module")
def without_node_1001(tmp_path_factory):
    """The run in which node 1001's round replies carry nothing (left out unread)."""
    grid = LocalGrid(make_client_app(), range(3))
    grid.tamper = _tampering(_emptied)
    return flower_run(tmp_path_factory.mktemp("empty"), grid, ONE_TASK, min_replies=2)[1]


@pytest.mark.parametrize("change, match", [
    (_poison, "NaN or Inf"),
    (_wrong("task", 5), "it is for task 5"),
    (_wrong("round", 3), "round 3"),
    (_wrong("factor", "A"), "factor 'A'"),  # round 0 trains B
])
def test_bad_replies_are_rejected_named_and_leave_the_sums_untouched(tmp_path, caplog, change,
                                                                     match, without_node_1001):
    """The round goes on with the other two, and the sums are exactly those of the run
    in which node 1001's round replies were empty."""
    grid = LocalGrid(make_client_app(), range(3))
    grid.tamper = _tampering(change)
    with caplog.at_level(logging.WARNING, logger="lorm.flower"):
        _, ours = flower_run(tmp_path, grid, ONE_TASK, min_replies=2)
    assert "node 1001: reply rejected" in caplog.text and match in caplog.text
    assert ours.keys() == without_node_1001.keys()
    for key, t in without_node_1001.items():
        assert torch.equal(ours[key], t), key


def test_a_late_joiner_takes_part_from_the_next_exchange(tmp_path):
    grid = LocalGrid(make_client_app(), [0, 1])
    joined = []

    def tamper(node, reply):
        if not joined and reply.metadata.message_type == "train":
            joined.extend(grid.join([2]))
        return reply

    grid.tamper = tamper
    summary, _ = flower_run(tmp_path, grid, ONE_TASK, min_replies=2, round_timeout=5)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["senders"] for r in records if r["type"] == "round"] == [2, 3]
    assert joined == [1003] and len(summary["accuracy_matrix"]) == 2
