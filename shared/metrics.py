"""Prometheus metrics shared by every service (each service process has its own registry: the default one)."""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString


class HttpMetrics:
    """``http_requests_total`` (method, route, status) and ``http_request_duration_seconds`` (method, route):
    counted per request with plain integers and floats, made into Prometheus metrics only when scraped. Same
    names, labels, buckets and ``_created`` series as prometheus_client's Counter and Histogram, whose labelled
    children take a lock for every increment: a measurable share of a read's CPU. Counted from the event loop's
    thread (the HTTP middleware); a scrape reads a copy."""

    METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.bounds = tuple(float(b) for b in buckets)
        self._counts: dict[tuple[str, str, int], list[float]] = {}  # -> [count, created]
        self._latency: dict[tuple[str, str], list[Any]] = {}  # -> [bucket counts (not cumulative), sum, created]

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in self.METHODS:
            method = "other"  # a client inventing methods adds no series
        counted = self._counts.get((method, route, status))
        if counted is None:
            counted = self._counts[(method, route, status)] = [0, time.time()]
        counted[0] += 1
        timed = self._latency.get((method, route))
        if timed is None:
            timed = self._latency[(method, route)] = [[0] * (len(self.bounds) + 1), 0.0, time.time()]
        timed[0][bisect_left(self.bounds, seconds)] += 1  # the first bucket whose bound is >= seconds
        timed[1] += seconds

    def describe(self) -> Iterator[Metric]:
        yield Metric("http_requests", "HTTP requests", "counter")
        yield Metric("http_request_duration_seconds", "HTTP request latency", "histogram")

    def collect(self) -> Iterator[Metric]:
        requests = Metric("http_requests", "HTTP requests", "counter")
        for (method, route, status), (count, created) in list(self._counts.items()):
            labels = {"method": method, "route": route, "status": str(status)}
            requests.add_sample("http_requests_total", labels, count)
            requests.add_sample("http_requests_created", labels, created)
        yield requests
        latency = Metric("http_request_duration_seconds", "HTTP request latency", "histogram")
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for (method, route), (buckets, total, created) in list(self._latency.items()):
            labels = {"method": method, "route": route}
            cumulative = 0
            for le, n in zip(les, list(buckets), strict=True):
                cumulative += n
                latency.add_sample("http_request_duration_seconds_bucket", {**labels, "le": le}, cumulative)
            latency.add_sample("http_request_duration_seconds_count", labels, cumulative)
            latency.add_sample("http_request_duration_seconds_sum", labels, total)
            latency.add_sample("http_request_duration_seconds_created", labels, created)
        yield latency


HTTP = HttpMetrics((0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
REGISTRY.register(HTTP)  # type: ignore[arg-type]
OUTBOX_PUBLISHED = Counter("events_published_total", "Messages published from the outbox", ["routing_key"])
OUTBOX_BACKLOG = Gauge("outbox_backlog", "Outbox rows not yet published")
DEAD_LETTERS = Gauge("dead_letters", "Messages waiting in a dead-letter queue (read at scrape)", ["queue"])
EVENTS_CONSUMED = Counter(
    "events_consumed_total", "Messages consumed", ["queue", "routing_key", "outcome"]
)  # outcome: handled | duplicate | retried | dead_lettered
CONSUMER_BATCH = Histogram(
    "consumer_batch_messages",
    "Messages handled together in one consumer transaction",
    ["queue"],
    buckets=(1, 2, 5, 10, 20, 50, 100),
)
RELAY_BATCH = Histogram(
    "outbox_relay_batch_rows", "Outbox rows claimed per relay round", buckets=(1, 2, 5, 10, 20, 50, 100, 200)
)
EMAIL_OUTCOME_BATCH = Histogram(
    "email_outcome_batch_rows",
    "Delivery outcomes (with their events) written together in one statement",
    buckets=(1, 2, 5, 10, 20, 50, 100),
)
EMAIL_DELIVERIES = Counter("email_deliveries_total", "Email delivery attempts by outcome", ["template", "outcome"])
