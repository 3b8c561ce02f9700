"""Per-request plumbing made cheap must stay what it replaced: request ids are version-4 UUIDs, all different; the
HTTP metrics read on /metrics count and time each request under its route template, as prometheus_client's
Counter and Histogram would, and a client inventing methods adds no series."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.http import new_request_id
from shared.metrics import HttpMetrics


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
