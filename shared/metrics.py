"""Prometheus metrics shared by every service (each service process has its own registry: the default one)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
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
