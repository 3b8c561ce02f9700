"""The customers API as an operator or another service calls it: validation, errors, idempotency, listing."""

from __future__ import annotations

import asyncio
import base64
import uuid

import aiohttp
import asyncpg
import pytest

from tests.support.tokens import KeyRing


@pytest.fixture
async def customers(system_factory, keys: KeyRing):
    system = system_factory()
    await system.start("customers")
    async with aiohttp.ClientSession(
        base_url=system.urls["customers"], headers={"Authorization": f"Bearer {keys.token('admin')}"}
    ) as session:
        session.system = system  # type: ignore[attr-defined]
        yield session


async def outbox_rows(system) -> int:
    return await system.runtime("customers").db.fetchval("SELECT count(*) FROM outbox")


async def customer_rows(system) -> int:
    return await system.runtime("customers").db.fetchval("SELECT count(*) FROM customers")


async def test_creating_a_customer_returns_201_with_location_and_a_contact_in_good_standing(customers):
    resp = await customers.post("/v1/customers", json={"full_name": "Ada Lovelace", "email": "ada@example.com"})
    assert resp.status == 201
    body = await resp.json()
    assert resp.headers["Location"] == f"/v1/customers/{body['id']}"
    assert (body["kind"], body["standing"], body["full_name"]) == ("contact", "active", "Ada Lovelace")
    got = await customers.get(resp.headers["Location"])
    assert got.status == 200
    assert (await got.json())["email"] == "ada@example.com"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "a@example.com"}, "full_name"),
        ({"full_name": "A"}, "email"),
        ({"full_name": "A", "email": "not-an-email"}, "email"),
        ({"full_name": "   ", "email": "a@example.com"}, "full_name"),
        ({"full_name": "A", "email": "a@example.com", "role": "admin"}, "role"),
        ({"full_name": "A", "email": "a@example.com", "send_welcome": "yes"}, "send_welcome"),
        ({"full_name": "A", "email": "a@example.com", "phone": "call me"}, "phone"),
        ({"full_name": "Ada\u0000Lovelace", "email": "a@example.com"}, "full_name"),
        ({"full_name": "Ada\nBcc: x@example.com", "email": "a@example.com"}, "full_name"),
        ({"full_name": "Ada\u2028Lovelace", "email": "a@example.com"}, "full_name"),
        ({"full_name": "A", "email": "a@example.com", "company_name": "Acme\u0000"}, "company_name"),
    ],
)
async def test_invalid_fields_get_422_problem_naming_the_field_and_nothing_is_written(customers, body, field):
    resp = await customers.post("/v1/customers", json=body)
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert field in [e["field"] for e in problem["errors"]]
    assert problem["status"] == 422
    assert await customer_rows(customers.system) == 0
    assert await outbox_rows(customers.system) == 0


async def test_malformed_json_non_object_wrong_media_type_and_oversized_bodies_are_4xx_problems(customers):
    headers = {"Content-Type": "application/json"}
    bad = await customers.post("/v1/customers", data=b'{"full_name": ', headers=headers)
    assert (bad.status, bad.content_type) == (400, "application/problem+json")
    arr = await customers.post("/v1/customers", data=b"[1, 2]", headers=headers)
    assert arr.status == 422
    text = await customers.post("/v1/customers", data=b"full_name=A", headers={"Content-Type": "text/plain"})
    assert text.status == 415
    huge = await customers.post("/v1/customers", json={"full_name": "A" * 100_000, "email": "big@example.com"})
    assert (huge.status, huge.content_type) == (413, "application/problem+json")
    assert await customer_rows(customers.system) == 0
    long_url = await customers.get("/v1/customers", params={"q": "x" * 9000})
    assert (long_url.status, long_url.content_type) == (414, "application/problem+json")


async def test_duplicate_email_in_any_case_is_409_and_only_the_first_customer_exists(customers):
    first = await customers.post("/v1/customers", json={"full_name": "A", "email": "Same@Example.com"})
    assert first.status == 201
    second = await customers.post("/v1/customers", json={"full_name": "B", "email": "same@example.COM"})
    assert second.status == 409
    problem = await second.json()
    assert problem["errors"][0]["field"] == "email"
    assert await customer_rows(customers.system) == 1
    assert await outbox_rows(customers.system) == 1


async def test_idempotency_key_replays_the_first_response_even_for_concurrent_retries(customers):
    body = {"full_name": "Retry Me", "email": "retry@example.com", "send_welcome": True}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    responses = await asyncio.gather(*(customers.post("/v1/customers", json=body, headers=key) for _ in range(5)))
    assert {r.status for r in responses} == {201}
    ids = {(await r.json())["id"] for r in responses}
    assert len(ids) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 4
    assert await customer_rows(customers.system) == 1
    assert await outbox_rows(customers.system) == 1
    reused = await customers.post("/v1/customers", json={**body, "full_name": "Someone Else"}, headers=key)
    assert reused.status == 422


async def test_customers_endpoints_need_an_operator_token(customers, keys: KeyRing):
    url = "/v1/customers"
    body = {"full_name": "A", "email": "a@example.com"}
    anonymous = await customers.post(url, json=body, headers={"Authorization": ""})
    assert anonymous.status == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    member = await customers.post(
        url, json=body, headers={"Authorization": f"Bearer {keys.token('member', uuid.uuid4())}"}
    )
    assert member.status == 403
    forged = keys.token("admin")[:-4] + "AAAA"
    assert (await customers.get(url, headers={"Authorization": f"Bearer {forged}"})).status == 401
    expired = keys.token("admin", ttl_s=-120)
    assert (await customers.get(url, headers={"Authorization": f"Bearer {expired}"})).status == 401
    assert await customer_rows(customers.system) == 0


async def test_listing_pages_with_a_cursor_and_filters_by_email_kind_and_standing(customers):
    for i in range(7):
        r = await customers.post("/v1/customers", json={"full_name": f"C{i}", "email": f"c{i}@example.com"})
        assert r.status == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
        page = await (await customers.get("/v1/customers", params=params)).json()
        seen += [c["full_name"] for c in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"C{i}" for i in range(7)]
    assert pages == 3
    by_email = await (await customers.get("/v1/customers", params={"email": "C3@EXAMPLE.com"})).json()
    assert [c["full_name"] for c in by_email["items"]] == ["C3"]
    members = await (await customers.get("/v1/customers", params={"kind": "member"})).json()
    assert members["items"] == []
    active = await (await customers.get("/v1/customers", params={"standing": "active", "limit": "50"})).json()
    assert len(active["items"]) == 7
    bad = await customers.get("/v1/customers", params={"kind": "visitor"})
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["field"] == "kind"
    assert (await customers.get("/v1/customers", params={"cursor": "nonsense!"})).status == 400
    for raw in ("0001-01-01T00:00:00+05:00|" + str(uuid.uuid4()), "9999-12-31T23:59:59-05:00|" + str(uuid.uuid4())):
        edge = base64.urlsafe_b64encode(raw.encode()).decode()
        assert (await customers.get("/v1/customers", params={"cursor": edge})).status == 400
    assert (await customers.get("/v1/customers", params={"email": "a\u0000@example.com"})).status == 422


async def test_unknown_customer_is_404_problem(customers):
    missing = await customers.get(f"/v1/customers/{uuid.uuid4()}")
    assert (missing.status, missing.content_type) == (404, "application/problem+json")
    assert (await customers.get("/v1/customers/not-a-uuid")).status == 404


async def test_request_id_is_returned_and_becomes_the_events_correlation_id(customers):
    resp = await customers.post(
        "/v1/customers",
        json={"full_name": "Traced", "email": "traced@example.com"},
        headers={"X-Request-ID": "req-12345"},
    )
    assert resp.headers["X-Request-ID"] == "req-12345"
    conn = await asyncpg.connect(customers.system.databases["customers"])
    try:
        assert await conn.fetchval("SELECT correlation_id FROM outbox") == "req-12345"
    finally:
        await conn.close()


async def test_header_values_outside_visible_ascii_are_refused_or_replaced(customers):
    bad_key = await customers.post(
        "/v1/customers", json={"full_name": "A", "email": "a@example.com"}, headers={"Idempotency-Key": "clé ü"}
    )
    assert bad_key.status == 400
    assert (await bad_key.json())["errors"][0]["field"] == "Idempotency-Key"
    odd_id = await customers.post(
        "/v1/customers", json={"full_name": "A", "email": "a@example.com"}, headers={"X-Request-ID": "has space"}
    )
    assert odd_id.status == 201
    assert odd_id.headers["X-Request-ID"] != "has space"
    uuid.UUID(odd_id.headers["X-Request-ID"])


async def test_the_service_serves_its_openapi_document_and_a_docs_page_without_a_token(customers):
    spec = await customers.get("/openapi.json", headers={"Authorization": ""})
    assert spec.status == 200
    doc = await spec.json()
    assert doc["openapi"] == "3.1.0"
    assert doc["paths"]["/v1/customers"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CustomerCreate"
    }
    page = await customers.get("/docs", headers={"Authorization": ""})
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert "/v1/customers/{id}/suspension" in html and 'id="schema-CustomerCreate"' in html


async def test_a_path_no_route_has_is_a_404_problem_and_a_method_a_route_lacks_a_405_naming_the_allowed_ones(customers):
    nowhere = await customers.get("/v1/nowhere", headers={"X-Request-ID": "probe-404"})
    assert (nowhere.status, nowhere.content_type) == (404, "application/problem+json")
    assert nowhere.headers["X-Request-ID"] == "probe-404"
    wrong = await customers.delete("/v1/customers")
    assert (wrong.status, wrong.content_type) == (405, "application/problem+json")
    assert set(wrong.headers["Allow"].split(",")) >= {"GET", "POST"}
    assert (await wrong.json())["detail"] == "DELETE is not allowed here"
    created = await (await customers.post("/v1/customers", json={"full_name": "H", "email": "h@example.com"})).json()
    head = await customers.head(f"/v1/customers/{created['id']}")
    assert head.status == 200  # a GET route answers HEAD too
    no_token = await customers.get(f"/v1/customers/{created['id']}", headers={"Authorization": ""})
    assert (no_token.status, no_token.content_type) == (401, "application/problem+json")
