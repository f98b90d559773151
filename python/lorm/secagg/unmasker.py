"""The server's half of secure aggregation: :class:`Unmasker`, one per exchange. It
routes keys and encrypted shares, sums masked vectors as they arrive (one running
vector, whatever the number of clients), and once the survivors reveal their shares it
rebuilds the self masks of the clients that sent and the pairwise masks left by those
that did not, removes them and decodes the sum. It never holds a client's unmasked
vector: what it receives is masked, and what it decodes is a sum.

Dropouts: a client may fall silent at any step. Its update is in the sum if its masked
input arrived; its masks are removed if at least t of its holders (lorm.secagg.plan)
reveal. Fewer than that and :class:`SecureAggregationFailed` says whose secret could
not be rebuilt; the caller's sums are untouched.
"""

from __future__ import annotations

import numpy as np
import torch

from . import crypto, fixed_point, plan, wire
from .party import commitment, pair_context, pair_sign
from .wire import ProtocolError, SecureAggregationFailed, field, int_keys


class Unmasker:
    """Server side of one exchange.

    Args:
        tag: the exchange's public name.
        wire_dtype: the config's ``wire_dtype`` (sets the ring, lorm.secagg.fixed_point).
        threshold, neighbours: the config's ``secagg_threshold`` and ``secagg_neighbours``.
    """

    def __init__(self, tag: bytes, wire_dtype: torch.dtype, threshold: float, neighbours: int):
        self.tag, self.wire_dtype = tag, wire_dtype
        self.settings = (threshold, neighbours)
        self.members: dict[int, dict] = {}
        self.sharers: set[int] = set()
        self.senders: list[int] = []
        self.total: np.ndarray | None = None

    # -- step 1 -> 2 --------------------------------------------------------------------
    def rosters(self, adverts: dict[int, bytes]) -> dict[int, bytes]:
        """The roster (keys of all, the ring, the agreed exponents) for each client whose
        advert is well formed and has the common layout."""
        parsed = {c: self._advert(c, data) for c, data in adverts.items()}
        layouts = {repr(a["layout"]) for a in parsed.values()}
        if len(layouts) > 1:
            raise SecureAggregationFailed(f"the clients' updates have {len(layouts)} different "
                                          "layouts; they cannot be summed")
        self._require(len(parsed), "advertised keys")
        first = next(iter(parsed.values()))
        self.layout = fixed_point.Layout.from_json(first["layout"])
        self.exponents = {key: max(int(a["exponents"][key]) for a in parsed.values())
                          for key, _, _ in self.layout.entries}
        self.members = {c: {"share_key": a["share_key"], "mask_key": a["mask_key"],
                            "commitment": a["commitment"]} for c, a in parsed.items()}
        self.bits = fixed_point.ring_bits(len(parsed), self.wire_dtype)
        self.graph = plan.neighbours(sorted(parsed), self.settings[1], self.tag)
        roster = wire.dump({"tag": self.tag, "members": {str(c): m for c, m in self.members.items()},
                            "bits": self.bits, "exponents": self.exponents,
                            "layout": self.layout.to_json(),
                            "wire_dtype": str(self.wire_dtype).replace("torch.", "")})
        return {c: roster for c in parsed}

    def _advert(self, client: int, data: bytes) -> dict:
        advert = wire.load(data)
        if field(advert, "client", int) != client or field(advert, "tag", bytes) != self.tag:
            raise ProtocolError(f"the advert of client {client} names another client or exchange")
        for name in ("share_key", "mask_key", "commitment"):
            field(advert, name, bytes)
        field(advert, "layout", list)
        field(advert, "exponents", dict)
        return advert

    def _require(self, count: int, what: str) -> None:
        if count < 2:
            raise SecureAggregationFailed(f"only {count} client(s) {what}: a sum of fewer than "
                                          "2 reveals a client's update")

    # -- step 2 -> 3 --------------------------------------------------------------------
    def inboxes(self, shares: dict[int, bytes]) -> dict[int, bytes]:
        """Each client's encrypted shares from the neighbours that sent theirs."""
        boxes: dict[int, dict[str, bytes]] = {c: {} for c in shares}
        for sender, data in shares.items():
            message = wire.load(data)
            if field(message, "client", int) != sender or field(message, "tag", bytes) != self.tag:
                raise ProtocolError(f"the shares of client {sender} name another client or exchange")
            for receiver, token in int_keys(field(message, "shares", dict)).items():
                if receiver in boxes and receiver in self.graph.get(sender, ()):
                    boxes[receiver][str(sender)] = token
        self.sharers = set(shares)
        self._check_holders(self.sharers, "shared their keys")
        return {c: wire.dump({"tag": self.tag, "shares": box}) for c, box in boxes.items()}

    def _check_holders(self, alive: set[int], what: str) -> None:
        """Every client in the sum needs t holders among ``alive``."""
        self._require(len(alive), what)
        for client in alive:
            mates = plan.holders(client, self.graph[client])
            t = plan.threshold(self.settings[0], len(mates))
            if len(alive & set(mates)) < t:
                raise SecureAggregationFailed(
                    f"client {client}'s secrets need {t} of its {len(mates)} holders, but only "
                    f"{len(alive & set(mates))} {what}: too many clients dropped "
                    "(secagg_threshold); the exchange is refused")

    # -- step 3 -------------------------------------------------------------------------
    def add_masked(self, client: int, data: bytes) -> None:
        """Adds one client's masked vector into the running sum."""
        if client not in self.sharers or client in self.senders:
            raise ProtocolError(f"a masked input from client {client}, which is not expected")
        self.add_partial(fixed_point.unpack(data, self.layout.numel, self.bits), [client])

    def add_partial(self, words: np.ndarray, senders: list[int]) -> None:
        """Adds a sum of masked vectors (e.g. one rank's) and who sent them."""
        if self.total is None:
            self.total = words.copy()
        else:
            self.total += words
        self.senders.extend(senders)

    # -- step 3 -> 4 --------------------------------------------------------------------
    def reveal_requests(self) -> dict[int, bytes]:
        sent = set(self.senders)
        self._require(len(sent), "sent a masked input")
        silent = self.sharers - sent
        request = wire.dump({"tag": self.tag, "sent": sorted(sent), "silent": sorted(silent)})
        return {c: request for c in sorted(sent)}

    # -- step 4 -------------------------------------------------------------------------
    def unmask(self, reveals: dict[int, bytes]) -> tuple[dict[str, torch.Tensor], int, int]:
        """The decoded sums by key (float64), the number of clients in them and their
        samples. Raises :class:`SecureAggregationFailed` if a secret cannot be rebuilt
        or a rebuilt one does not match its commitment."""
        sent = set(self.senders)
        seeds: dict[int, dict[int, bytes]] = {c: {} for c in sent}
        keys: dict[int, dict[int, bytes]] = {c: {} for c in self.sharers - sent}
        for revealer, data in reveals.items():
            message = wire.load(data)
            if field(message, "client", int) != revealer or field(message, "tag", bytes) != self.tag:
                raise ProtocolError(f"the reveal of client {revealer} names another client or exchange")
            self._collect(revealer, int_keys(field(message, "seed_shares", dict)), seeds)
            self._collect(revealer, int_keys(field(message, "key_shares", dict)), keys)
        total = self.total.copy()
        rebuilt = crypto.join_secrets({c: self._points(c, shares, "self-mask seed")
                                       for c, shares in seeds.items()})
        for client, seed in rebuilt.items():
            if commitment(seed) != self.members[client]["commitment"]:
                raise SecureAggregationFailed(f"the shares revealed for client {client}'s self-mask "
                                              "seed rebuild a wrong seed: a share is wrong; refused")
            crypto.add_mask(total, seed, -1)
        keys_rebuilt = crypto.join_secrets({c: self._points(c, shares, "mask key")
                                            for c, shares in keys.items()})
        for client, secret in keys_rebuilt.items():
            total = self._remove_pairwise(total, client, secret)
        sums = fixed_point.decode(total, self.layout, self.exponents, len(self.members), self.bits)
        samples = sums.pop(fixed_point.SAMPLES_KEY)
        return sums, len(sent), round(float(samples))

    def _collect(self, revealer: int, shares: dict[int, bytes], into: dict[int, dict[int, bytes]]):
        for owner, share in shares.items():
            if owner not in into or revealer not in plan.holders(owner, self.graph[owner]):
                raise ProtocolError(f"client {revealer} revealed a share of client {owner} "
                                    "it may not reveal")
            if not isinstance(share, bytes):
                raise ProtocolError(f"client {revealer} revealed a share that is not bytes")
            into[owner][revealer] = share

    def _points(self, client: int, shares: dict[int, bytes], what: str) -> dict[int, bytes]:
        """``t`` of the revealed shares of ``client``'s secret, by Shamir x."""
        mates = plan.holders(client, self.graph[client])
        t = plan.threshold(self.settings[0], len(mates))
        if len(shares) < t:
            raise SecureAggregationFailed(
                f"client {client}'s {what} needs {t} shares, {len(shares)} were revealed: too "
                "many clients dropped (secagg_threshold); the exchange is refused")
        points = {mates.index(holder) + 1: share for holder, share in sorted(shares.items())[:t]}
        if len({len(s) for s in points.values()}) != 1 or len(next(iter(points.values()))) % crypto.BLOCK:
            raise SecureAggregationFailed(f"the shares of client {client}'s {what} are malformed")
        return points

    def _remove_pairwise(self, total: np.ndarray, silent: int, secret: bytes) -> np.ndarray:
        pair = crypto.KeyPair.from_secret(secret)
        if pair.public != self.members[silent]["mask_key"]:
            raise SecureAggregationFailed(f"the shares revealed for client {silent}'s mask key "
                                          "rebuild a wrong key: a share is wrong; refused")
        for mate in self.graph[silent]:
            if mate in self.senders:  # mate added sign(mate, silent) * PRG(s) for silent
                seed = pair.agree(self.members[mate]["mask_key"],
                                  pair_context(self.tag, mate, silent, b"mask"))
                crypto.add_mask(total, seed, -pair_sign(mate, silent))
        return total
