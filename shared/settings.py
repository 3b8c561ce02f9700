"""Settings read from the environment.

Common settings (broker, prefix, token verification, logging, retry policy) have no prefix and are the same for
every service; each service adds its own with an env prefix (``CUSTOMERS_``, ``ACCOUNTS_``...).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_list(v: Any) -> Any:
    """Lists in the environment: JSON (``[1, 2]``) or comma-separated (``1,2``)."""
    if isinstance(v, str):
        v = v.strip()
        if v.startswith("["):
            return orjson.loads(v)
        return [x.strip() for x in v.split(",") if x.strip()]
    return v


EnvList = NoDecode, BeforeValidator(_split_list)


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/", description="RabbitMQ URL")
    amqp_prefix: str = Field("", description="Prefix for every exchange and queue name (isolates test runs or tenants)")
    log_level: str = Field("INFO", description="Python log level")
    log_format: str = Field("json", description="`json` (one object a line) or `text`")
    access_log_burst: int = Field(
        100,
        ge=0,
        description="Access lines a second per route and method for requests that succeeded in under a second; past "
        "it, one line a second counts those not logged (errors and slow requests always get theirs). 0: every request",
    )
    jwks_url: str = Field(
        "http://127.0.0.1:8002/.well-known/jwks.json",
        description="Where services fetch the public keys that verify access tokens",
    )
    jwt_issuer: str = Field("coworking-accounts", description="`iss` of access tokens")
    jwt_audience: str = Field("coworking", description="`aud` of access tokens")
    retry_delays_ms: Annotated[list[int], *EnvList] = Field(
        default=[1000, 5000, 30000, 120000, 600000],
        description="Backoff between attempts of a failing message; after the last one it is dead-lettered",
    )
    prefetch: int = Field(50, description="Unacknowledged messages per consumer")
    consumer_workers: int = Field(
        1,
        ge=1,
        description="Transactions a consumer runs at once; messages arriving meanwhile wait and go in one batch",
    )
    consumer_batch_max: int = Field(
        50, ge=1, description="Messages waiting for a consumer's worker that are handled together, in one transaction"
    )
    relay_enabled: bool = Field(
        True,
        description="Publish this process's outbox; off for an HTTP-only replica (its writes NOTIFY the others' "
        "relays: at least one replica of the service must relay, or nothing leaves)",
    )
    relay_batch_size: int = Field(200, description="Outbox rows published per relay round")
    relay_poll_interval_s: float = Field(
        1.0, description="Fallback poll of the outbox: retries coming due, and rows no wake-up announced"
    )
    relay_min_round_interval_ms: float = Field(
        5.0, ge=0, description="Relay rounds start at most this often; under load one round takes many commits' rows"
    )
    shutdown_grace_s: float = Field(10.0, description="Time in-flight messages get to finish on SIGTERM")
    otel_exporter_otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP collector (e.g. http://otel-collector:4318); traces are exported only if set"
    )


class ServiceSettings(BaseSettings):
    """Base of each service's settings; subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", description="HTTP bind address")
    port: int = Field(8000, description="HTTP port")
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/postgres", description="PostgreSQL URL")
    db_pool_min: int = Field(2, description="Smallest database pool")
    db_pool_max: int = Field(10, description="Largest database pool")
    common: CommonSettings = Field(default_factory=CommonSettings)
