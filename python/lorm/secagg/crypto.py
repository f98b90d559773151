"""The cryptographic pieces of secure aggregation, all kept primitives:

- key agreement: X25519 (``cryptography``), the shared secret through HKDF-SHA256;
- authenticated encryption of the Shamir shares: Fernet (AES-128-CBC + HMAC-SHA256) as
  Flower's ``flwr.common.secure_aggregation.crypto.symmetric_encryption`` wraps it;
- secret sharing: Shamir over GF(2^128) from pycryptodome (what Flower's ``shamir``
  module wraps), one 16-byte block per call;
- the mask generator: AES in counter mode keyed by the seed (NIST SP 800-38A; 256-bit
  pairwise seeds, 128-bit self-mask seeds), its keystream read as uint64 words. Flower's ``pseudo_rand_gen`` is not used: it folds
  its seed into 32 bits and draws from numpy's Mersenne Twister, so 2^32 guesses would
  find a mask.
"""

from __future__ import annotations

import base64
import os

import numpy as np

from ..optional import MissingExtra

try:
    from Crypto.Protocol.SecretSharing import Shamir
    from cryptography.fernet import Fernet, InvalidToken
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )
except ModuleNotFoundError as exc:  # pragma: no cover - the extra is part of the test set-up
    raise MissingExtra(f"secure aggregation needs the cryptography and pycryptodome packages "
                       f"(lorm's 'secagg' extra: pip install 'lorm[secagg]'); {exc.name} is "
                       "not installed") from exc

KEY_BYTES = 32
BLOCK = 16  # Shamir shares one 16-byte block per polynomial
_ZERO_NONCE = bytes(16)


class KeyPair:
    """An X25519 key pair; ``public`` is its 32 raw bytes."""

    def __init__(self, private: X25519PrivateKey | None = None):
        self.private = private or X25519PrivateKey.generate()
        self.public = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def secret_bytes(self) -> bytes:
        return self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @staticmethod
    def from_secret(secret: bytes) -> KeyPair:
        return KeyPair(X25519PrivateKey.from_private_bytes(secret))

    def agree(self, peer_public: bytes, context: bytes) -> bytes:
        """32 bytes both ends derive: HKDF-SHA256 of the X25519 secret, bound to ``context``."""
        shared = self.private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                    info=context).derive(shared)


def encrypt(key: bytes, plaintext: bytes) -> bytes:
    return Fernet(base64.urlsafe_b64encode(key)).encrypt(plaintext)


def decrypt(key: bytes, token: bytes) -> bytes:
    """Raises ValueError for a token that was not made with ``key`` or was altered."""
    try:
        return Fernet(base64.urlsafe_b64encode(key)).decrypt(token)
    except InvalidToken:
        raise ValueError("a share failed authentication (wrong key or altered)") from None


def random_seed(size: int = KEY_BYTES) -> bytes:
    return os.urandom(size)


def split_secret(secret: bytes, threshold: int, holders: int) -> list[bytes]:
    """``holders`` shares of ``secret`` (a multiple of 16 bytes), any ``threshold`` of
    which rebuild it; share ``i`` (from 0) is for x = i + 1."""
    blocks = [secret[i:i + BLOCK] for i in range(0, len(secret), BLOCK)]
    shares = [bytearray() for _ in range(holders)]
    for block in blocks:
        for x, value in Shamir.split(threshold, holders, block, ssss=False):
            shares[x - 1] += value
    return [bytes(s) for s in shares]


def join_secret(shares: dict[int, bytes]) -> bytes:
    """The secret from ``{x: share}`` (x from 1)."""
    length = len(next(iter(shares.values())))
    out = bytearray()
    for start in range(0, length, BLOCK):
        out += Shamir.combine([(x, s[start:start + BLOCK]) for x, s in shares.items()], ssss=False)
    return bytes(out)


# pycryptodome's Shamir field: GF(2^128) modulo x^128 + x^7 + x^2 + x + 1, an element's
# 16 bytes read big-endian with bit i the coefficient of x^i
_FIELD_MODULUS = (1 << 128) | 0x87


def join_secrets(batch: dict[int, dict[int, bytes]]) -> dict[int, bytes]:
    """:func:`join_secret` for many secrets at once (``{owner: {x: share}}``), as
    ``Shamir.combine`` computes it: sum_j y_j * l_j with the Lagrange weights at 0,
    ``l_j = prod_{m != j} x_m / (x_j + x_m)``. The weights depend only on the shares' x,
    which most secrets share (every holder answered), so they are computed once per set
    of x; a secret then costs t field products instead of t^2. (``Shamir.combine``'s
    products are written to run in constant time and cost ~0.5 ms each in Python: 100
    clients' seeds took 2.8 s. The server combines shares it is meant to learn, so the
    plain product below serves; tests/test_secagg.py checks it against Shamir.combine.)"""
    weights: dict[tuple[int, ...], list[int]] = {}
    out = {}
    for owner, shares in batch.items():
        xs = tuple(sorted(shares))
        if xs not in weights:
            weights[xs] = _lagrange_at_zero(xs)
        length = len(shares[xs[0]])
        secret = bytearray()
        for start in range(0, length, BLOCK):
            value = 0
            for x, weight in zip(xs, weights[xs]):
                value ^= _field_product(int.from_bytes(shares[x][start:start + BLOCK], "big"), weight)
            secret += value.to_bytes(BLOCK, "big")
        out[owner] = bytes(secret)
    return out


def _field_product(a: int, b: int) -> int:
    product = 0
    while b:
        if b & 1:
            product ^= a
        b >>= 1
        a <<= 1
        if a >> 128:
            a ^= _FIELD_MODULUS
    return product


def _field_inverse(a: int) -> int:
    """a^(2^128 - 2), the inverse of a non-zero element, by square-and-multiply."""
    result, power, exponent = 1, a, (1 << 128) - 2
    while exponent:
        if exponent & 1:
            result = _field_product(result, power)
        power = _field_product(power, power)
        exponent >>= 1
    return result


def _lagrange_at_zero(xs: tuple[int, ...]) -> list[int]:
    if len(set(xs)) != len(xs):
        raise ValueError("duplicate share")
    weights = []
    for j, x_j in enumerate(xs):
        numerator, denominator = 1, 1
        for m, x_m in enumerate(xs):
            if m != j:
                numerator = _field_product(numerator, x_m)
                denominator = _field_product(denominator, x_j ^ x_m)
        weights.append(_field_product(numerator, _field_inverse(denominator)))
    return weights


def mask_words(seed: bytes, numel: int) -> np.ndarray:
    """``(numel,)`` uint64: the AES-CTR keystream of ``seed`` (16 or 32 bytes)."""
    out = np.zeros(numel, dtype=np.uint64)
    add_mask(out, seed, 1)
    return out


class _Scratch:
    """Zero plaintext and keystream buffers, kept between calls of one size."""

    size = -1
    zeros = b""
    stream = bytearray()


def add_mask(words: np.ndarray, seed: bytes, sign: int) -> None:
    """``words += sign * mask_words(seed, words.size)`` in place (mod 2^64), without
    allocating the keystream anew for every seed."""
    nbytes = 8 * words.size
    if _Scratch.size != nbytes:
        _Scratch.size, _Scratch.zeros = nbytes, bytes(nbytes)
        _Scratch.stream = bytearray(nbytes + BLOCK - 1)
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor()
    encryptor.update_into(_Scratch.zeros, _Scratch.stream)
    stream = np.frombuffer(_Scratch.stream, dtype=np.uint64, count=words.size)
    if sign > 0:
        words += stream
    else:
        words -= stream
