"""Secure aggregation (``secure_aggregation: secagg+``) over Flower, on the in-process
grid: the run equals `lorm run` with the same config, the strategy never holds a
client's update in the clear, and a node that drops after its masked input leaves the
result exact."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

pytest.importorskip("flwr", reason="Flower is not installed (pip install 'lorm[flower]')")
pytest.importorskip("cryptography", reason="secure aggregation needs the secagg extra")

from flower_helpers import TINY, assert_same_model
from lorm import ClientUpdate, SolveStats
from lorm.aggregate import Aggregator
from lorm.fcil import checkpoint, load_config, run
from lorm.flower import LoRMStrategy, make_client_app
from lorm.flower import secure as secure_module
from lorm.flower import strategy as strategy_module
from lorm.flower._local_grid import LocalGrid
from lorm.flower.node import SECAGG
from lorm.flower.records import content_to_update
from lorm.messages import MalformedUpdate
from lorm.secagg import fixed_point
from lorm.secagg.exchange import Courier, HostedClients, LocalCourier, secure_exchange
from lorm.secagg.party import MaskingParty

SECURE = TINY + ["secure_aggregation=secagg+"]


def rounds_of(run_dir) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "round"]


# -- the party's state, kept as bytes between steps (what a node keeps) ------------------

class ReloadingCourier(Courier):
    """Every party goes through to_bytes / from_bytes after each step."""

    def __init__(self, hosted: HostedClients):
        self.hosted = hosted

    def ask(self, step, requests):
        answers = {c: self.hosted.answer(step, c, r) for c, r in requests.items()}
        self.hosted.parties = {c: MaskingParty.from_bytes(p.to_bytes())
                               for c, p in self.hosted.parties.items()}
        return answers


def test_a_party_kept_as_bytes_between_steps_gives_the_same_sum():
    def update(client: int) -> ClientUpdate:
        g = torch.Generator().manual_seed(client)
        x = torch.randn(15, 5, dtype=torch.float64, generator=g)
        return ClientUpdate(0, 1, "A", 5 + client, layers={"blocks.0.attn.qkv": SolveStats(
            p=torch.randn(2, 5, dtype=torch.float64, generator=g), q=x.T @ x)},
            head=SolveStats(p=torch.randn(3, 5, dtype=torch.float64, generator=g), q=x.T @ x),
            head_bias=torch.randn(3, dtype=torch.float64, generator=g))

    sums = []
    for courier in (LocalCourier, ReloadingCourier):
        aggregator = Aggregator(0, 1, "A")
        secure_exchange(courier(HostedClients(update, 0.66, 0)), [0, 1, 2], b"t", aggregator,
                        torch.float32, 0.66, 0)
        sums.append(aggregator.partial_sums())
    (ours, our_layers), (theirs, their_layers) = sums
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert our_layers == their_layers


# -- the strategy over the in-process grid ----------------------------------------------

@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """`lorm run` with TINY, without and with secure aggregation: summaries, run dirs
    and final checkpoints."""
    out = {}
    for name, overrides in (("plain", TINY), ("secure", SECURE)):
        path = tmp_path_factory.mktemp(f"lorm-{name}")
        out[name] = run(load_config(None, overrides), path, quiet=True), path, checkpoint.load(path)[0]
    return out


def secure_flower_run(tmp_path, grid: LocalGrid, **kwargs):
    strategy = LoRMStrategy(load_config(None, SECURE), tmp_path, poll=0.0, **kwargs)
    strategy.start(grid)
    return strategy.summary_, checkpoint.load(tmp_path)[0]


def test_secagg_over_flower_equals_lorm_run_and_the_server_sees_masked_vectors_only(
        references, tmp_path, monkeypatch):
    def no_plain_replies(aggregator, reply):
        raise AssertionError("a plain update reached the strategy under secure aggregation")

    monkeypatch.setattr(strategy_module, "add_reply", no_plain_replies)
    answers: list[tuple[str, bytes]] = []
    original_answer_of = secure_module.answer_of

    def spied_answer_of(reply, step):
        with pytest.raises(MalformedUpdate):  # no reply carries a ClientUpdate's records
            content_to_update(reply.content)
        answer = original_answer_of(reply, step)
        with pytest.raises(MalformedUpdate):  # nor a ClientUpdate's bytes
            ClientUpdate.from_bytes(answer)
        answers.append((step, answer))
        return answer

    monkeypatch.setattr(secure_module, "answer_of", spied_answer_of)
    encodings: list[tuple[np.ndarray, int]] = []  # the clients' unmasked vectors, node side
    original_encode = fixed_point.encode

    def spied_encode(terms, layout, exponents, num_clients, bits):
        words = original_encode(terms, layout, exponents, num_clients, bits)
        encodings.append((words & fixed_point.ring_mask(bits), bits))
        return words

    monkeypatch.setattr(fixed_point, "encode", spied_encode)

    summary, tensors = secure_flower_run(tmp_path, LocalGrid(make_client_app(), range(3)))

    (plain, _, _), (secure, secure_dir, secure_tensors) = references["plain"], references["secure"]
    assert summary["accuracy_matrix"] == secure["accuracy_matrix"] == plain["accuracy_matrix"]
    # the unmasked sums are exact integers, whatever the order: the same model, bit for bit
    assert tensors.keys() == secure_tensors.keys()
    assert all(torch.equal(tensors[k], t) for k, t in secure_tensors.items())
    ours, theirs = rounds_of(tmp_path), rounds_of(secure_dir)
    assert [r["senders"] for r in ours] == [3, 3, 3, 3]
    assert [r["bytes_per_client"] for r in ours] == [r["bytes_per_client"] for r in theirs]

    masked = [a for step, a in answers if step == "masked_input"]
    assert len(masked) == len(encodings) > 0
    for data in masked:
        for words, bits in encodings:
            if len(fixed_point.pack(words, bits)) == len(data):
                seen = fixed_point.unpack(data, words.size, bits)
                assert np.mean(seen == words) < 0.01  # nothing like the client's encoding


def test_a_node_that_drops_after_its_masked_input_leaves_the_result_exact(
        references, tmp_path, caplog):
    grid = LocalGrid(make_client_app(), range(3))
    dropped = []

    def drop_first_reveal(node, reply):
        if (node == 1002 and not dropped and reply.metadata.message_type == "train.secagg"
                and reply.content[SECAGG]["step"] == "reveal"):
            dropped.append(reply.metadata.group_id)
            grid.lose(1002, 1)  # this reply: computed, never delivered
        return reply

    grid.tamper = drop_first_reveal
    with caplog.at_level(logging.WARNING, logger="lorm.flower"):
        summary, tensors = secure_flower_run(tmp_path, grid, retries=0, round_timeout=0.3)
    assert dropped and "secure aggregation reveal: no reply from node(s) [1002]" in caplog.text
    secure, _, secure_tensors = references["secure"]
    assert summary["accuracy_matrix"] == secure["accuracy_matrix"]
    assert [r["senders"] for r in rounds_of(tmp_path)] == [3, 3, 3, 3]  # its input is in the sum
    assert_same_model(tensors, secure_tensors)
    assert all(torch.equal(tensors[k], t) for k, t in secure_tensors.items())


def test_a_lost_step_reply_is_asked_for_again_and_answered_with_the_same_bytes(references, tmp_path):
    """The node kept its answer: the re-sent share_keys is not run twice (a second run
    would refuse the step as out of order), and the run equals `lorm run`."""
    grid = LocalGrid(make_client_app(), range(3))
    lost = []

    def lose_first_share_keys(node, reply):
        if (node == 1002 and not lost and reply.metadata.message_type == "train.secagg"
                and reply.content[SECAGG]["step"] == "share_keys"):
            lost.append(bytes(reply.content[SECAGG]["answer"]))
            grid.lose(1002, 1)
        elif lost and len(lost) == 1 and node == 1002:
            lost.append(bytes(reply.content[SECAGG]["answer"]))  # the answer to the copy
        return reply

    grid.tamper = lose_first_share_keys
    summary, tensors = secure_flower_run(tmp_path, grid, retries=1, round_timeout=0.2)
    assert len(lost) == 2 and lost[0] == lost[1]
    secure, _, secure_tensors = references["secure"]
    assert summary["accuracy_matrix"] == secure["accuracy_matrix"]
    assert all(torch.equal(tensors[k], t) for k, t in secure_tensors.items())
