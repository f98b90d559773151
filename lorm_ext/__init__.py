"""lorm_ext: compiled kernels for LoRM's sufficient statistics and solves.

Ops (also reachable as ``torch.ops.lorm_ext.*``):

- :func:`gram_update` -- streaming full ``(d, d)`` or diagonal ``(d,)`` Gram.
- :func:`lowrank_gram_update` -- Gram of projected rows ``(r, r)`` plus the diagonal.
- :func:`spd_solve` -- ``X @ q = p`` for symmetric PSD ``q``, with pinv semantics.
- :func:`inspect_terms` -- one read of each of a client's terms: largest magnitude,
  finite, exactly symmetric, smallest diagonal entry.
- :func:`add_terms` -- the server's checked add: inspect every term of an update, then
  add them all into the running sums, or none.

:func:`backend` says which implementation runs (:func:`cpu_isa`: which build of the
CPU vector loops); :mod:`lorm_ext.reference` holds the
pure-torch oracle of every op. At the first op call on CUDA tensors the CUDA kernels are
checked against it (:mod:`lorm_ext.self_check`, ``LORM_CUDA_CHECK``).
"""

from . import reference, self_check
from ._loader import backend, cpu_isa, load_message
from .errors import LormInputError, SelfCheckError, SelfCheckWarning
from .ops import add_terms, gram_update, inspect_terms, lowrank_gram_update, spd_solve

__all__ = [
    "LormInputError",
    "SelfCheckError",
    "SelfCheckWarning",
    "add_terms",
    "backend",
    "cpu_isa",
    "gram_update",
    "inspect_terms",
    "load_message",
    "lowrank_gram_update",
    "reference",
    "self_check",
    "spd_solve",
]
