"""Secure aggregation of LoRM's statistics (``secure_aggregation: secagg+``): the server
learns only the sums. Pairwise masks agreed between the clients and a self mask, both
recoverable from Shamir shares when clients drop (Bonawitz et al. 2017; SecAgg+'s
sparse graph, Bell et al. 2020), over statistics in fixed point so the masks cancel
exactly. docs/secure-aggregation.md states the protocol, its bounds and what a
malicious client can and cannot do.

- :mod:`.fixed_point`: updates as ring words, the error and overflow bounds;
- :mod:`.crypto`: X25519, HKDF, Fernet, Shamir, AES-CTR masks (kept primitives);
- :mod:`.plan`: the neighbour graph and the threshold;
- :mod:`.party` / :mod:`.unmasker`: the client's and the server's halves;
- :mod:`.exchange`: the steps over a :class:`~.exchange.Courier`, and the install;
- :mod:`.transport`: the wrapper that puts any transport's rounds under it.
"""

from .wire import ProtocolError, SecureAggregationFailed

__all__ = ["ProtocolError", "SecureAggregationFailed"]
