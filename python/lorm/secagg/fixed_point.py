"""Statistics as integers of a ring Z_(2^W), so that masks cancel exactly.

A client's update becomes one vector of W-bit words: every tensor the Aggregator would
sum (``q`` as its upper triangle, the head bias weighted by its sample count) and the
sample count itself. Tensor ``t`` is scaled by ``2^f_t`` and rounded, with

    W   = 8 * ceil((2 + ceil(log2 n) + m + GUARD_BITS) / 8)   (at most 64)
    f_t = W - 2 - ceil(log2 n) - E_t

where ``n`` is the number of clients of the exchange, ``m`` the significand bits of the
wire dtype (24 for float32) and ``2^E_t`` a power of two no client's ``max |t|``
exceeds (each client states its own exponent; the server takes the largest). Then:

- no overflow: each word is at most ``2^(E_t + f_t) = 2^(W - 2 - ceil(log2 n))`` in
  magnitude, so the sum of ``n`` is below ``2^(W - 2)`` and its signed reading is exact;
- the error: each client's entry moves by at most ``2^-(f_t + 1) <= 2^(E_t - m -
  GUARD_BITS - 1)``, which is 2^-GUARD_BITS (1/65536) of the wire dtype's own rounding
  of the tensor's largest magnitude; the sum moves by at most ``n`` times that
  (:func:`sum_error_bound`), plus float64's rounding of the decoded sum.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

GUARD_BITS = 16
SAMPLES_KEY = "num_samples"
MIN_EXPONENT = -1000  # the exponent stated for an all-zero tensor
SIGNIFICAND_BITS = {torch.float64: 53, torch.float32: 24, torch.bfloat16: 8, torch.float16: 11}


@dataclass(frozen=True)
class Layout:
    """Where each tensor lies in the vector: ``entries`` name -> (shape, packed) with
    ``packed`` meaning a symmetric ``(d, d)`` sent as its upper triangle."""

    entries: tuple[tuple[str, tuple[int, ...], bool], ...]

    def sizes(self) -> list[int]:
        return [_packed_numel(shape, packed) for _, shape, packed in self.entries]

    @property
    def numel(self) -> int:
        return sum(self.sizes())

    def to_json(self) -> list:
        return [[name, list(shape), packed] for name, shape, packed in self.entries]

    @staticmethod
    def from_json(data: list) -> Layout:
        return Layout(tuple((str(n), tuple(int(s) for s in shape), bool(p)) for n, shape, p in data))


def _packed_numel(shape: tuple[int, ...], packed: bool) -> int:
    if packed:
        return shape[0] * (shape[0] + 1) // 2
    return math.prod(shape) if shape else 1


def ring_bits(num_clients: int, wire_dtype: torch.dtype) -> int:
    """W: the word size in bits (a multiple of 8, at most 64) for ``num_clients``."""
    need = 2 + headroom_bits(num_clients) + SIGNIFICAND_BITS[wire_dtype] + GUARD_BITS
    return min(64, 8 * math.ceil(need / 8))


def headroom_bits(num_clients: int) -> int:
    return max(0, math.ceil(math.log2(num_clients))) if num_clients > 1 else 0


def fraction_bits(exponent: int, num_clients: int, bits: int) -> int:
    """f_t for a tensor whose magnitudes stay below ``2^exponent``."""
    return bits - 2 - headroom_bits(num_clients) - exponent


def sum_error_bound(exponent: int, num_clients: int, bits: int) -> float:
    """Largest difference between the decoded sum and the exact sum of the clients'
    values, per entry, for a tensor of exponent ``exponent``."""
    return num_clients * 2.0 ** -(fraction_bits(exponent, num_clients, bits) + 1)


def terms_of(tensors: dict[str, torch.Tensor], num_samples: int) -> dict[str, torch.Tensor]:
    """What an update adds, by key, as the Aggregator adds it (bias weighted by the
    sample count), plus the sample count; float64 on the CPU."""
    out = {key: t.detach().to("cpu", torch.float64) for key, t in tensors.items()}
    if "head/bias" in out:
        out["head/bias"] = out["head/bias"] * num_samples
    out[SAMPLES_KEY] = torch.tensor(float(num_samples), dtype=torch.float64)
    return out


def layout_of(terms: dict[str, torch.Tensor]) -> Layout:
    return Layout(tuple((key, tuple(t.shape), _is_gram(key, t)) for key, t in terms.items()))


def _is_gram(key: str, t: torch.Tensor) -> bool:
    return key.endswith("/q") and t.dim() == 2


def exponents_of(terms: dict[str, torch.Tensor]) -> dict[str, int]:
    """Per tensor, the least E with ``max |t| <= 2^E`` (the sample count: exact, 0 bits
    of fraction are enough, but it follows the same rule)."""
    out = {}
    for key, t in terms.items():
        peak = float(np.abs(t.numpy()).max()) if t.numel() else 0.0
        if not math.isfinite(peak):
            raise ValueError(f"{key} is not finite: it cannot be encoded")
        out[key] = MIN_EXPONENT if peak == 0 else math.frexp(peak)[1]
    return out


@functools.lru_cache(maxsize=16)
def _triu(d: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(d)


def _flat(t: torch.Tensor, packed: bool) -> np.ndarray:
    array = t.numpy()
    return array[_triu(t.shape[0])] if packed else array.reshape(-1)


def encode(terms: dict[str, torch.Tensor], layout: Layout, exponents: dict[str, int],
           num_clients: int, bits: int) -> np.ndarray:
    """``terms`` (float64, CPU) as one ``(layout.numel,)`` uint64 vector of W-bit words
    (two's complement mod 2^W). Raises ValueError if a value exceeds its stated bound."""
    words = np.empty(layout.numel, dtype=np.int64)
    limit = 2.0 ** (bits - 2 - headroom_bits(num_clients))
    start = 0
    for (key, shape, packed), size in zip(layout.entries, layout.sizes()):
        t = terms[key]
        if tuple(t.shape) != shape:
            raise ValueError(f"{key} has shape {tuple(t.shape)}, the layout says {shape}")
        scaled = np.rint(np.ldexp(_flat(t, packed), fraction_bits(exponents[key], num_clients, bits)))
        if scaled.size and float(np.abs(scaled).max()) > limit:
            raise ValueError(f"{key} exceeds 2^{exponents[key]}, the bound agreed for it")
        words[start:start + size] = scaled
        start += size
    return words.view(np.uint64) & ring_mask(bits)


def ring_mask(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)


def decode(words: np.ndarray, layout: Layout, exponents: dict[str, int], num_clients: int,
           bits: int) -> dict[str, torch.Tensor]:
    """The float64 tensors a summed vector stands for (symmetric ``q`` rebuilt)."""
    signed = _signed(words, bits)
    out, start = {}, 0
    for (key, shape, packed), size in zip(layout.entries, layout.sizes()):
        f = fraction_bits(exponents[key], num_clients, bits)
        flat = torch.from_numpy(np.ldexp(signed[start:start + size].astype(np.float64), -f))
        start += size
        out[key] = _unflat(flat, shape, packed)
    return out


def _signed(words: np.ndarray, bits: int) -> np.ndarray:
    words = words & ring_mask(bits)
    if bits == 64:
        return words.view(np.int64)
    half = np.uint64(1 << (bits - 1))
    signed = words.astype(np.int64)
    return np.where(words >= half, signed - np.int64(1 << bits), signed)


def _unflat(flat: torch.Tensor, shape: tuple[int, ...], packed: bool) -> torch.Tensor:
    if not packed:
        return flat.reshape(shape)
    rows, cols = (torch.from_numpy(i) for i in _triu(shape[0]))
    full = torch.zeros(shape, dtype=flat.dtype)
    full[rows, cols] = flat
    full[cols, rows] = flat
    return full


def pack(words: np.ndarray, bits: int) -> bytes:
    """The words as ``bits / 8`` little-endian bytes each (what travels)."""
    width = bits // 8
    as_bytes = np.ascontiguousarray(words.astype("<u8")).view(np.uint8).reshape(-1, 8)
    return as_bytes[:, :width].tobytes()


def unpack(data: bytes, numel: int, bits: int) -> np.ndarray:
    """The ``(numel,)`` uint64 words :func:`pack` wrote: each read as 8 little-endian
    bytes starting at its own offset (the bytes past its width belong to the next word
    and are masked off), one pass over the data."""
    width = bits // 8
    if len(data) != numel * width:
        raise ValueError(f"a masked vector of {numel} words of {bits} bits is "
                         f"{numel * width} bytes, got {len(data)}")
    if width == 8:
        return np.frombuffer(data, dtype="<u8").astype(np.uint64)
    out = np.empty(numel, dtype=np.uint64)
    if numel > 1:  # words 0..numel-2 read 8 bytes within the data (width >= 4)
        head = np.ndarray((numel - 1,), dtype="<u8", buffer=data, strides=(width,))
        np.bitwise_and(head, ring_mask(bits), out=out[:-1])
    if numel:
        out[-1] = int.from_bytes(data[-width:], "little")
    return out
