"""The stack's ceiling: a bare aiohttp + asyncpg server doing the least the customers service's two benchmarked
routes must do, on the same database (the bench's customers database), run as its own process in the same bench
run so that its figures and the service's share the machine's state:

- ``GET /customers/{id}``: the same row by primary key (the same columns), as JSON.
- ``POST /customers``: the same customer insert plus one outbox row, in one transaction, answered with the row.

No authentication, validation, idempotency, history, tracing, metrics or middleware: that is what the ratio
measures. The outbox rows are written already published (``published_at = now()``) so that the service's relay
leaves them alone (neither this insert nor the service's sends a NOTIFY: the service wakes its relay in-process).

``python bench/ceiling.py --dsn postgresql://... --port 8099`` (the harness starts and stops it).
"""

from __future__ import annotations

import argparse
import uuid

import asyncpg
import orjson
from aiohttp import web

COLUMNS = (
    "id, full_name, email, company_name, phone, kind, standing, portal_access, account_id, version, created_at, "
    "updated_at, erased_at"
)
POOL = web.AppKey("pool", asyncpg.Pool)


def _json(row: asyncpg.Record, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(dict(row), default=str), status=status, content_type="application/json")


async def get_customer(request: web.Request) -> web.Response:
    try:
        customer_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound() from None
    row = await request.app[POOL].fetchrow(f"SELECT {COLUMNS} FROM customers WHERE id = $1", customer_id)
    if row is None:
        raise web.HTTPNotFound()
    return _json(row)


async def create_customer(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    customer_id, event_id = uuid.uuid4(), uuid.uuid4()
    async with request.app[POOL].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO customers (id, full_name, email, company_name, phone)
                VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}""",
            customer_id,
            body["full_name"],
            body["email"],
            body.get("company_name"),
            body.get("phone"),
        )
        event = {
            "event_id": str(event_id),
            "event_type": "customer.created",
            "event_version": 1,
            "subject": str(customer_id),
            "producer": "bench-ceiling",
            "payload": {k: row[k] for k in ("full_name", "email", "kind", "standing")} | {"customer_id": customer_id},
        }
        await conn.execute(
            """INSERT INTO outbox (event_id, exchange, routing_key, body, correlation_id, published_at)
               VALUES ($1, $2, $3, $4, $5, now())""",
            event_id,
            "bench.ceiling",
            "customer.created.v1",
            orjson.dumps(event, default=str),
            request.headers.get("X-Request-ID"),
        )
    return _json(row, status=201)


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset: the handlers leave no session state (asyncpg still rolls back an open transaction)."""


def create_app(dsn: str, pool_max: int) -> web.Application:
    app = web.Application()

    async def pool(app: web.Application):  # type: ignore[no-untyped-def]
        # no reset query when a connection goes back to the pool (RESET ALL, UNLISTEN *...: a round trip a
        # request), which these handlers need no more than the services do (theirs skip it too)
        app[POOL] = await asyncpg.create_pool(dsn, min_size=2, max_size=pool_max, reset=_keep_session)
        yield
        await app[POOL].close()

    app.cleanup_ctx.append(pool)
    app.router.add_get("/customers/{id}", get_customer)
    app.router.add_post("/customers", create_customer)
    app.router.add_get("/readyz", ready)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pool-max", type=int, default=10, help="largest pool (default 10, as the services')")
    args = p.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    web.run_app(create_app(args.dsn, args.pool_max), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
