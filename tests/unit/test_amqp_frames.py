"""Broker.publish writes the frames of a publish itself: they must be, byte for byte, what aiormq and pamqp send
for the same message (RabbitMQ and every consumer read them), whatever the body size, headers and ids."""

from __future__ import annotations

from typing import Any

import aiormq
import pytest
from aiormq.abc import ChannelFrame
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from shared.broker import publish_frames

MAX_CONTENT = 131072 - 8  # RabbitMQ's default frame_max, less a frame's overhead


def pamqp_frames(channel: int, exchange: str, routing_key: str, body: bytes, **kw: Any) -> bytes:
    properties = aiormq.spec.Basic.Properties(
        content_type="application/json",
        delivery_mode=2,
        priority=0,
        message_id=kw["message_id"],
        correlation_id=kw["correlation_id"],
        headers=kw["headers"],
    )
    frames: list[Any] = [
        commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
        ContentHeader(properties=properties, body_size=len(body)),
    ]
    max_content = kw["max_content"]
    frames += [ContentBody(body[i : i + max_content]) for i in range(0, len(body), max_content)]
    return ChannelFrame.marshall(channel_number=channel, frames=frames).payload


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60)
HEADERS = st.dictionaries(
    st.text(st.characters(codec="ascii"), min_size=1, max_size=20),
    st.one_of(st.text(max_size=80), st.integers(-(2**31), 2**31 - 1), st.booleans(), st.none()),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(
    channel=st.integers(1, 2047),
    exchange=st.from_regex(r"[a-zA-Z0-9_.:-]{0,127}", fullmatch=True),  # what AMQP allows (our topology's names)
    routing_key=NAMES,
    body=st.one_of(st.binary(max_size=2000), st.binary(min_size=9, max_size=40).map(lambda b: b * 9000)),
    message_id=st.uuids().map(str),
    correlation_id=st.one_of(st.none(), NAMES),
    headers=HEADERS,
    max_content=st.sampled_from([MAX_CONTENT, 4088, 100]),
)
def test_the_frames_are_those_pamqp_marshals(
    channel: int, exchange: str, routing_key: str, body: bytes, **kw: Any
) -> None:
    assert publish_frames(channel, exchange, routing_key, body, **kw) == pamqp_frames(
        channel, exchange, routing_key, body, **kw
    )


def test_a_routing_key_longer_than_an_amqp_short_string_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        publish_frames(1, "events", "k" * 256, b"{}", message_id="m", correlation_id=None, headers={}, max_content=100)
