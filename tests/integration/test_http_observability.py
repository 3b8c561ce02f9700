"""What an operator's dashboards read about HTTP traffic: per route template (never the path: no ids or emails in
label values) and status, a request counter and a latency histogram on ``/metrics``, and one access log line a
request carrying its request id (past a burst a second of successful ones, a line counting those not logged)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.logs import JsonLines
from tests.support.wait import wait_for

ROUTE = "/v1/customers/{id}"


async def scrape(http: aiohttp.ClientSession, base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def requests(metrics, status: str) -> float:
    return metrics.get(("http_requests_total", (("method", "GET"), ("route", ROUTE), ("status", status))), 0.0)


def timed(metrics) -> float:
    return metrics.get(("http_request_duration_seconds_count", (("method", "GET"), ("route", ROUTE))), 0.0)


@contextlib.asynccontextmanager
async def customers_with_one(system_factory, keys, email: str, **system) -> AsyncIterator[tuple[Any, str, dict]]:
    """The customers service of a system made with ``system``, an operator's HTTP session and one customer."""
    made = system_factory(**system)
    await made.start("customers")
    base = made.urls["customers"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:
        r = await http.post(f"{base}/v1/customers", json={"full_name": "Ada", "email": email})
        assert r.status == 201
        customer = await r.json()  # the whole body read: the connection is free again
        yield http, base, customer


async def test_requests_are_counted_timed_and_logged_per_route_and_status(system_factory, keys):
    async with customers_with_one(system_factory, keys, "ada-m@example.com") as (http, base, customer):
        before = await scrape(http, base)
        with JsonLines.of("coworking.access") as lines:
            for _ in range(3):
                async with http.get(f"{base}/v1/customers/{customer['id']}") as r:
                    assert r.status == 200
            async with http.get(f"{base}/v1/customers/{uuid.uuid4()}", headers={"X-Request-ID": "probe-1"}) as r:
                assert r.status == 404
        after = await scrape(http, base)
    assert requests(after, "200") - requests(before, "200") == 3
    assert requests(after, "404") - requests(before, "404") == 1
    assert timed(after) - timed(before) == 4
    assert not any(customer["id"] in str(labels) for _, labels in after), "an id in a label value"
    mine = [line for line in lines.lines if line.get("route") == ROUTE]
    assert [line["status"] for line in mine] == [200, 200, 200, 404]
    assert mine[-1]["request_id"] == "probe-1" and all(line["method"] == "GET" for line in mine)


async def test_past_the_burst_successful_requests_are_counted_in_one_line_errors_still_logged(system_factory, keys):
    burst = {"access_log_burst": 2}
    async with customers_with_one(system_factory, keys, "ada-b@example.com", **burst) as (http, base, customer):
        with JsonLines.of("coworking.access") as lines:
            for _ in range(5):
                async with http.get(f"{base}/v1/customers/{customer['id']}") as r:
                    assert r.status == 200
            async with http.get(f"{base}/v1/customers/{uuid.uuid4()}") as r:
                assert r.status == 404

            def accounted() -> int:  # reads with a line of their own, and reads counted in a line
                mine = [line for line in lines.lines if line.get("route") == ROUTE]
                logged = sum(1 for line in mine if line["msg"] == "request" and line["status"] == 200)
                return logged + sum(line["count"] for line in mine if line["msg"] == "requests not logged")

            await wait_for(lambda: accounted() == 5, timeout=5, what="every read logged or counted")
    mine = [line for line in lines.lines if line.get("route") == ROUTE]
    assert [line["status"] for line in mine if line["msg"] == "request" and line["status"] != 200] == [404]
    counts = [line for line in mine if line["msg"] == "requests not logged"]
    # five reads in one window of a second (two in two, if the machine stalled past one): 2 lines, 3 counted
    assert counts and all(line["method"] == "GET" and 0 < line["ms_max"] < 1000 for line in counts)
    assert "request_id" not in counts[0]  # about no request in particular
    assert sum(1 for line in mine if line["msg"] == "request" and line["status"] == 200) >= 2
