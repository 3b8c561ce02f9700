from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import EnvList, ServiceSettings


class AccountsSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ACCOUNTS_", extra="ignore", populate_by_name=True)

    port: int = Field(8002, description="HTTP port")
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/coworking_accounts", description="PostgreSQL URL")
    jwt_private_key_file: Path | None = Field(
        None, description="PEM file of the EC P-256 key that signs access tokens (required to serve)"
    )
    jwt_extra_public_key_files: Annotated[list[Path], *EnvList] = Field(
        default_factory=list,
        description="PEM public keys still published in the JWKS (previous keys during a rotation)",
    )
    access_token_ttl_s: int = Field(900, description="Lifetime of access tokens, seconds")
    invitation_ttl_hours: float = Field(72, description="Lifetime of set-password (welcome) links, hours")
    public_base_url: str = Field(
        "http://127.0.0.1:8002",
        description="Base of links in emails; the set-password link is `<base>/activate#token=...`",
    )
    seal_key: str | None = Field(
        None, description="32-byte base64url key shared with notifications to seal links (required to serve)"
    )
    password_min_length: int = Field(12, description="Shortest password accepted")
    refresh_token_ttl_days: float = Field(30, description="Lifetime of a refresh token (each use rotates it), days")
    password_reset_ttl_minutes: float = Field(60, description="Lifetime of password-reset links, minutes")
    login_failure_window_s: int = Field(900, ge=1, description="Sliding window of the login throttle, seconds")
    login_max_failures_per_email: int = Field(
        5, ge=1, description="Failed logins per email within the window; beyond it a 429 until one expires"
    )
    login_max_failures_per_address: int = Field(
        50, ge=1, description="Failed logins per client address (request.remote) within the window"
    )
    password_hash_concurrency: int = Field(
        2, ge=1, description="argon2 hashes computed at once (19 MiB each); further logins wait their turn"
    )
