"""``Idempotency-Key`` on creating POSTs: a client retry with the same key gets the first response, even when the
retries run concurrently. Each service using it has an ``idempotency_keys`` table (see the customers migration).

    key = Idempotency.from_request(request, scope="POST /v1/customers", body=model)
    async with pool.acquire() as conn, conn.transaction():
        if (replay := await key.claim(conn)) is not None:
            return replay
        ...create...
        await key.remember(conn, 201, body_json, location)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from pydantic import BaseModel

from shared.auth import principal
from shared.http import VISIBLE_ASCII, Problem, json_response

CLEANUP_SQL = "DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'"
"""Keys are remembered for a day (pass to create_service_app's cleanup_sql)."""


@dataclass(frozen=True)
class Idempotency:
    scope: str
    key: str | None
    request_hash: str

    @classmethod
    def from_request(cls, request: web.Request, *, route: str, body: BaseModel) -> Idempotency:
        key = request.headers.get("Idempotency-Key")
        if key is not None and not (len(key) <= 200 and VISIBLE_ASCII.fullmatch(key)):
            raise Problem(
                400,
                "Invalid Idempotency-Key",
                "Idempotency-Key must be 1 to 200 visible ASCII characters",
                type_="urn:problem:validation",
                errors=[{"field": "Idempotency-Key", "message": "must be 1 to 200 visible ASCII characters"}],
            )
        if key is None:
            return cls("", None, "")  # nothing to claim or remember: no hashing, no lookup
        digest = hashlib.sha256(orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()
        # keys are per caller: two clients choosing the same key never see each other's responses
        return cls(f"{principal(request).account_id}:{route}", key, digest)

    async def claim(self, conn: asyncpg.Connection) -> web.Response | None:
        """Inside the caller's transaction: None when this request owns the key (or there is none), else the
        first response to replay. A concurrent request with the same key waits on the primary key until the
        first commits, then replays its response. The same key with another body is a 422."""
        if self.key is None:
            return None
        inserted = await conn.fetchval(
            """INSERT INTO idempotency_keys (scope, key, request_hash, status, response)
               VALUES ($1, $2, $3, 0, '{}') ON CONFLICT DO NOTHING RETURNING true""",
            self.scope,
            self.key,
            self.request_hash,
        )
        if inserted:
            return None
        first = await conn.fetchrow(
            "SELECT request_hash, status, response, location FROM idempotency_keys WHERE scope = $1 AND key = $2",
            self.scope,
            self.key,
        )
        if first["request_hash"] != self.request_hash:
            raise Problem(
                422,
                "Idempotency-Key reused",
                "This Idempotency-Key was used with a different body",
                type_="urn:problem:idempotency-key-reused",
            )
        headers = {"Idempotent-Replayed": "true"}
        if first["location"]:
            headers["Location"] = first["location"]
        return json_response(first["response"], status=first["status"], headers=headers)

    async def remember(self, conn: asyncpg.Connection, status: int, response: Any, location: str | None) -> None:
        if self.key is None:
            return
        await conn.execute(
            "UPDATE idempotency_keys SET status = $3, response = $4, location = $5 WHERE scope = $1 AND key = $2",
            self.scope,
            self.key,
            status,
            response,
            location,
        )
