"""Prometheus metrics of webhooks (the style of ``reconciliation.metrics``).

Deliveries queued are counted in the process that appended their event (the web server's ``/metrics``, the MQTT
workers'); attempts in the delivery worker (``manage.py deliver_webhooks --metrics-port``). The backlog is read from
the database when ``/metrics`` is scraped, so it is right whatever the number of processes."""

from collections.abc import Iterator

from django.utils import timezone
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

ENQUEUED = Counter(
    "sensorsync_webhook_deliveries_enqueued",
    "Webhook deliveries queued (one per event and subscribed endpoint), by event type.",
    ["event_type"],
)
ATTEMPTS = Counter(
    "sensorsync_webhook_attempts",
    "Webhook POSTs made by the delivery worker, by result: delivered (2xx), retrying (failed, to be retried with "
    "backoff) or failed (failed, no attempt left: the delivery is given up).",
    ["result"],
)
ATTEMPT_SECONDS = Histogram(
    "sensorsync_webhook_attempt_seconds",
    "Time of one webhook POST, from connecting to the receiver's answer (or the timeout).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


class WebhookCollector:
    """The delivery backlog, read at scrape time (two queries)."""

    def collect(self) -> Iterator[Metric]:
        from .selectors import webhook_delivery_counts, webhook_oldest_due  # imported late: apps may still load

        deliveries = GaugeMetricFamily(
            "sensorsync_webhook_deliveries",
            "Webhook deliveries kept, by status: pending (waiting for an attempt), delivered, failed (given up).",
            labels=["status"],
        )
        for status, count in webhook_delivery_counts().items():
            deliveries.add_metric([status], count)
        yield deliveries

        now = timezone.now()
        oldest = webhook_oldest_due(now=now)
        lag = GaugeMetricFamily(
            "sensorsync_webhook_oldest_due_seconds",
            "How long the pending delivery waiting longest has been due (0: none): the delivery workers' lag.",
        )
        lag.add_metric([], (now - oldest).total_seconds() if oldest is not None else 0.0)
        yield lag


for _result in ("delivered", "retrying", "failed"):
    ATTEMPTS.labels(_result)
