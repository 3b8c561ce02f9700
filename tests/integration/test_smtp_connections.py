"""Persistent SMTP connections, against the real aiosmtpd server: one connection carries many emails, a dropped
or closing connection is replaced without losing or doubling an email, and the service keeps its connection
from one delivery to the next."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from services.notifications.mail import PermanentFailure, SmtpSender, TemporaryFailure, compose
from tests.integration.test_notifications import send, welcome_command
from tests.support.wait import wait_for


def message(to: str):
    return compose(
        delivery_id=uuid.uuid4(),
        mail_from="Coworking <no-reply@coworking.invalid>",
        to_email=to,
        to_name="",
        subject="Hello",
        text="Hello Zoë\n",
        html="<p>Hello Zoë</p>\n",
        now=datetime.now(UTC),
    )


async def test_one_connection_carries_many_emails(smtp):
    sender = SmtpSender("127.0.0.1", smtp.port, timeout_s=5)
    try:
        for i in range(5):
            await sender.send(message(f"reuse{i}@example.com"))
    finally:
        await sender.close()
    assert len(smtp.messages) == 5
    assert smtp.connections_used() == 1
    assert sender.connections_opened == 1
    # the server's extensions are known from the first email on: every one goes 8bit (BODY=8BITMIME), as written
    for m in smtp.messages:
        plain = m.get_body(preferencelist=("plain",))
        assert (plain["Content-Transfer-Encoding"], plain.get_content().rstrip()) == ("8bit", "Hello Zoë")


async def test_concurrent_emails_use_at_most_max_connections(smtp):
    sender = SmtpSender("127.0.0.1", smtp.port, timeout_s=5, max_connections=3)
    try:
        await asyncio.gather(*(sender.send(message(f"many{i}@example.com")) for i in range(30)))
    finally:
        await sender.close()
    assert sorted(str(m["To"]) for m in smtp.messages) == sorted(f"many{i}@example.com" for i in range(30))
    assert sender.connections_opened <= 3
    assert smtp.connections_used() <= 3


async def test_a_connection_the_server_dropped_is_reopened_without_losing_or_doubling_an_email(smtp):
    smtp.behaviour.hang_up_after_each_message = True
    sender = SmtpSender("127.0.0.1", smtp.port, timeout_s=5)
    try:
        for i in range(4):
            await sender.send(message(f"dropped{i}@example.com"))
    finally:
        await sender.close()
    assert [str(m["To"]) for m in smtp.messages] == [f"dropped{i}@example.com" for i in range(4)]
    assert smtp.connections_used() == 4


async def test_a_reused_connection_refused_at_mail_is_replaced_and_the_email_sent_once(smtp):
    sender = SmtpSender("127.0.0.1", smtp.port, timeout_s=5)
    try:
        await sender.send(message("first@example.com"))
        smtp.behaviour.closing_at_mail = 1  # the kept connection answers 421 to the next MAIL and hangs up
        await sender.send(message("second@example.com"))
    finally:
        await sender.close()
    assert smtp.closed_at_mail == 1
    assert [str(m["To"]) for m in smtp.messages] == ["first@example.com", "second@example.com"]
    assert sender.connections_opened == 2


async def test_a_fresh_connection_refused_at_mail_is_a_temporary_failure(smtp):
    smtp.behaviour.closing_at_mail = 1
    sender = SmtpSender("127.0.0.1", smtp.port, timeout_s=5)
    try:
        with pytest.raises(TemporaryFailure):
            await sender.send(message("refused@example.com"))
        await sender.send(message("refused@example.com"))  # the next attempt goes through
    finally:
        await sender.close()
    assert [str(m["To"]) for m in smtp.messages] == ["refused@example.com"]


async def test_the_connection_survives_refusals_and_temporary_failures(smtp):
    smtp.behaviour.reject_recipients = {"nobody@example.com"}
    sender = SmtpSender("127.0.0.1", smtp.port, timeout_s=5)
    try:
        with pytest.raises(PermanentFailure, match="550"):
            await sender.send(message("nobody@example.com"))
        smtp.behaviour.temporary_failures = 1
        with pytest.raises(TemporaryFailure, match="451"):
            await sender.send(message("later@example.com"))
        await sender.send(message("later@example.com"))
        await sender.send(message("after@example.com"))
    finally:
        await sender.close()
    assert [str(m["To"]) for m in smtp.messages] == ["later@example.com", "after@example.com"]
    assert sender.connections_opened == 1


async def test_a_connection_is_replaced_after_its_message_limit(smtp):
    sender = SmtpSender("127.0.0.1", smtp.port, timeout_s=5, max_messages_per_connection=2)
    try:
        for i in range(5):
            await sender.send(message(f"limit{i}@example.com"))
    finally:
        await sender.close()
    assert len(smtp.messages) == 5
    assert smtp.connections_used() == 3


async def test_the_service_keeps_its_smtp_connection_between_deliveries(system_factory, amqp, prefix, smtp, seal_key):
    system = system_factory(smtp_port=smtp.port)
    await system.start("notifications")
    for i in range(3):
        await send(amqp, prefix, welcome_command(f"kept{i}@example.com", seal_key))
        await wait_for(lambda i=i: smtp.to(f"kept{i}@example.com"), what=f"email {i}")
    assert len(smtp.messages) == 3
    assert smtp.connections_used() == 1
    rows = await system.runtime("notifications").db.fetch("SELECT status, attempts FROM deliveries")
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 1)] * 3
