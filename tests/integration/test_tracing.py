"""One customer's welcome flow is one trace: the caller's traceparent reaches every message of the flow, through
three services' outboxes, and the services' log lines carry its trace id."""

from __future__ import annotations

import logging

import aiohttp

from tests.support.bus import EventRecorder
from tests.support.wait import wait_for

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def test_a_traceparent_on_the_request_follows_the_welcome_flow_across_the_services(
    system_factory, amqp, prefix, smtp, keys, caplog
):
    caplog.set_level(logging.INFO)
    recorder = await EventRecorder(amqp, prefix).start()
    system = system_factory(smtp_port=smtp.port)
    await system.start("customers", "accounts", "notifications")
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{system.urls['customers']}/v1/customers",
            json={"full_name": "Tracy Trace", "email": "tracy@example.com", "send_welcome": True},
            headers={"Authorization": f"Bearer {keys.token()}", "traceparent": TRACEPARENT},
        )
        assert resp.status == 201
    await wait_for(lambda: recorder.of_type("notifications.email.sent.v1"), what="email.sent")
    for key in ("customers.customer.created.v1", "accounts.account.created.v1", "notifications.email.sent.v1"):
        [message] = [
            m
            for m, e in zip(recorder.messages, recorder.events, strict=True)
            if f"{e['event_type']}.v{e['event_version']}" == key
        ]
        traceparent = (message.headers or {}).get("traceparent")
        assert traceparent and traceparent.split("-")[1] == TRACE_ID, (key, traceparent)
        # each hop is a new span in the same trace
        assert traceparent.split("-")[2] != "00f067aa0ba902b7", key
    from shared.logging import JsonFormatter

    formatter = JsonFormatter("test")
    traced = [formatter.format(r) for r in caplog.records if getattr(r, "trace_id", None) == TRACE_ID]
    assert any('"route":"/v1/customers"' in line for line in traced), "the request's log line has the trace id"
    assert any("email sent" in line for line in traced), "so has notifications' line, two hops later"
