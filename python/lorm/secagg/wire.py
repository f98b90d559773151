"""The secure-aggregation messages as bytes: JSON whose byte strings travel as base64
(``{"b64": ...}``), so that every transport (a Python call, torch.distributed objects,
Flower records) carries the same bytes and counts them alike. Nothing is unpickled."""

from __future__ import annotations

import base64
import json
from typing import Any


class SecureAggregationFailed(RuntimeError):
    """Too few clients stayed to unmask the sum, or what they revealed is wrong, or the
    sum fails the server's checks; the exchange is refused and nothing was added."""


class ProtocolError(ValueError):
    """A secure-aggregation message that is malformed, out of order or not for this
    exchange; the party that receives it refuses it."""


def dump(message: dict[str, Any]) -> bytes:
    return json.dumps(_encode(message), separators=(",", ":"), sort_keys=True).encode()


def load(data: bytes) -> dict[str, Any]:
    try:
        message = _decode(json.loads(data))
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"unreadable secure-aggregation message: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a secure-aggregation message is a JSON object")
    return message


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"b64"}:
            return base64.b64decode(value["b64"], validate=True)
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def field(message: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    """``message[name]`` if present and of ``kind``, else :class:`ProtocolError`."""
    if name not in message:
        raise ProtocolError(f"secure-aggregation message without {name!r}")
    value = message[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ProtocolError(f"secure-aggregation field {name!r} has the wrong type "
                            f"({type(value).__name__})")
    return value


def int_keys(mapping: dict[str, Any]) -> dict[int, Any]:
    """A JSON object keyed by client ids back to int keys."""
    try:
        return {int(k): v for k, v in mapping.items()}
    except (TypeError, ValueError):
        raise ProtocolError("client ids must be integers") from None
