"""One exchange under secure aggregation, on any transport.

:func:`secure_exchange` is the server's schedule of the four steps (lorm.secagg.party);
a :class:`Courier` carries each step to the clients wherever they run and brings their
answers back; :class:`HostedClients` is the client side a courier runs next to the
clients it hosts. The unmasked sum is checked (finite, symmetric, positive
semi-definite Grams: the Aggregator's checks, on the sum) and only then installed into
the exchange's Aggregator; otherwise :class:`SecureAggregationFailed` and the
Aggregator stays as it was.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from ..aggregate import Aggregator, UpdateRejected
from ..messages import ClientUpdate, SolveStats
from . import wire
from .party import MaskingParty
from .unmasker import Unmasker
from .wire import ProtocolError, SecureAggregationFailed

ADVERT, SHARE_KEYS, MASKED_INPUT, REVEAL = "advert", "share_keys", "masked_input", "reveal"


class HostedClients:
    """The secure-aggregation parties of the clients one process hosts.

    Args:
        produce: client id -> its update for this exchange (trains or runs its pass).
        threshold, neighbours: the config's ``secagg_threshold`` and ``secagg_neighbours``.
    """

    def __init__(self, produce: Callable[[int], ClientUpdate], threshold: float, neighbours: int):
        self.produce, self.settings = produce, (threshold, neighbours)
        self.parties: dict[int, MaskingParty] = {}

    def answer(self, step: str, client: int, request: bytes) -> bytes:
        if step == ADVERT:
            tag = wire.field(wire.load(request), "tag", bytes)
            self.parties[client] = MaskingParty(client, tag, self.produce(client), *self.settings)
            return self.parties[client].advert()
        if client not in self.parties:
            raise ProtocolError(f"step {step} for client {client}, which has not advertised")
        return getattr(self.parties[client], step)(request)


class Courier(ABC):
    """Carries one step to the clients and their answers back."""

    @abstractmethod
    def ask(self, step: str, requests: dict[int, bytes]) -> dict[int, bytes]:
        """Each client's answer to its request; a client that did not answer is absent."""

    def gather_masked(self, requests: dict[int, bytes], unmasker: Unmasker) -> int:
        """Sends the inboxes, adds each masked input into ``unmasker``; the bytes uploaded."""
        answers = self.ask(MASKED_INPUT, requests)
        for client, data in answers.items():
            unmasker.add_masked(client, data)
        return sum(len(a) for a in answers.values())


class LocalCourier(Courier):
    """The clients are :class:`HostedClients` in this process."""

    def __init__(self, hosted: HostedClients):
        self.hosted = hosted

    def ask(self, step, requests):
        return {c: self.hosted.answer(step, c, r) for c, r in requests.items()}


def secure_exchange(courier: Courier, clients: list[int], tag: bytes, aggregator: Aggregator,
                    wire_dtype: torch.dtype, threshold: float, neighbours: int) -> int:
    """Runs the four steps for ``clients`` and installs the unmasked sum into
    ``aggregator``. Returns the bytes the clients uploaded."""
    unmasker = Unmasker(tag, wire_dtype, threshold, neighbours)
    sent = 0

    def step(name: str, requests: dict[int, bytes]) -> dict[int, bytes]:
        nonlocal sent
        answers = courier.ask(name, requests)
        sent += sum(len(a) for a in answers.values())
        return answers

    adverts = step(ADVERT, {c: wire.dump({"tag": tag}) for c in clients})
    shares = step(SHARE_KEYS, unmasker.rosters(adverts))
    sent += courier.gather_masked(unmasker.inboxes(shares), unmasker)
    sums, num_clients, num_samples = unmasker.unmask(step(REVEAL, unmasker.reveal_requests()))
    install(aggregator, sums, num_clients, num_samples)
    return sent


def install(aggregator: Aggregator, sums: dict[str, torch.Tensor], num_clients: int,
            num_samples: int) -> None:
    """Checks ``sums`` as the Aggregator checks one update, then makes them the
    Aggregator's sums; on a refusal raises :class:`SecureAggregationFailed`, the
    Aggregator untouched."""
    if num_samples <= 0:
        raise SecureAggregationFailed(f"the unmasked sample count is {num_samples}")
    as_update = _as_update(sums, aggregator, num_samples)
    scratch = Aggregator(aggregator.task, aggregator.round, aggregator.factor, dtype=aggregator.dtype)
    try:
        scratch.add(as_update)
    except UpdateRejected as exc:
        raise SecureAggregationFailed(f"the unmasked sum is refused: {exc}") from None
    totals, layers = scratch.partial_sums()
    aggregator.replace_sums(totals, layers, num_clients, num_samples)


def _as_update(sums: dict[str, torch.Tensor], aggregator: Aggregator, num_samples: int) -> ClientUpdate:
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in sums.items():
        if key.startswith("layer/"):
            name, part = key[len("layer/"):].rsplit("/", 1)
            layers.setdefault(name, {})[part] = value
    head = None
    if "head/q" in sums:
        head = SolveStats(p=sums["head/p"], q=sums["head/q"])
    bias = sums["head/bias"] / num_samples if "head/bias" in sums else None
    return ClientUpdate(task=aggregator.task, round=aggregator.round, factor=aggregator.factor,
                        num_samples=num_samples,
                        layers={n: SolveStats(p=parts.get("p"), q=parts["q"]) for n, parts in layers.items()},
                        head=head, head_bias=bias)
