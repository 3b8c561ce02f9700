"""Email delivery against a real SMTP server: templates, temporary failures retried with backoff, permanent
rejections recorded and announced, the .eml file backend, and what operators see in /v1/deliveries."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid

import aiohttp
import asyncpg

from shared.events import SendEmailV1, make_envelope
from shared.sealing import load_key, seal
from tests.integration.test_messaging import body
from tests.support.bus import EventRecorder, publish_raw
from tests.support.wait import wait_for


def welcome_command(to: str, seal_key: str, link: str = "http://portal.test/activate#token=abc") -> SendEmailV1:
    return SendEmailV1(
        request_key=f"welcome:{uuid.uuid4()}",
        template="welcome",
        to_email=to,
        to_name="Grace <Hopper>",
        customer_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        context={"full_name": "Grace <Hopper>", "expires_at": "2030-01-01T12:00:00+00:00"},
        sealed_context=seal(load_key(seal_key), {"set_password_url": link}),
    )


async def send(amqp, prefix: str, command: SendEmailV1) -> None:
    env = make_envelope(command, subject=command.account_id, sequence=1, producer="accounts", correlation_id="c-1")
    await publish_raw(amqp, f"{prefix}commands", env.routing_key, body(env))


async def outcome_batches(system) -> tuple[float, float]:
    """(outcomes, writes) so far: the sum and count of notifications' email_outcome_batch_rows histogram."""
    async with aiohttp.ClientSession() as http:
        metrics = await (await http.get(f"{system.urls['notifications']}/metrics")).text()
    values = dict(line.split(" ") for line in metrics.splitlines() if line.startswith("email_outcome_batch_rows_"))
    return float(values.get("email_outcome_batch_rows_sum", 0)), float(values.get("email_outcome_batch_rows_count", 0))


def text_and_html(message) -> tuple[str, str]:
    return (
        message.get_body(preferencelist=("plain",)).get_content(),
        message.get_body(preferencelist=("html",)).get_content(),
    )


async def test_welcome_email_is_rendered_from_templates_in_text_and_html(system_factory, amqp, prefix, smtp, seal_key):
    system = system_factory(smtp_port=smtp.port)
    await system.start("notifications")
    await send(amqp, prefix, welcome_command("grace@example.com", seal_key))
    [message] = await wait_for(lambda: smtp.to("grace@example.com"), what="the email")
    text, html = text_and_html(message)
    assert "Hello Grace <Hopper>," in text
    assert "http://portal.test/activate#token=abc" in text
    assert "Hello Grace &lt;Hopper&gt;," in html  # names are escaped in HTML
    assert 'href="http://portal.test/activate#token=abc"' in html
    assert "set your password" in message["Subject"].lower()
    db = system.runtime("notifications").db

    async def recorded() -> asyncpg.Record | None:  # the outcome is written once the server accepted the email
        row = await db.fetchrow("SELECT status, sealed_context, attempts FROM deliveries")
        return row if row is not None and row["status"] != "pending" else None

    row = await wait_for(recorded, what="the delivery's outcome")
    assert (row["status"], row["sealed_context"], row["attempts"]) == ("sent", None, 1)


async def test_temporary_smtp_failures_are_retried_with_backoff_until_sent(
    system_factory, amqp, prefix, smtp, seal_key
):
    smtp.behaviour.temporary_failures = 2
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(smtp_port=smtp.port, send_retry_delays_s=[0.2, 0.2, 0.2])
    await system.start("notifications")
    await send(amqp, prefix, welcome_command("later@example.com", seal_key))
    await wait_for(lambda: smtp.to("later@example.com"), what="the email after retries")
    assert smtp.temporary_rejections == 2
    [sent] = await wait_for(lambda: recorder.of_type("notifications.email.sent.v1"), what="email.sent")
    assert sent["payload"]["attempts"] == 3
    assert sent["correlation_id"] == "c-1"
    assert len(smtp.to("later@example.com")) == 1


async def test_a_permanently_rejected_address_is_recorded_failed_and_announced(
    system_factory, amqp, prefix, smtp, seal_key, keys
):
    smtp.behaviour.reject_recipients = {"nobody@example.com"}
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(smtp_port=smtp.port)
    await system.start("notifications")
    command = welcome_command("nobody@example.com", seal_key)
    await send(amqp, prefix, command)
    [failed] = await wait_for(lambda: recorder.of_type("notifications.email.failed.v1"), what="email.failed")
    assert failed["payload"]["permanent"] is True
    assert "550" in failed["payload"]["reason"]
    assert str(command.customer_id) == failed["payload"]["customer_id"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {keys.token()}"}) as http:
        resp = await http.get(
            f"{system.urls['notifications']}/v1/deliveries", params={"customer_id": str(command.customer_id)}
        )
        [delivery] = (await resp.json())["items"]
    assert delivery["status"] == "failed"
    assert "550" in delivery["last_error"]
    assert "sealed_context" not in delivery
    assert smtp.to("nobody@example.com") == []


async def test_temporary_failures_that_never_clear_end_as_a_failed_delivery(
    system_factory, amqp, prefix, smtp, seal_key
):
    smtp.behaviour.temporary_failures = 100
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(smtp_port=smtp.port, send_retry_delays_s=[0.1, 0.1])
    await system.start("notifications")
    await send(amqp, prefix, welcome_command("never@example.com", seal_key))
    [failed] = await wait_for(lambda: recorder.of_type("notifications.email.failed.v1"), what="email.failed")
    assert failed["payload"]["permanent"] is False
    assert failed["payload"]["attempts"] == 3
    assert smtp.temporary_rejections == 3


async def test_emails_that_finish_together_are_recorded_together_each_with_its_own_outcome_and_event(
    system_factory, amqp, prefix, smtp, seal_key
):
    """The outcomes of emails that finish while another's is being written go in the next write, all in one
    statement: each delivery still ends with its own status and attempts, and one event, once."""
    members = [f"member{i}@example.com" for i in range(40)]
    bounces = ["bounce1@example.com", "bounce2@example.com"]
    smtp.behaviour.reject_recipients = set(bounces)
    smtp.behaviour.temporary_failures = 3
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(smtp_port=smtp.port, send_retry_delays_s=[0.2, 0.2, 0.2, 0.2])
    await system.start("notifications")
    before = await outcome_batches(system)  # the metrics are the process's: other tests' systems count too
    await asyncio.gather(*(send(amqp, prefix, welcome_command(to, seal_key)) for to in members + bounces))

    def settled() -> tuple[list[dict], list[dict]] | None:
        sent = recorder.of_type("notifications.email.sent.v1")
        failed = recorder.of_type("notifications.email.failed.v1")
        return (sent, failed) if len(sent) + len(failed) >= len(members) + len(bounces) else None

    sent, failed = await wait_for(settled, timeout=20, what="every delivery's event")
    assert all(len(smtp.to(to)) == 1 for to in members)
    assert len({e["payload"]["delivery_id"] for e in sent}) == len(sent) == len(members)
    assert sum(e["payload"]["attempts"] for e in sent) == len(members) + 3  # three tried once more
    assert sorted(e["payload"]["permanent"] for e in failed) == [True, True]
    db = system.runtime("notifications").db
    rows = await db.fetch("SELECT to_email, status, attempts, sent_at, failed_at, last_error FROM deliveries")
    by_address = {r["to_email"]: r for r in rows}
    assert all(by_address[to]["status"] == "sent" and by_address[to]["sent_at"] for to in members)
    assert all(by_address[to]["last_error"] is None for to in members)  # the temporary failures' errors cleared
    assert all(by_address[to]["status"] == "failed" and "550" in by_address[to]["last_error"] for to in bounces)
    assert await db.fetchval("SELECT count(*) FROM outbox") == len(members) + len(bounces)
    after = await outcome_batches(system)
    # every attempt's outcome written (42 settled, 3 to try again), in fewer statements than outcomes
    outcomes, writes = after[0] - before[0], after[1] - before[1]
    assert outcomes == len(members) + len(bounces) + 3
    assert writes < outcomes


async def test_without_smtp_the_email_is_written_as_an_eml_file(system_factory, amqp, prefix, seal_key, mail_dir):
    system = system_factory(mail_dir=mail_dir)
    await system.start("notifications")
    await send(amqp, prefix, welcome_command("file@example.com", seal_key))
    [path] = await wait_for(lambda: list(mail_dir.glob("*.eml")), what="an .eml file")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert "file@example.com" in message["To"]
    assert "http://portal.test/activate#token=abc" in text_and_html(message)[0]


async def test_deliveries_need_an_operator_and_page_with_a_cursor(system_factory, keys, smtp, amqp, prefix, seal_key):
    system = system_factory(smtp_port=smtp.port)
    await system.start("notifications")
    for i in range(3):
        await send(amqp, prefix, welcome_command(f"p{i}@example.com", seal_key))
    url = f"{system.urls['notifications']}/v1/deliveries"
    async with aiohttp.ClientSession() as http:
        assert (await http.get(url)).status == 401
        member = {"Authorization": f"Bearer {keys.token('member', uuid.uuid4())}"}
        assert (await http.get(url, headers=member)).status == 403
        admin = {"Authorization": f"Bearer {keys.token()}"}

        async def all_sent() -> bool:
            page = await (await http.get(url, headers=admin, params={"status": "sent"})).json()
            return len(page["items"]) == 3

        await wait_for(all_sent, what="three sent deliveries")
        first = await (await http.get(url, headers=admin, params={"limit": "2"})).json()
        second = await (
            await http.get(url, headers=admin, params={"limit": "2", "cursor": first["next_cursor"]})
        ).json()
        assert len(first["items"]) == 2 and len(second["items"]) == 1 and second["next_cursor"] is None
        ids = {d["id"] for d in first["items"] + second["items"]}
        assert len(ids) == 3
        one = await http.get(f"{url}/{first['items'][0]['id']}", headers=admin)
        assert (await one.json())["to_email"].endswith("@example.com")


async def test_non_ascii_names_and_internationalised_addresses_are_delivered(
    system_factory, amqp, prefix, smtp, seal_key
):
    system = system_factory(smtp_port=smtp.port)
    await system.start("notifications")
    for to, name in (("zoe@example.com", 'Zoë "Z", Ünï'), ("josé@exämple.com", "José")):
        command = welcome_command(to, seal_key).model_copy(
            update={"to_name": name, "context": {"full_name": name, "expires_at": "2030-01-01T12:00:00+00:00"}}
        )
        await send(amqp, prefix, command)
    [zoe] = await wait_for(lambda: smtp.to("zoe@example.com"), what="the email to Zoë")
    assert zoe["To"].addresses[0].display_name == 'Zoë "Z", Ünï'
    assert 'Hello Zoë "Z", Ünï,' in text_and_html(zoe)[0]
    [jose] = await wait_for(lambda: smtp.to("josé@exämple.com"), what="the email to José")
    assert "http://portal.test/activate#token=abc" in text_and_html(jose)[0]


async def test_deliveries_a_dispatcher_claimed_but_is_not_sending_are_its_own_to_send_at_once(
    system_factory, amqp, prefix, smtp, seal_key
):
    """When the database connection drops while a claim's reply is on its way, the claimed deliveries carry the
    dispatcher's id and none of them is being sent: its next claim takes them instead of leaving them for the
    whole lease (60 s). Deliveries another replica holds still wait for their lease."""
    from services.notifications.app import DISPATCHER

    system = system_factory(smtp_port=smtp.port)
    await system.start("notifications")
    dispatcher = system.apps["notifications"][DISPATCHER]
    db = system.runtime("notifications").db
    for to, claimed_by in (("mine@example.com", dispatcher.dispatcher_id), ("theirs@example.com", uuid.uuid4())):
        cmd = welcome_command(to, seal_key)
        # as a lost claim leaves them: leased for an hour, claimed by a dispatcher
        await db.execute(
            """INSERT INTO deliveries (id, request_key, template, to_email, to_name, context, sealed_context,
                                       next_attempt_at, claimed_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, now() + interval '1 hour', $8)""",
            uuid.uuid4(),
            cmd.request_key,
            cmd.template,
            cmd.to_email,
            cmd.to_name,
            cmd.context,
            cmd.sealed_context,
            claimed_by,
        )
    dispatcher.wake()
    await wait_for(lambda: smtp.to("mine@example.com"), what="this dispatcher's delivery")
    # a later claim (it sends a new request) leaves the other replica's delivery to its lease too
    await send(amqp, prefix, welcome_command("later@example.com", seal_key))
    await wait_for(lambda: smtp.to("later@example.com"), what="a later claim's email")
    assert smtp.to("theirs@example.com") == []
    status = await db.fetchval("SELECT status FROM deliveries WHERE to_email = 'theirs@example.com'")
    assert status == "pending"
    assert len(smtp.to("mine@example.com")) == 1


async def test_an_outcome_write_costs_the_same_however_many_deliveries_wait(system_factory, seal_key):
    """Writing the outcomes of a few finished emails looks those deliveries up by id: it does not read the whole
    backlog of pending ones (which grows when the dispatcher falls behind, and would make it fall further), even
    with statistics from a quiet moment; and it still leaves a delivery already settled alone."""
    from services.notifications.dispatcher import _WRITE_OUTCOMES

    system = system_factory()
    await system.start("notifications")
    db = system.runtime("notifications").db
    cmd = welcome_command("someone@example.com", seal_key)
    columns = "id, request_key, template, to_email, to_name, context, next_attempt_at, claimed_by, status"
    insert = f"""INSERT INTO deliveries ({columns})
                 SELECT gen_random_uuid(), $1 || g, $2, $1 || g || '@example.com', 'Backlog', $3::jsonb,
                        now() + interval '1 hour', gen_random_uuid(), $4
                 FROM generate_series(1, $5) g"""
    await db.execute(insert, "settled", cmd.template, cmd.context, "sent", 5)
    await db.execute("ANALYZE deliveries")  # a quiet moment: nothing pending
    # then a backlog (leased to another replica, so this one's dispatcher leaves it alone)
    await db.execute(insert, "waiting", cmd.template, cmd.context, "pending", 3000)
    pending = [r["id"] for r in await db.fetch("SELECT id FROM deliveries WHERE status = 'pending' LIMIT 3")]
    settled = await db.fetchval("SELECT id FROM deliveries WHERE status = 'sent' LIMIT 1")
    ids = [*pending, settled]
    args = (ids, [1] * 4, ["sent"] * 4, ["subject"] * 4, [None] * 4, [0.0] * 4, [], [], [], [], [], [], [])
    async with db.acquire() as conn:
        tr = conn.transaction()
        await tr.start()
        try:
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")  # as a prepared statement runs
            written = {r["id"] for r in await conn.fetch(_WRITE_OUTCOMES, *args)}
            await conn.execute("UPDATE deliveries SET status = 'pending' WHERE id = ANY($1::uuid[])", pending)
            [plan] = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {_WRITE_OUTCOMES}", *args)
        finally:
            await tr.rollback()

    def nodes(node: dict) -> list[dict]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    scans = [n for n in nodes(plan["Plan"]) if n.get("Relation Name") == "deliveries" and "Scan" in n["Node Type"]]
    assert [n.get("Index Name") for n in scans] == ["deliveries_pkey"], scans
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in scans) <= 4  # not the 3,000 waiting
    assert written == set(pending)  # the one already sent is left as it was
