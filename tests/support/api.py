"""A client for the customers API as the integration tests drive it: one request (optionally asserting its status)
and the records most tests start from, a customer and a plan."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy


class CustomersApi:
    def __init__(self, http: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None) -> None:
        self.http, self.base, self.headers = http, base, headers

    async def request(
        self, method: str, path: str, expect: int | None = None, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any, CIMultiDictProxy[str]]:
        """Status, body (JSON when it is JSON) and headers; with ``expect``, asserts the status."""
        async with self.http.request(method, self.base + path, headers=headers or self.headers, **kw) as resp:
            body = await resp.json() if resp.content_type.endswith("json") else await resp.text()
            if expect is not None:
                assert resp.status == expect, (method, path, resp.status, body)
            return resp.status, body, resp.headers

    async def customer(self, name: str = "Ada Lovelace", email: str | None = None) -> dict[str, Any]:
        email = email or f"{uuid.uuid4().hex[:12]}@example.com"
        return (await self.request("POST", "/v1/customers", 201, json={"full_name": name, "email": email}))[1]

    async def plan(
        self, name: str | None = None, booking: int = 10, printing: int = 100, period: str = "month"
    ) -> dict[str, Any]:
        body = {
            "name": name or f"Plan {uuid.uuid4().hex[:8]}",
            "price_minor": 19900,
            "currency": "EUR",
            "billing_period": period,
            "booking_credit": booking,
            "printing_credit": printing,
        }
        return (await self.request("POST", "/v1/plans", 201, json=body))[1]
