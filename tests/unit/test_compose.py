"""The notifications service writes each email straight to bytes (``compose``): what a mail client reads from it is
what the standard library's ``EmailMessage`` (``build_message``) would have made of the same parts."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime

import pytest

from services.notifications.mail import Renderer, build_message, compose

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
TEXT = "Hello Zoë,\n\nSet your password: https://p/activate#token=T\n\n-- \nHive\n"
HTML = '<p>Hello Zo&euml;,</p>\r\n<p><a href="https://p/activate#token=T">set it</a></p>\n'


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def view(msg) -> dict:
    return {
        "to": [(a.display_name, a.addr_spec) for a in msg["To"].addresses],
        "from": str(msg["From"]),
        "subject": str(msg["Subject"]),
        "date": msg["Date"].datetime,
        "message_id": msg["Message-ID"],
        "delivery_id": msg["X-Delivery-ID"],
        "type": msg.get_content_type(),
        "plain": msg.get_body(("plain",)).get_content().replace("\r\n", "\n"),
        "html": msg.get_body(("html",)).get_content().replace("\r\n", "\n"),
        "cte": [p["Content-Transfer-Encoding"] for p in msg.iter_parts()],
    }


@pytest.mark.parametrize(
    ("to_email", "to_name", "subject"),
    [
        ("eve@example.com", "Eve", "Set your password"),
        ("grace@example.com", "Grace <Hopper>", "Welcome to Hive, Grace <Hopper>: set your password"),
        ("zoe@example.com", 'Zoë "Z", Ünï', "Bienvenue Zoë, choisissez votre mot de passe"),
        ("q@example.com", 'Quote "me" \\ back', "x" * 200),
        ("long@example.com", " ".join(["Ünïcödé"] * 20), " ".join(["Ünïcödé"] * 30)),
        ("anon@example.com", "", "No name"),
        ("josé@exämple.com", "José", "Hola José"),
    ],
)
def test_compose_reads_as_build_message(to_email, to_name, subject):
    delivery_id = uuid.uuid4()
    kw = dict(
        delivery_id=delivery_id,
        mail_from="Coworking <no-reply@coworking.invalid>",
        to_email=to_email,
        to_name=to_name,
        subject=subject,
        text=TEXT,
        html=HTML,
        now=NOW,
    )
    out = compose(**kw)
    policy = email.policy.SMTPUTF8 if not to_email.isascii() else email.policy.SMTP
    assert view(parsed(out.data)) == view(parsed(build_message(**kw).as_bytes(policy=policy)))
    assert (out.sender, out.recipient, out.utf8) == ("no-reply@coworking.invalid", to_email, not to_email.isascii())
    assert max(len(line) for line in out.data.split(b"\r\n")) <= 998
    assert b"\n" not in out.data.replace(b"\r\n", b"")  # CRLF only, as on the wire


@pytest.mark.parametrize("field", ["to_name", "subject", "to_email"])
def test_compose_refuses_header_injection(field):
    kw = dict(
        delivery_id=uuid.uuid4(),
        mail_from="a@b.c",
        to_email="eve@example.com",
        to_name="Eve",
        subject="Hi",
        text="x",
        html="y",
        now=NOW,
    )
    kw[field] = kw[field] + "\r\nBcc: victim@example.com"
    with pytest.raises(ValueError):
        compose(**kw)


def test_a_rendered_welcome_email_composes():
    subject, text, html = Renderer().render(
        "welcome",
        {
            "space_name": "Hive",
            "full_name": "Zoë",
            "set_password_url": "https://p/activate#token=T",
            "expires_at": "2030-01-01T00:00:00+00:00",
        },
    )
    msg = parsed(
        compose(
            **{
                **dict(delivery_id=uuid.uuid4(), mail_from="a@b.c", to_email="z@example.com"),
                "to_name": "Zoë",
                "subject": subject,
                "text": text,
                "html": html,
                "now": NOW,
            }
        ).data
    )
    assert "https://p/activate#token=T" in msg.get_body(("plain",)).get_content()
    assert str(msg["Subject"]) == subject
