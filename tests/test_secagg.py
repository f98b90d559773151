"""Secure aggregation (lorm.secagg): the sum is exact in fixed point, the server never
holds a client's unmasked vector, dropouts up to the threshold are survived and one more
is refused with nothing added, bad shares are refused, and a whole run with it on gives
the plaintext run's accuracy matrix for lorm, regmean-lora and fedavg-lora."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("cryptography")
pytest.importorskip("Crypto")

from lorm.aggregate import Aggregator
from lorm.messages import ClientUpdate, SolveStats
from lorm.secagg import ProtocolError, SecureAggregationFailed, fixed_point, plan, wire
from lorm.secagg.exchange import (
    MASKED_INPUT,
    REVEAL,
    HostedClients,
    LocalCourier,
    install,
    secure_exchange,
)
from lorm.secagg.party import MaskingParty
from lorm.secagg.unmasker import Unmasker

F32 = torch.float32
THRESHOLD = 0.66


def update(i: int, d: int = 12, r: int = 3, classes: int = 4) -> ClientUpdate:
    """A well-formed A-step update of client ``i``: Grams of random activations."""
    g = torch.Generator().manual_seed(100 + i)
    x = torch.randn(40, d, generator=g)
    q = x.T @ x
    return ClientUpdate(task=0, round=0, factor="A", num_samples=10 + i, layers={
        "blk.qkv": SolveStats(p=torch.randn(r, d, generator=g) @ q, q=q),
        "blk.fc": SolveStats(p=torch.randn(r, 6, generator=g), q=torch.rand(6, generator=g) + 0.1)},
        head=SolveStats(p=torch.randn(classes, d, generator=g) @ q, q=q),
        head_bias=torch.randn(classes, generator=g))


class ScriptedCourier(LocalCourier):
    """A local courier whose clients fall silent at the steps ``drops`` names, and which
    records every byte string it hands to the server."""

    def __init__(self, hosted: HostedClients, drops: dict[str, set[int]] | None = None):
        super().__init__(hosted)
        self.drops = drops or {}
        self.received: list[tuple[str, int, bytes]] = []

    def ask(self, step, requests):
        answers = {c: self.hosted.answer(step, c, r) for c, r in requests.items()
                   if c not in self.drops.get(step, set())}
        self.received += [(step, c, a) for c, a in answers.items()]
        return answers


def run_exchange(updates: dict[int, ClientUpdate], drops=None, neighbours: int = 0,
                 aggregator: Aggregator | None = None, tag: bytes = b"test/0"):
    courier = ScriptedCourier(HostedClients(lambda c: updates[c], THRESHOLD, neighbours), drops)
    aggregator = aggregator or Aggregator(0, 0, "A")
    sent = secure_exchange(courier, sorted(updates), tag, aggregator, F32, THRESHOLD, neighbours)
    return aggregator, courier, sent


def fixed_point_sum(updates: list[ClientUpdate], num_clients: int) -> dict[str, torch.Tensor]:
    """The plaintext sum of the clients' fixed-point encodings, decoded: what the
    masked exchange must give exactly."""
    terms = [fixed_point.terms_of(u.tensors(), u.num_samples) for u in updates]
    layout = fixed_point.layout_of(terms[0])
    exps = {k: max(fixed_point.exponents_of(t)[k] for t in terms) for k, _, _ in layout.entries}
    bits = fixed_point.ring_bits(num_clients, F32)
    total = sum(fixed_point.encode(t, layout, exps, num_clients, bits) for t in terms)
    return fixed_point.decode(total, layout, exps, num_clients, bits)


def assert_sums_equal(aggregator: Aggregator, expected: dict[str, torch.Tensor], samples: int):
    sums, _ = aggregator.partial_sums()
    assert aggregator.num_samples == samples
    for key, value in sums.items():
        assert torch.equal(value, expected[key].to(value.dtype)), key


# -- fixed point --------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 300), scale=st.floats(-60, 60), seed=st.integers(0, 2 ** 31))
def test_fixed_point_sum_is_within_the_bound_and_never_overflows(n, scale, seed):
    """n clients at the largest magnitude their exponent allows, of either sign: the
    decoded sum is within n * 2^-(f+1) of the exact sum, never wrapped around."""
    g = torch.Generator().manual_seed(seed)
    values = (torch.rand(n, 5, generator=g, dtype=torch.float64) * 2 - 1) * 2.0 ** scale
    values[0, 0] = 2.0 ** math.ceil(scale)  # exactly at the bound
    values[:, 1] = values[0, 0]  # every client at the bound: the largest sum
    terms = [{"x": v} for v in values]
    layout = fixed_point.layout_of(terms[0])
    exps = {"x": max(fixed_point.exponents_of(t)["x"] for t in terms)}
    bits = fixed_point.ring_bits(n, F32)
    total = np.zeros(5, dtype=np.uint64)
    for t in terms:
        total = total + fixed_point.encode(t, layout, exps, n, bits)
    decoded = fixed_point.decode(total, layout, exps, n, bits)["x"]
    bound = fixed_point.sum_error_bound(exps["x"], n, bits)
    exact = values.sum(0)
    assert float((decoded - exact).abs().max()) <= bound + 4 * torch.finfo(torch.float64).eps * float(exact.abs().max())
    # the error bound is 2^-16 of float32's rounding unit at the bound, times n
    assert bound <= n * 2.0 ** (exps["x"] - 24 - 16)


def test_ring_follows_client_count_and_wire_dtype():
    assert fixed_point.ring_bits(10, torch.float32) == 48  # 2 + 4 + 24 + 16 = 46 -> 48
    assert fixed_point.ring_bits(100, torch.float32) == 56  # 2 + 7 + 24 + 16 = 49 -> 56
    assert fixed_point.ring_bits(10, torch.bfloat16) == 32
    assert fixed_point.ring_bits(10, torch.float64) == 64


def test_a_value_above_the_agreed_bound_is_refused():
    terms = {"x": torch.tensor([3.0], dtype=torch.float64)}
    with pytest.raises(ValueError, match="exceeds 2\\^1"):
        fixed_point.encode(terms, fixed_point.layout_of(terms), {"x": 1}, 4, 48)


@settings(max_examples=20, deadline=None)
@given(t=st.integers(2, 9), extra=st.integers(0, 5), seed=st.integers(0, 2 ** 31))
def test_batched_secret_rebuild_equals_shamir_combine(t, extra, seed):
    """The server rebuilds many secrets with Lagrange coefficients shared per set of
    share indices; each must equal pycryptodome's own Shamir.combine."""
    from Crypto.Protocol.SecretSharing import Shamir
    from lorm.secagg import crypto

    rng = np.random.default_rng(seed)
    batch, expected = {}, {}
    for owner in range(4):
        secret = rng.bytes(32 if owner % 2 else 16)
        shares = crypto.split_secret(secret, t, t + extra)
        xs = sorted(rng.choice(t + extra, size=t, replace=False) + 1) if owner % 2 else range(1, t + 1)
        batch[owner] = {int(x): shares[x - 1] for x in xs}
        expected[owner] = secret
        blocks = [Shamir.combine([(x, batch[owner][x][i:i + 16]) for x in batch[owner]])
                  for i in range(0, len(secret), 16)]
        assert b"".join(blocks) == secret
    assert crypto.join_secrets(batch) == expected


# -- the exchange -------------------------------------------------------------------------
@pytest.mark.parametrize("neighbours", [0, 4])
def test_masked_sum_equals_the_plaintext_fixed_point_sum_exactly(neighbours):
    updates = {i: update(i) for i in range(9)}
    aggregator, _, _ = run_exchange(updates, neighbours=neighbours)
    assert_sums_equal(aggregator, fixed_point_sum(list(updates.values()), 9),
                      sum(u.num_samples for u in updates.values()))
    plain = Aggregator(0, 0, "A")
    for u in updates.values():
        plain.add(u)
    merged, reference = aggregator.result(), plain.result()
    for name, x in reference.layers.items():  # float32 statistics: the fixed point is exact
        torch.testing.assert_close(merged.layers[name], x, rtol=1e-6, atol=1e-6)


def test_the_server_side_never_receives_an_unmasked_vector():
    """Everything the clients hand the server is recorded: no message carries a
    client's statistics as floats, and each masked vector shares no more words with
    the client's own encoding than chance allows."""
    updates = {i: update(i) for i in range(6)}
    _, courier, _ = run_exchange(updates)
    terms = {c: fixed_point.terms_of(u.tensors(), u.num_samples) for c, u in updates.items()}
    layout = fixed_point.layout_of(terms[0])
    exps = {k: max(fixed_point.exponents_of(t)[k] for t in terms.values()) for k, _, _ in layout.entries}
    bits = fixed_point.ring_bits(6, F32)
    masked = {c: a for step, c, a in courier.received if step == MASKED_INPUT}
    assert sorted(masked) == sorted(updates)
    for client, data in masked.items():
        plain = fixed_point.encode(terms[client], layout, exps, 6, bits)
        words = fixed_point.unpack(data, layout.numel, bits)
        assert np.mean(words == plain) < 0.01
    for step, client, data in courier.received:
        for t in updates[client].tensors().values():
            assert t.numpy().astype("<f4").tobytes()[:64] not in data, (step, client)
        if step != MASKED_INPUT:
            message = wire.load(data)
            assert not any(isinstance(v, list) and v and isinstance(v[0], float)
                           for v in message.values())


def test_one_and_n_minus_t_clients_dropping_after_sending_still_give_the_exact_sum():
    n = 9
    t = plan.threshold(THRESHOLD, n)
    updates = {i: update(i) for i in range(n)}
    expected = fixed_point_sum(list(updates.values()), n)
    samples = sum(u.num_samples for u in updates.values())
    for dropped in ({4}, set(range(n - t))):
        aggregator, _, _ = run_exchange(updates, drops={REVEAL: dropped})
        assert aggregator.num_clients == n
        assert_sums_equal(aggregator, expected, samples)


def test_one_drop_more_than_n_minus_t_fails_the_exchange_and_adds_nothing():
    n = 9
    t = plan.threshold(THRESHOLD, n)
    updates = {i: update(i) for i in range(n)}
    aggregator = Aggregator(0, 0, "A")
    with pytest.raises(SecureAggregationFailed, match=f"needs {t} shares, {t - 1} were revealed"):
        run_exchange(updates, drops={REVEAL: set(range(n - t + 1))}, aggregator=aggregator)
    assert aggregator.num_clients == 0 and aggregator.partial_sums()[0] == {}


def test_clients_dropping_before_sending_are_left_out_and_their_masks_removed():
    """Two clients share their keys but never send a masked input: the others' pairwise
    masks with them are rebuilt from shares, and the sum is the senders' alone."""
    updates = {i: update(i) for i in range(8)}
    aggregator, _, _ = run_exchange(updates, drops={MASKED_INPUT: {1, 6}})
    senders = [u for c, u in updates.items() if c not in (1, 6)]
    assert aggregator.num_clients == 6
    assert_sums_equal(aggregator, fixed_point_sum_with(senders, 8), sum(u.num_samples for u in senders))


def fixed_point_sum_with(senders: list[ClientUpdate], advertised: int) -> dict[str, torch.Tensor]:
    """As :func:`fixed_point_sum`, with the ring and exponents of ``advertised`` clients
    (the exponents are agreed before anyone drops: those of all 8 clients)."""
    everyone = [update(i) for i in range(advertised)]
    terms_all = [fixed_point.terms_of(u.tensors(), u.num_samples) for u in everyone]
    layout = fixed_point.layout_of(terms_all[0])
    exps = {k: max(fixed_point.exponents_of(t)[k] for t in terms_all) for k, _, _ in layout.entries}
    bits = fixed_point.ring_bits(advertised, F32)
    total = sum(fixed_point.encode(fixed_point.terms_of(u.tensors(), u.num_samples), layout, exps,
                                   advertised, bits) for u in senders)
    return fixed_point.decode(total, layout, exps, advertised, bits)


def test_fewer_than_two_senders_are_refused():
    updates = {i: update(i) for i in range(3)}
    with pytest.raises(SecureAggregationFailed, match="fewer than 2 reveals"):
        run_exchange(updates, drops={MASKED_INPUT: {0, 1}})


# -- bad shares and bad updates --------------------------------------------------------------
def parties(n: int = 4, tag: bytes = b"t") -> tuple[dict[int, MaskingParty], Unmasker, dict[int, bytes]]:
    """n parties through step 2, the server's unmasker and the inboxes it routed."""
    ps = {i: MaskingParty(i, tag, update(i), THRESHOLD, 0) for i in range(n)}
    server = Unmasker(tag, F32, THRESHOLD, 0)
    rosters = server.rosters({i: p.advert() for i, p in ps.items()})
    inboxes = server.inboxes({i: p.share_keys(rosters[i]) for i, p in ps.items()})
    return ps, server, inboxes


def test_a_tampered_share_is_refused():
    ps, _, inboxes = parties()
    box = wire.load(inboxes[0])
    token = bytearray(box["shares"]["1"])
    token[len(token) // 2] ^= 1
    box["shares"]["1"] = bytes(token)
    with pytest.raises(ProtocolError, match="share from 1 is refused"):
        ps[0].masked_input(wire.dump(box))


def test_a_share_replayed_from_another_exchange_or_client_is_refused():
    _, _, inboxes = parties(tag=b"exchange-1")
    old = wire.load(inboxes[0])["shares"]["1"]
    fresh, _, fresh_inboxes = parties(tag=b"exchange-2")
    box = wire.load(fresh_inboxes[0])
    box["shares"]["1"] = old  # from the earlier exchange
    with pytest.raises(ProtocolError, match="share from 1 is refused"):
        fresh[0].masked_input(wire.dump(box))
    box = wire.load(fresh_inboxes[2])
    box["shares"]["1"] = wire.load(fresh_inboxes[0])["shares"]["1"]  # meant for client 0
    with pytest.raises(ProtocolError, match="share from 1 is refused"):
        fresh[2].masked_input(wire.dump(box))


def test_a_wrong_revealed_share_is_refused_by_the_commitment():
    ps, server, inboxes = parties()
    for i, p in ps.items():
        server.add_masked(i, p.masked_input(inboxes[i]))
    requests = server.reveal_requests()
    reveals = {i: p.reveal(requests[i]) for i, p in ps.items()}
    forged = wire.load(reveals[2])
    share = bytearray(forged["seed_shares"]["0"])
    share[0] ^= 0xFF
    forged["seed_shares"]["0"] = bytes(share)
    reveals[2] = wire.dump(forged)
    with pytest.raises(SecureAggregationFailed, match="client 0's self-mask seed rebuild a wrong seed"):
        server.unmask(reveals)


def test_a_client_asked_for_both_shares_of_one_peer_refuses():
    ps, server, inboxes = parties()
    for i, p in ps.items():
        server.add_masked(i, p.masked_input(inboxes[i]))
    request = wire.dump({"tag": b"t", "sent": [0, 1, 2, 3], "silent": [1]})
    with pytest.raises(ProtocolError, match="both shares"):
        ps[0].reveal(request)


def test_a_client_checks_its_own_update_before_masking():
    bad = update(0)
    bad.layers["blk.qkv"].q[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        MaskingParty(0, b"t", bad, THRESHOLD, 0)


def test_the_server_refuses_an_indefinite_sum_and_keeps_its_sums():
    """A client that skips its own checks sends a Gram with a large negative eigenvalue:
    masking hides it, the unmasked sum is not PSD, the server refuses it untouched."""
    updates = {i: update(i) for i in range(4)}
    evil = update(3)
    evil.layers["blk.qkv"].q.sub_(1e4 * torch.eye(12))
    aggregator = Aggregator(0, 0, "A")
    sums = fixed_point_sum(list(updates.values())[:3] + [evil], 4)
    samples = int(sums.pop(fixed_point.SAMPLES_KEY))
    with pytest.raises(SecureAggregationFailed, match="unmasked sum is refused"):
        install(aggregator, sums, 4, samples)
    assert aggregator.num_clients == 0 and aggregator.partial_sums()[0] == {}


def test_out_of_order_steps_are_refused():
    party = MaskingParty(0, b"t", update(0), THRESHOLD, 0)
    with pytest.raises(ProtocolError, match="out of order"):
        party.reveal(b"{}")


def test_neighbour_graph_is_symmetric_and_threshold_above_half():
    clients = list(range(50))
    graph = plan.neighbours(clients, 0, b"tag")
    k = plan.neighbour_count(0, 50)
    assert k == 12 and all(len(v) == k for v in graph.values())
    assert all(c in graph[v] for c, vs in graph.items() for v in vs)
    assert graph == plan.neighbours(clients, 0, b"tag")  # public: every party computes it
    for holders in range(2, 30):
        assert plan.threshold(0.51, holders) > holders / 2


# -- whole runs -----------------------------------------------------------------------------
SMALL = ["num_tasks=2", "rounds=1", "local_epochs=1", "num_clients=4", "num_threads=1"]


@pytest.mark.parametrize("method", ["lorm", "regmean-lora", "fedavg-lora"])
def test_digits_run_with_secure_aggregation_equals_the_plaintext_run(tmp_path, method):
    from lorm.fcil import load_config, run

    matrices = {}
    for mode in ("none", "secagg+"):
        config = load_config(None, SMALL + [f"method={method}", f"secure_aggregation={mode}"])
        summary = run(config, tmp_path / mode, quiet=True)
        matrices[mode] = summary["accuracy_matrix"]
    assert matrices["secagg+"] == matrices["none"]


def test_config_refuses_secure_aggregation_with_one_client():
    from lorm.fcil import load_config

    with pytest.raises(ValueError, match="needs num_clients >= 2"):
        load_config(None, ["secure_aggregation=secagg+", "num_clients=1"])
    with pytest.raises(ValueError, match="secagg_threshold"):
        load_config(None, ["secagg_threshold=0.5"])


def test_messages_are_json_without_pickles():
    party = MaskingParty(0, b"t", update(0), THRESHOLD, 0)
    advert = json.loads(party.advert())
    assert advert["client"] == 0 and set(advert["share_key"]) == {"b64"}
