from __future__ import annotations

import uuid
from pathlib import Path

from services.accounts import security
from shared.auth import StaticKeyVerifier

ISSUER = "coworking-accounts"
AUDIENCE = "coworking"


class KeyRing:
    """A signing key made for the test run, and tokens signed with it."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "jwt-signing-key.pem"
        self.path.write_bytes(security.generate_private_key_pem())
        self.key = security.SigningKey.from_pem_file(self.path)

    def verifier(self) -> StaticKeyVerifier:
        return StaticKeyVerifier({self.key.kid: self.key.private_key.public_key()}, ISSUER, AUDIENCE)

    def token(self, role: str = "admin", customer_id: uuid.UUID | None = None, ttl_s: int = 300) -> str:
        return security.issue_access_token(
            self.key,
            account_id=uuid.uuid4(),
            customer_id=customer_id,
            role=role,
            standing="active",
            issuer=ISSUER,
            audience=AUDIENCE,
            ttl_s=ttl_s,
        )
