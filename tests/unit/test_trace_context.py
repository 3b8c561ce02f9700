"""Trace context without an exporter: every request or message still gets trace and span ids (for its log lines and
the traceparent it passes on), a new unsampled trace of its own unless a caller's is continued."""

from __future__ import annotations

import re

from opentelemetry.trace import SpanKind

from shared import tracing

CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_without_a_callers_trace_each_span_starts_a_new_unsampled_one_and_a_callers_trace_is_continued():
    tracing.configure("test", None)  # no OTEL_EXPORTER_OTLP_ENDPOINT: nothing exports spans
    seen = []
    for _ in range(2):
        with tracing.continued_span("GET /v1/customers/{id}", None, SpanKind.SERVER):
            ids, passed_on = tracing.log_ids(), tracing.current_traceparent()
        assert re.fullmatch(r"[0-9a-f]{32}", ids["trace_id"]) and ids["trace_id"] != "0" * 32
        assert passed_on == f"00-{ids['trace_id']}-{ids['span_id']}-00"  # not sampled
        seen.append(ids["trace_id"])
    assert seen[0] != seen[1]
    assert tracing.log_ids() == {}  # outside any span, no ids
    with tracing.continued_span("consume x", CALLER, SpanKind.CONSUMER):
        ids, passed_on = tracing.log_ids(), tracing.current_traceparent()
    assert ids["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and ids["span_id"] != "00f067aa0ba902b7"
    assert passed_on is not None and passed_on.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert passed_on.endswith("-01")  # the caller's sampling decision is kept
