"""Who masks with whom and how many shares rebuild a secret, computed alike by the
server and every client from public facts (the exchange's tag, the clients, the
config), so that a client can check the roster the server sends.

SecAgg+ (Bell et al. 2020): each client masks with ``k`` neighbours on a ring laid out
in a random order drawn from the tag, and shares its secrets among them and itself;
``k >= n - 1`` is the complete graph of SecAgg (Bonawitz et al. 2017).
"""

from __future__ import annotations

import hashlib
import math
import random

COMPLETE_UP_TO = 16  # the automatic graph is complete (SecAgg) up to this many clients


def neighbour_count(setting: int, num_clients: int) -> int:
    """k for ``num_clients``: ``setting``, or (0) every other client up to
    :data:`COMPLETE_UP_TO` clients and ``2 * ceil(log2 n)`` beyond, the logarithmic
    degree SecAgg+ asks for; even, at most ``n - 1``."""
    if num_clients <= 1:
        return 0
    if setting == 0 and num_clients <= COMPLETE_UP_TO:
        return num_clients - 1
    k = setting if setting > 0 else 2 * math.ceil(math.log2(num_clients))
    k += k % 2
    return min(k, num_clients - 1)


def neighbours(clients: list[int], setting: int, tag: bytes) -> dict[int, list[int]]:
    """Each client's neighbours (sorted), a symmetric relation."""
    order = sorted(clients)
    n = len(order)
    k = neighbour_count(setting, n)
    if k >= n - 1:
        return {c: [v for v in order if v != c] for c in order}
    random.Random(hashlib.sha256(b"lorm-secagg-graph" + tag).digest()).shuffle(order)
    out: dict[int, set[int]] = {c: set() for c in order}
    for i, c in enumerate(order):
        for j in range(1, k // 2 + 1):
            v = order[(i + j) % n]
            out[c].add(v)
            out[v].add(c)
    return {c: sorted(vs) for c, vs in out.items()}


def holders(client: int, its_neighbours: list[int]) -> list[int]:
    """Who holds a share of ``client``'s secrets (its neighbours and itself), in the
    order that gives each its Shamir x (position + 1)."""
    return sorted({client, *its_neighbours})


def threshold(setting: float, num_holders: int) -> int:
    """t: the shares that rebuild a secret, ``ceil(setting * holders)``, at least 2 and
    more than half the holders (so no server can gather t shares of a client's self
    mask and t of its pairwise key at once)."""
    t = max(2, math.ceil(setting * num_holders), num_holders // 2 + 1)
    return min(t, num_holders)
