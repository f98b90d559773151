"""The client's half of secure aggregation: :class:`MaskingParty`, one per client and
exchange, taken through the four steps in order.

1. :meth:`advert`: two fresh X25519 public keys (one to encrypt shares, one to agree
   masks), a SHA-256 commitment to the self-mask seed, the update's layout and the
   exponent of each tensor's largest magnitude (lorm.secagg.fixed_point).
2. :meth:`share_keys` (the roster: neighbours' keys, ring size, agreed exponents):
   Shamir shares of the self-mask seed and of the mask key's secret, one per holder,
   each encrypted to it and bound to (exchange, sender, receiver).
3. :meth:`masked_input` (the shares the neighbours sent): the encoded update plus the
   self mask plus, for each neighbour that shared, + or - the agreed pairwise mask.
4. :meth:`reveal` (who sent a masked input and who did not): per holder-mate the share
   of its self-mask seed if it sent, of its mask key if it did not; never both.

Before step 1 the client checks its own update with the Aggregator's checks: with
masking on, the server can no longer see a single update.
"""

from __future__ import annotations

import hashlib
import struct

from ..aggregate import Aggregator
from ..messages import ClientUpdate
from . import crypto, fixed_point, plan, wire
from .wire import ProtocolError, field, int_keys

SELF_SEED_BYTES = 16
STEPS = ("advert", "share_keys", "masked_input", "reveal")


def commitment(seed: bytes) -> bytes:
    return hashlib.sha256(b"lorm-secagg-self-seed" + seed).digest()


def pair_context(tag: bytes, a: int, b: int, purpose: bytes) -> bytes:
    low, high = sorted((a, b))
    return b"lorm-secagg/" + purpose + b"/" + tag + struct.pack("<qq", low, high)


def pair_sign(client: int, other: int) -> int:
    return 1 if client < other else -1


class MaskingParty:
    """One client's secure-aggregation state for one exchange (tag).

    Args:
        client: this client's id.
        tag: the exchange's public name (binds every share and mask to it).
        update: the client's update, checked here before anything is sent.
        threshold, neighbours: the config's ``secagg_threshold`` and ``secagg_neighbours``.
    """

    def __init__(self, client: int, tag: bytes, update: ClientUpdate, threshold: float,
                 neighbours: int):
        Aggregator(update.task, update.round, update.factor).add(update)  # raises UpdateRejected
        self.client, self.tag = client, tag
        self.settings = (threshold, neighbours)
        self.terms = fixed_point.terms_of(update.tensors(), update.num_samples)
        self.layout = fixed_point.layout_of(self.terms)
        self.exponents = fixed_point.exponents_of(self.terms)
        self.share_keypair, self.mask_keypair = crypto.KeyPair(), crypto.KeyPair()
        self.self_seed = crypto.random_seed(SELF_SEED_BYTES)
        self.done: list[str] = []
        self.received: dict[int, tuple[bytes, bytes]] = {}  # holder-mate -> (seed share, key share)

    # -- kept between steps outside the process (a host that runs each step afresh) -----
    def to_bytes(self) -> bytes:
        """Everything the next steps need, secrets included (the mask and share keys, the
        self-mask seed, the plaintext terms until :meth:`masked_input`): for a host that
        keeps it on the client's side between steps (lorm.flower's node state), never to
        be sent to the server."""
        state = {"client": self.client, "tag": self.tag, "settings": list(self.settings),
                 "terms": {k: [list(t.shape), t.numpy().tobytes()] for k, t in self.terms.items()},
                 "layout": self.layout.to_json(), "exponents": self.exponents,
                 "share_secret": self.share_keypair.secret_bytes(),
                 "mask_secret": self.mask_keypair.secret_bytes(), "self_seed": self.self_seed,
                 "done": self.done, "received": {str(v): list(s) for v, s in self.received.items()}}
        if "share_keys" in self.done:
            state.update(bits=self.bits, num_clients=self.num_clients, agreed=self.agreed,
                         neighbours=self.neighbours,
                         members={str(c): m for c, m in self.members.items()})
        return wire.dump(state)

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskingParty:
        """The party :meth:`to_bytes` kept, at the step it had reached."""
        import numpy as np
        import torch

        state = wire.load(data)
        party = cls.__new__(cls)
        party.client, party.tag = field(state, "client", int), field(state, "tag", bytes)
        threshold, neighbours = field(state, "settings", list)
        party.settings = (float(threshold), int(neighbours))
        party.terms = {k: torch.from_numpy(np.frombuffer(raw, dtype=np.float64).copy()).view(shape)
                       for k, (shape, raw) in field(state, "terms", dict).items()}
        party.layout = fixed_point.Layout.from_json(field(state, "layout", list))
        party.exponents = {k: int(v) for k, v in field(state, "exponents", dict).items()}
        party.share_keypair = crypto.KeyPair.from_secret(field(state, "share_secret", bytes))
        party.mask_keypair = crypto.KeyPair.from_secret(field(state, "mask_secret", bytes))
        party.self_seed = field(state, "self_seed", bytes)
        party.done = [str(s) for s in field(state, "done", list)]
        party.received = {v: (s[0], s[1]) for v, s in int_keys(field(state, "received", dict)).items()}
        if "share_keys" in party.done:
            party.bits, party.num_clients = field(state, "bits", int), field(state, "num_clients", int)
            party.agreed = {k: int(v) for k, v in field(state, "agreed", dict).items()}
            party.neighbours = [int(v) for v in field(state, "neighbours", list)]
            party.members = int_keys(field(state, "members", dict))
        return party

    def _step(self, name: str) -> None:
        expected = STEPS[len(self.done)] if len(self.done) < len(STEPS) else None
        if name != expected:
            raise ProtocolError(f"client {self.client}: {name} out of order "
                                f"(steps done: {self.done or 'none'})")
        self.done.append(name)

    # -- 1 ------------------------------------------------------------------------------
    def advert(self) -> bytes:
        self._step("advert")
        return wire.dump({"client": self.client, "tag": self.tag,
                          "share_key": self.share_keypair.public,
                          "mask_key": self.mask_keypair.public,
                          "commitment": commitment(self.self_seed),
                          "layout": self.layout.to_json(), "exponents": self.exponents})

    # -- 2 ------------------------------------------------------------------------------
    def share_keys(self, roster_bytes: bytes) -> bytes:
        self._step("share_keys")
        roster = self._check_roster(wire.load(roster_bytes))
        mates = plan.holders(self.client, self.neighbours)
        t = plan.threshold(self.settings[0], len(mates))
        seeds = crypto.split_secret(self.self_seed, t, len(mates))
        keys = crypto.split_secret(self.mask_keypair.secret_bytes(), t, len(mates))
        out = {}
        for x, (mate, seed_share, key_share) in enumerate(zip(mates, seeds, keys), start=1):
            body = struct.pack("<qqq", self.client, mate, x) + seed_share + key_share
            if mate == self.client:
                self.received[self.client] = (seed_share, key_share)
                continue
            key = self.share_keypair.agree(roster[mate]["share_key"],
                                           pair_context(self.tag, self.client, mate, b"share"))
            out[str(mate)] = crypto.encrypt(key, self.tag + body)
        return wire.dump({"client": self.client, "tag": self.tag, "shares": out})

    def _check_roster(self, roster: dict) -> dict[int, dict]:
        if field(roster, "tag", bytes) != self.tag:
            raise ProtocolError(f"client {self.client}: the roster is for another exchange")
        members = int_keys(field(roster, "members", dict))
        mine = members.get(self.client)
        if (mine is None or mine.get("share_key") != self.share_keypair.public
                or mine.get("mask_key") != self.mask_keypair.public):
            raise ProtocolError(f"client {self.client}: the roster does not carry its own keys")
        self.bits = field(roster, "bits", int)
        self.num_clients = len(members)
        if self.bits != fixed_point.ring_bits(self.num_clients, _wire_dtype(roster)):
            raise ProtocolError(f"client {self.client}: ring of {self.bits} bits does not "
                                f"follow from {self.num_clients} clients")
        self.agreed = {k: int(v) for k, v in field(roster, "exponents", dict).items()}
        if fixed_point.Layout.from_json(field(roster, "layout", list)) != self.layout:
            raise ProtocolError(f"client {self.client}: the roster's layout is not its update's")
        too_small = [k for k, e in self.exponents.items() if self.agreed.get(k, e - 1) < e]
        if too_small:
            raise ProtocolError(f"client {self.client}: agreed exponents below its own for {too_small}")
        graph = plan.neighbours(sorted(members), self.settings[1], self.tag)
        self.neighbours = graph[self.client]
        self.members = members
        return members

    # -- 3 ------------------------------------------------------------------------------
    def masked_input(self, inbox_bytes: bytes) -> bytes:
        self._step("masked_input")
        inbox = wire.load(inbox_bytes)
        if field(inbox, "tag", bytes) != self.tag:
            raise ProtocolError(f"client {self.client}: the inbox is for another exchange")
        shares = int_keys(field(inbox, "shares", dict))
        for sender, token in shares.items():
            self._take_share(sender, token)
        words = fixed_point.encode(self.terms, self.layout, self.agreed, self.num_clients, self.bits)
        crypto.add_mask(words, self.self_seed, 1)
        for mate in sorted(shares):
            seed = self.mask_keypair.agree(self.members[mate]["mask_key"],
                                           pair_context(self.tag, self.client, mate, b"mask"))
            crypto.add_mask(words, seed, pair_sign(self.client, mate))
        self.terms = {}  # the plaintext is not needed any more
        return fixed_point.pack(words & fixed_point.ring_mask(self.bits), self.bits)

    def _take_share(self, sender: int, token: bytes) -> None:
        if sender not in self.neighbours:
            raise ProtocolError(f"client {self.client}: a share from {sender}, not a neighbour")
        if not isinstance(token, bytes):
            raise ProtocolError(f"client {self.client}: the share from {sender} is not bytes")
        key = self.share_keypair.agree(self.members[sender]["share_key"],
                                       pair_context(self.tag, sender, self.client, b"share"))
        try:
            body = crypto.decrypt(key, token)
        except ValueError as exc:
            raise ProtocolError(f"client {self.client}: the share from {sender} is refused: {exc}") from None
        if not body.startswith(self.tag):
            raise ProtocolError(f"client {self.client}: the share from {sender} was made for "
                                "another exchange (a replay)")
        src, dst, _x = struct.unpack_from("<qqq", body, len(self.tag))
        if (src, dst) != (sender, self.client):
            raise ProtocolError(f"client {self.client}: the share from {sender} names "
                                f"{src} -> {dst} (a replay)")
        rest = body[len(self.tag) + 24:]
        self.received[sender] = (rest[:SELF_SEED_BYTES], rest[SELF_SEED_BYTES:])

    # -- 4 ------------------------------------------------------------------------------
    def reveal(self, request_bytes: bytes) -> bytes:
        self._step("reveal")
        request = wire.load(request_bytes)
        if field(request, "tag", bytes) != self.tag:
            raise ProtocolError(f"client {self.client}: the reveal request is for another exchange")
        sent = set(field(request, "sent", list))
        silent = set(field(request, "silent", list))
        if sent & silent:
            raise ProtocolError(f"client {self.client}: asked for both shares of {sorted(sent & silent)}")
        if self.client not in sent:
            raise ProtocolError(f"client {self.client}: its masked input is not among those summed")
        mates = plan.holders(self.client, self.neighbours)
        if len(sent & set(mates)) < plan.threshold(self.settings[0], len(mates)):
            raise ProtocolError(f"client {self.client}: too few of its holder-mates sent to unmask safely")
        seeds = {str(v): s[0] for v, s in self.received.items() if v in sent}
        keys = {str(v): s[1] for v, s in self.received.items() if v in silent}
        return wire.dump({"client": self.client, "tag": self.tag, "seed_shares": seeds,
                          "key_shares": keys})


def _wire_dtype(roster: dict):
    import torch
    name = field(roster, "wire_dtype", str)
    dtype = getattr(torch, name, None)
    if dtype not in fixed_point.SIGNIFICAND_BITS:
        raise ProtocolError(f"unknown wire dtype {name!r}")
    return dtype

