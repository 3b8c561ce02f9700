"""Per-request plumbing made cheap must stay what it replaced: request ids are version-4 UUIDs, all different; the
HTTP metrics read on /metrics count and time each request under its route template, as prometheus_client's
Counter and Histogram would, and a client inventing methods adds no series. Access lines: every error and slow
request, the first of a burst of the others, and a count of those not logged."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.http import AccessLines, new_request_id
from shared.metrics import HttpMetrics
from tests.support.logs import JsonLines
from tests.support.wait import wait_for


def test_request_ids_are_distinct_version_4_uuids():
    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:200]:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_http_metrics_are_counted_and_bucketed_per_route_and_status():
    metrics = HttpMetrics((0.005, 0.05))
    registry = CollectorRegistry()
    registry.register(metrics)  # type: ignore[arg-type]
    for seconds in (0.001, 0.005, 0.02, 3.0):
        metrics.observe("GET", "/v1/customers/{id}", 200, seconds)
    metrics.observe("GET", "/v1/customers/{id}", 404, 0.002)
    metrics.observe("BREW", "unmatched", 405, 0.001)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    route = (("method", "GET"), ("route", "/v1/customers/{id}"))
    assert samples[("http_requests_total", (*route, ("status", "200")))] == 4
    assert samples[("http_requests_total", (*route, ("status", "404")))] == 1
    buckets = {
        le: samples[("http_request_duration_seconds_bucket", (("le", le), *route))] for le in ("0.005", "0.05", "+Inf")
    }
    assert buckets == {"0.005": 3, "0.05": 4, "+Inf": 5}  # cumulative; 0.005 itself is in the 0.005 bucket
    assert samples[("http_request_duration_seconds_count", route)] == 5
    assert abs(samples[("http_request_duration_seconds_sum", route)] - 3.028) < 1e-9
    assert ("http_requests_total", (("method", "other"), ("route", "unmatched"), ("status", "405"))) in samples
    assert not any("BREW" in str(key) for key in samples)


async def test_access_lines_past_the_burst_are_counted_and_the_count_written_at_the_window_end():
    now = [100.0]
    lines = AccessLines("GET", "/v1/x", burst=3, clock=lambda: now[0])
    assert [lines.wanted(200, 0.002) for _ in range(5)] == [True, True, True, False, False]
    assert lines.wanted(404, 0.001) and lines.wanted(503, 0.001)  # errors: always a line
    assert lines.wanted(200, AccessLines.SLOW_S)  # slow: always a line
    assert lines.wanted(204, 0.25) is False
    with JsonLines.of("coworking.access") as captured:
        await wait_for(lambda: captured.lines, timeout=3, what="the count, at the window's end")
    assert [(line["msg"], line["method"], line["route"], line["count"], line["ms_max"]) for line in captured.lines] == [
        ("requests not logged", "GET", "/v1/x", 3, 250.0)
    ]
    assert "request_id" not in captured.lines[0]  # about no request in particular
    now[0] += 1.0  # the next window: a burst of its own
    assert [lines.wanted(200, 0.002) for _ in range(4)] == [True, True, True, False]
    with JsonLines.of("coworking.access") as captured:
        lines.report()  # as at shutdown: what is counted, at once
        lines.report()  # and nothing twice
    assert [line["count"] for line in captured.lines] == [1]


async def test_a_window_count_is_written_when_the_next_window_starts_if_its_timer_had_no_turn():
    now = [100.0]
    lines = AccessLines("GET", "/v1/x", burst=1, clock=lambda: now[0])
    with JsonLines.of("coworking.access") as captured:
        assert [lines.wanted(200, 0.001) for _ in range(3)] == [True, False, False]
        now[0] += 1.5  # the loop was busy past the window's end: its timer has not run
        assert [lines.wanted(200, 0.001) for _ in range(2)] == [True, False]
        assert [line["count"] for line in captured.lines] == [2]  # the first window's, on its own
        lines.report()
    assert [line["count"] for line in captured.lines] == [2, 1]


def test_with_a_burst_of_0_every_request_gets_an_access_line():
    lines = AccessLines("GET", "/v1/x", burst=0)
    assert all(lines.wanted(200, 0.001) for _ in range(1000))
