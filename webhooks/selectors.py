"""Reads of webhooks: endpoints and deliveries as the admin and the API list them, and which event types any endpoint
subscribes to (what the event sink asks on the write paths, kept briefly per process)."""

import time
import uuid as uuid_lib
from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Q, QuerySet

from .choices import WebhookDeliveryStatusChoices
from .models import WebhookDelivery, WebhookEndpoint


def webhook_endpoint_list() -> QuerySet[WebhookEndpoint]:
    """Endpoints with their creator and how many deliveries wait for them (one query)."""
    pending = Q(deliveries__status=WebhookDeliveryStatusChoices.PENDING)
    return (
        WebhookEndpoint.objects.select_related("created_by")
        .annotate(pending_deliveries=Count("deliveries", filter=pending))
        .order_by("name", "id")
    )


def webhook_endpoint_get(*, uuid: uuid_lib.UUID | str) -> WebhookEndpoint:
    return webhook_endpoint_list().get(uuid=uuid)


def webhook_delivery_list() -> QuerySet[WebhookDelivery]:
    """Deliveries, newest first, with their endpoint's name; the payload left out (a list does not show it)."""
    return WebhookDelivery.objects.select_related("endpoint").defer("payload").order_by("-id")


def webhook_delivery_get(*, uuid: uuid_lib.UUID | str) -> WebhookDelivery:
    """One delivery, whole, with every attempt (two queries)."""
    return WebhookDelivery.objects.select_related("endpoint").prefetch_related("attempt_log").get(uuid=uuid)


def webhook_recent_deliveries(*, endpoint: WebhookEndpoint, limit: int = 20) -> QuerySet[WebhookDelivery]:
    return endpoint.deliveries.defer("payload").order_by("-id")[:limit]


def webhook_delivery_counts() -> dict[str, int]:
    """Deliveries by status, every status present (one query)."""
    counts = dict.fromkeys(WebhookDeliveryStatusChoices.values, 0)
    for status, n in WebhookDelivery.objects.values_list("status").annotate(n=Count("id")).order_by():
        counts[status] = n
    return counts


def webhook_oldest_due(*, now: datetime) -> datetime | None:
    """When the pending delivery waiting longest became due (None: nothing is due): the workers' lag."""
    return (
        WebhookDelivery.objects.filter(status=WebhookDeliveryStatusChoices.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )


class _SubscribedTypes:
    """The event types at least one active endpoint subscribes to, read at most once per
    SENSORSYNC_WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS in a process. Only a "no" is trusted from it: an event type in it
    is looked up again, live, before anything is queued (``services.webhook_deliveries_enqueue``), so a deleted or
    deactivated endpoint never gets a delivery; a new subscription is seen at the next read."""

    def __init__(self) -> None:
        self.types: frozenset[str] | None = None
        self.read_at = 0.0

    def get(self) -> frozenset[str]:
        now = time.monotonic()
        if self.types is None or now - self.read_at >= settings.SENSORSYNC_WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS:
            self.remember(WebhookEndpoint.objects.filter(is_active=True).values_list("event_types", flat=True))
        assert self.types is not None
        return self.types

    def remember(self, subscriptions: Iterable[list[str]]) -> None:
        self.types = frozenset(name for event_types in subscriptions for name in event_types)
        self.read_at = time.monotonic()

    def forget(self) -> None:
        self.types = None


_subscribed = _SubscribedTypes()


def webhook_subscribed_types() -> frozenset[str]:
    return _subscribed.get()


def webhook_subscriptions_remember(subscriptions: Iterable[list[str]]) -> None:
    """What a live read of the active endpoints found (their event type lists): fresh for another TTL."""
    _subscribed.remember(subscriptions)


def webhook_subscriptions_forget() -> None:
    """An endpoint changed in this process: read the subscriptions again before trusting them."""
    _subscribed.forget()
