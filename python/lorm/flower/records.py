"""Flower records <-> lorm's tensors and :class:`~lorm.messages.ClientUpdate`.

A reply's :class:`~lorm.messages.ClientUpdate` travels as three records of one
``RecordDict``: ``"lorm.update"`` (an ``ArrayRecord`` of the wire tensors of
:meth:`ClientUpdate.wire_tensors`: packed triangles, in the wire dtypes), ``"lorm.meta"``
(a ``ConfigRecord`` of :meth:`ClientUpdate.metadata`) and ``"lorm.metrics"`` (a
``MetricRecord``: ``num-examples``, ``bytes``). Every array is raw little-endian bytes
with its dtype and shape beside it (stype :data:`STYPE`), so bfloat16 travels as it is
and nothing is ever unpickled; reading checks dtype, shape and length before a byte is
interpreted.
"""

from __future__ import annotations

import math
import sys

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from ..messages import WIRE_DTYPES, ClientUpdate, MalformedUpdate

STYPE = "lorm.raw-le"
UPDATE, META, METRICS = "lorm.update", "lorm.meta", "lorm.metrics"
_DTYPES = {str(d).replace("torch.", ""): d for d in WIRE_DTYPES}


def tensor_to_array(t: torch.Tensor) -> Array:
    """One tensor of a :data:`~lorm.messages.WIRE_DTYPES` dtype as a raw-bytes ``Array``."""
    name = str(t.dtype).replace("torch.", "")
    if name not in _DTYPES:
        raise ValueError(f"{name} tensors do not travel; one of {', '.join(_DTYPES)}")
    if sys.byteorder != "little":
        raise RuntimeError("lorm.flower's raw arrays are little-endian; this host is not")
    t = t.detach().to("cpu").contiguous()
    data = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
    return Array(dtype=name, shape=tuple(t.shape), stype=STYPE, data=data)


def array_to_tensor(key: str, array) -> torch.Tensor:
    """Inverse of :func:`tensor_to_array`, every field checked before use.

    Raises:
        MalformedUpdate: not an ``Array`` of :data:`STYPE`, unknown dtype, bad shape, or
            a byte count that does not match dtype and shape.
    """
    if not isinstance(array, Array) or array.stype != STYPE:
        raise MalformedUpdate(f"{key}: expected an Array of stype {STYPE!r}, got "
                              f"{getattr(array, 'stype', type(array).__name__)!r}")
    dtype = _DTYPES.get(array.dtype)
    shape = tuple(array.shape) if isinstance(array.shape, (tuple, list)) else None
    if dtype is None:
        raise MalformedUpdate(f"{key}: dtype {array.dtype!r} is not one of {', '.join(_DTYPES)}")
    if shape is None or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise MalformedUpdate(f"{key}: shape {array.shape!r} is not a tuple of sizes")
    expected = math.prod(shape) * dtype.itemsize
    if not isinstance(array.data, bytes) or len(array.data) != expected:
        raise MalformedUpdate(f"{key}: {len(array.data) if isinstance(array.data, bytes) else '?'}"
                              f" bytes for {array.dtype} {shape} (expected {expected})")
    if not expected:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(array.data), dtype=dtype).view(shape)


def tensors_to_record(tensors: dict[str, torch.Tensor]) -> ArrayRecord:
    """Named tensors as an ``ArrayRecord`` (raw bytes, no pickle)."""
    return ArrayRecord({key: tensor_to_array(t) for key, t in tensors.items()})


def record_to_tensors(record) -> dict[str, torch.Tensor]:
    """Inverse of :func:`tensors_to_record`; :class:`MalformedUpdate` for anything else."""
    if not isinstance(record, ArrayRecord):
        raise MalformedUpdate(f"expected an ArrayRecord, got {type(record).__name__}")
    return {key: array_to_tensor(key, array) for key, array in record.items()}


def update_to_content(update: ClientUpdate, wire_dtype: torch.dtype = torch.float32,
                      gram_dtype: torch.dtype | None = None) -> RecordDict:
    """A reply's records for ``update`` (``q`` in ``gram_dtype``, the rest in
    ``wire_dtype``; raises ``ValueError`` as :meth:`ClientUpdate.wire_tensors` does)."""
    arrays = tensors_to_record(update.wire_tensors(wire_dtype, gram_dtype))
    nbytes = sum(len(a.data) for a in arrays.values())
    return RecordDict({UPDATE: arrays, META: ConfigRecord(update.metadata()),
                       METRICS: MetricRecord({"num-examples": update.num_samples,
                                              "bytes": nbytes})})


def content_to_update(content) -> tuple[ClientUpdate, int]:
    """The :class:`ClientUpdate` a reply carries, tensors in their wire dtype (the
    aggregator adds them into float64 sums as they are), and its payload bytes.

    Raises:
        MalformedUpdate: records missing or of the wrong type, or anything
            :meth:`ClientUpdate.from_wire` refuses.
    """
    if not isinstance(content, RecordDict):
        raise MalformedUpdate(f"expected a RecordDict, got {type(content).__name__}")
    missing = [key for key in (UPDATE, META) if key not in content]
    if missing:
        raise MalformedUpdate(f"the reply has no {' or '.join(missing)} record")
    meta = content[META]
    if not isinstance(meta, ConfigRecord):
        raise MalformedUpdate(f"{META} must be a ConfigRecord, got {type(meta).__name__}")
    tensors = record_to_tensors(content[UPDATE])
    update = ClientUpdate.from_wire(dict(meta), tensors, dtype=None)
    return update, sum(t.numel() * t.element_size() for t in tensors.values())
