"""Sealing secrets that must travel through the bus to one recipient (the set-password link to notifications):
AES-256-GCM with a key only the sender and the recipient hold. What is stored in an outbox row or a message is
ciphertext; without the key it reveals nothing and cannot be altered undetected."""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_AAD = b"coworking-sealed-v1"


class SealError(ValueError):
    pass


def _b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _b64e(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def load_key(encoded: str) -> bytes:
    """Keys are 32 random bytes, base64url-encoded (``python -m shared.sealing`` prints a new one)."""
    try:
        key = _b64d(encoded.strip())
    except (ValueError, TypeError) as exc:
        raise SealError("the sealing key is not base64url") from exc
    if len(key) != 32:
        raise SealError("the sealing key must be 32 bytes (base64url-encoded)")
    return key


def new_key() -> str:
    return _b64e(AESGCM.generate_key(bit_length=256))


def seal(key: bytes, data: dict[str, Any]) -> str:
    nonce = os.urandom(12)
    return _b64e(nonce + AESGCM(key).encrypt(nonce, orjson.dumps(data), _AAD))


def unseal(key: bytes, sealed: str) -> dict[str, Any]:
    try:
        raw = _b64d(sealed)
        data = orjson.loads(AESGCM(key).decrypt(raw[:12], raw[12:], _AAD))
    except Exception as exc:
        raise SealError("sealed data could not be opened with this key") from exc
    if not isinstance(data, dict):
        raise SealError("sealed data is not an object")
    return data


if __name__ == "__main__":
    print(new_key())
