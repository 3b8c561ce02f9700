"""Passwords, set-password tokens and access tokens: pure functions over keys and clocks."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

# OWASP's argon2id recommendation (m=19 MiB, t=2, p=1): strong, and small enough that concurrent logins stay
# within the service's memory budget.
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
MAX_PASSWORD_LENGTH = 1024

COMMON_PASSWORDS: frozenset[str] = frozenset(
    line.strip()
    for line in (Path(__file__).parent / "common_passwords.txt").read_text(encoding="utf-8").splitlines()
    if line.strip()
)
"""About a thousand of the most common passwords (lowercase), loaded once: refused whatever their case."""


def is_common(password: str) -> bool:
    return password.strip().lower() in COMMON_PASSWORDS


def password_problems(password: str, min_length: int) -> list[str]:
    problems = []
    if is_common(password):
        problems.append("is too common")
    if len(password) < min_length:
        problems.append(f"must be at least {min_length} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        problems.append(f"must be at most {MAX_PASSWORD_LENGTH} characters")
    if password.strip() == "":
        problems.append("must not be blank")
    return problems


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))
"""Verified against when the email is unknown, so a miss costs as long as a wrong password."""


def new_token() -> str:
    """A set-password token: 256 bits from the OS CSPRNG, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def from_pem_file(cls, path: Path) -> SigningKey:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError(f"{path}: the signing key must be an EC P-256 private key")
        return cls(kid=key_id(key.public_key()), private_key=key)


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint: the same key always gets the same kid."""
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(public_key, as_dict=True)
    canonical = f'{{"crv":"{jwk["crv"]}","kty":"EC","x":"{jwk["x"]}","y":"{jwk["y"]}"}}'
    return jwt.utils.base64url_encode(hashlib.sha256(canonical.encode()).digest()).decode()


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(f"{path}: not an EC public key")
    return key


def public_jwk(public_key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(public_key, as_dict=True)
    jwk.update({"kid": key_id(public_key), "use": "sig", "alg": "ES256"})
    return jwk


def generate_private_key_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def issue_access_token(
    key: SigningKey,
    *,
    account_id: uuid.UUID,
    customer_id: uuid.UUID | None,
    role: str,
    standing: str,
    issuer: str,
    audience: str,
    ttl_s: int,
    now: float | None = None,
    scope: str | None = None,
) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": str(account_id),
        "role": role,
        "standing": standing,
        "iat": issued,
        "exp": issued + ttl_s,
        "jti": str(uuid.uuid4()),
    }
    if customer_id is not None:
        claims["customer_id"] = str(customer_id)
    if scope:
        claims["scope"] = scope
    return jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})
