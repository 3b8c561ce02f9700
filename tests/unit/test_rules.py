"""Pure rules: no database, no broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from services.accounts import security
from services.accounts.handlers import set_password_url
from services.customers.models import CustomerCreate
from services.notifications.mail import Renderer, build_message
from shared.events import REGISTRY, CustomerCreatedV1, Envelope, UnknownMessage, lookup, make_envelope
from shared.http import decode_cursor, encode_cursor, validation_problem
from shared.sealing import SealError, load_key, new_key, seal, unseal
from shared.topology import QUEUES, Topology


def test_sealed_data_opens_only_with_its_key_and_detects_tampering():
    key = load_key(new_key())
    sealed = seal(key, {"set_password_url": "https://x/activate#token=t"})
    assert "token" not in sealed
    assert unseal(key, sealed) == {"set_password_url": "https://x/activate#token=t"}
    with pytest.raises(SealError):
        unseal(load_key(new_key()), sealed)
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SealError):
        unseal(key, tampered)
    with pytest.raises(SealError):
        load_key("too-short")


def test_password_policy_names_each_problem():
    assert security.password_problems("x" * 12, 12) == []
    assert security.password_problems("short", 12) == ["must be at least 12 characters"]
    assert "must not be blank" in security.password_problems(" " * 12, 12)
    assert security.password_problems("x" * 2000, 12) == ["must be at most 1024 characters"]


def test_passwords_are_hashed_with_argon2id_and_verified():
    h = security.hash_password("correct horse battery staple")
    assert h.startswith("$argon2id$")
    assert security.verify_password(h, "correct horse battery staple")
    assert not security.verify_password(h, "wrong")
    assert not security.verify_password("not-a-hash", "anything")


def test_set_password_tokens_are_random_and_only_their_hash_is_kept():
    tokens = {security.new_token() for _ in range(100)}
    assert len(tokens) == 100
    token = tokens.pop()
    assert len(token) >= 43  # 32 bytes, base64url
    assert security.token_hash(token) == security.token_hash(token)
    assert token.encode() not in security.token_hash(token)


def test_the_link_carries_the_token_in_the_fragment_so_servers_never_log_it():
    assert set_password_url("https://portal.example/", "abc") == "https://portal.example/activate#token=abc"


def test_access_tokens_verify_with_the_published_key_and_not_after_expiry(tmp_path):
    import jwt

    path = tmp_path / "k.pem"
    path.write_bytes(security.generate_private_key_pem())
    key = security.SigningKey.from_pem_file(path)
    jwk = security.public_jwk(key.private_key.public_key())
    assert jwk["kid"] == key.kid and jwk["alg"] == "ES256" and "d" not in jwk
    cid = uuid.uuid4()
    token = security.issue_access_token(
        key,
        account_id=uuid.uuid4(),
        customer_id=cid,
        role="member",
        standing="active",
        issuer="i",
        audience="a",
        ttl_s=60,
    )
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="a", issuer="i")
    assert claims["customer_id"] == str(cid) and claims["role"] == "member"
    old = security.issue_access_token(
        key,
        account_id=uuid.uuid4(),
        customer_id=None,
        role="admin",
        standing="active",
        issuer="i",
        audience="a",
        ttl_s=60,
        now=datetime(2020, 1, 1, tzinfo=UTC).timestamp(),
    )
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(old, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="a", issuer="i")


def test_routing_keys_are_contract_strings_and_unknown_versions_are_refused():
    assert CustomerCreatedV1.routing_key() == "customers.customer.created.v1"
    assert lookup("customers.customer.created", 1) is CustomerCreatedV1
    with pytest.raises(UnknownMessage):
        lookup("customers.customer.created", 2)
    assert all(key.rsplit(".", 1)[1].startswith("v") for key in REGISTRY)


def test_the_envelope_round_trips_and_ignores_unknown_fields():
    cid = uuid.uuid4()
    env = make_envelope(
        CustomerCreatedV1(
            customer_id=cid, full_name="A", email="a@example.com", kind="contact", standing="active", send_welcome=True
        ),
        subject=cid,
        sequence=1,
        producer="customers",
        correlation_id="c",
    )
    data = orjson.loads(orjson.dumps(env.model_dump(mode="json")))
    data["added_later"] = "ignored"
    data["payload"]["also_added_later"] = 1
    again = Envelope.model_validate(data)
    assert again.routing_key == "customers.customer.created.v1"
    assert CustomerCreatedV1.model_validate(again.payload).customer_id == cid


def test_every_consumer_queue_follows_the_naming_rule_and_gets_retry_and_dead_letter_queues():
    t = Topology("p.", (100, 1000))
    names = t.all_queue_names()
    for spec in QUEUES:
        service, handler = spec.name.split(".")
        assert service in {"customers", "accounts", "visitors", "notifications"} and handler
        assert f"p.{spec.name}.dlq" in names
        assert f"p.{spec.name}.retry.100ms" in names and f"p.{spec.name}.retry.1000ms" in names
        assert all(key in REGISTRY for key in spec.bindings)


def test_validation_errors_name_every_bad_field():
    with pytest.raises(ValidationError) as info:
        CustomerCreate.model_validate({"email": "nope", "extra": 1})
    problem = validation_problem(info.value)
    fields = {e["field"]: e["message"] for e in problem.errors}
    assert set(fields) == {"full_name", "email", "extra"}
    assert fields["extra"] == "unknown field"
    assert problem.status == 422


def test_customer_cursor_round_trips():
    when, cid = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(when, cid)) == (when, cid)


def test_the_welcome_email_greets_by_name_carries_the_link_and_escapes_html():
    subject, text, html = Renderer().render(
        "welcome",
        {
            "space_name": "Hive",
            "full_name": "<b>Eve</b>",
            "set_password_url": "https://p/activate#token=T",
            "expires_at": "2030-01-01T00:00:00+00:00",
        },
    )
    assert "<b>Eve</b>" in subject and "Hive" in subject
    assert "Hello <b>Eve</b>," in text and "https://p/activate#token=T" in text
    assert "&lt;b&gt;Eve&lt;/b&gt;" in html and "<b>Eve</b>" not in html
    assert "01 January 2030" in text
    msg = build_message(
        delivery_id=uuid.uuid4(),
        mail_from="a@b.c",
        to_email="eve@example.com",
        to_name="Eve",
        subject=subject,
        text=text,
        html=html,
        now=datetime.now(UTC),
    )
    assert msg.get_body(("html",)) is not None and msg.get_body(("plain",)) is not None
