"""Writes of webhooks: staff's endpoints, the outbox the event sink fills, and what the delivery worker records.

The outbox: ``webhook_deliveries_enqueue`` is an event sink (``events.services.event_sink_register``, registered by
``webhooks.apps``), so a delivery row is inserted in the very transaction that appends its event. A rolled-back
unit of work leaves neither; a committed one leaves both, and the worker (``webhooks.worker``) sends every pending
row, however long the receiver is away, until it answers 2xx or the delivery runs out of attempts.
"""

import contextlib
import logging
import random
import uuid as uuid_lib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from events.choices import EventTypeChoices
from events.context import RequestUser, actor_label, signed_in_user
from events.models import Event
from events.services import DEVICE_AGGREGATE, EventRecorder, event_recording
from sensorsync_project.fields import concrete_field
from sensorsync_project.validation import has_control_characters

from .choices import WebhookAttemptResultChoices, WebhookDeliveryStatusChoices
from .event_types import webhook_event_type_for, webhook_event_types
from .metrics import ENQUEUED
from .models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from .selectors import webhook_subscribed_types, webhook_subscriptions_forget, webhook_subscriptions_remember
from .signing import SIGNATURE_HEADER, signature_header, webhook_secret_generate
from .transport import PostResult

logger = logging.getLogger("sensorsync.webhooks")

WEBHOOK_ENDPOINT_AGGREGATE = "webhook_endpoint"
NAME_MAX = 255
URL_MAX = 2048
USER_AGENT = "SensorSync-Webhooks/1"


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # a field the client did not send


@dataclass(frozen=True)
class EndpointWithSecret:
    endpoint: WebhookEndpoint
    secret: str


# --------------------------------------------------------------------------------------------------------------
# Endpoints (staff)
# --------------------------------------------------------------------------------------------------------------


def webhook_url_validate(value: Any) -> str:
    """An absolute http(s) URL with a host, as the worker will POST to it; anything else names ``url``."""
    problem = _url_problem(value)
    if problem is not None:
        raise ValidationError({"url": [problem]})
    return value.strip()


def _url_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "Must be an http:// or https:// URL."
    url = value.strip()
    if len(url) > URL_MAX:
        return f"Must be at most {URL_MAX} characters."
    if not url.isascii() or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "Must be ASCII without spaces or control characters (write an international host as punycode)."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"Not a valid URL: {exc}."
    if parts.scheme not in ("http", "https"):
        return "Must be an http:// or https:// URL."
    if not parts.hostname:
        return "Must name a host."
    if parts.username is not None or parts.password is not None:
        return "Must not carry credentials: the receiver authenticates deliveries by their signature."
    if parts.fragment:
        return "Must not have a #fragment (it is never sent)."
    if port == 0:
        return "Port 0 is not a port a receiver listens on."
    return None


def _event_types_validate(value: Any) -> list[str]:
    known = [entry.name for entry in webhook_event_types()]
    if not isinstance(value, list) or not value or not all(isinstance(name, str) for name in value):
        raise ValidationError({"eventTypes": [f"Must be a non-empty list of event types: {', '.join(known)}."]})
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValidationError(
            {"eventTypes": [f"Unknown event type(s) {', '.join(unknown)}; known: {', '.join(known)}."]}
        )
    return [name for name in known if name in value]  # the registry's order, each once


def _fields_validate(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields given, cleaned; every problem named by its wire field (a 400 from the API, a form error in the
    admin)."""
    cleaned: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    if "name" in fields:
        name = fields["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX or has_control_characters(name):
            errors["name"] = [f"Must be a non-empty string of at most {NAME_MAX} characters, no control characters."]
        else:
            cleaned["name"] = name.strip()
    for key, check in (("url", webhook_url_validate), ("event_types", _event_types_validate)):
        if key in fields:
            try:
                cleaned[key] = check(fields[key])
            except ValidationError as exc:
                errors.update(exc.message_dict)
    if "is_active" in fields:
        if type(fields["is_active"]) is not bool:
            errors["isActive"] = ["Must be a boolean."]
        else:
            cleaned["is_active"] = fields["is_active"]
    if errors:
        raise ValidationError(errors)
    return cleaned


def _endpoint_events(endpoint: WebhookEndpoint) -> contextlib.AbstractContextManager[EventRecorder]:
    return event_recording(str(endpoint.uuid), aggregate_type=WEBHOOK_ENDPOINT_AGGREGATE)


def _shown(endpoint: WebhookEndpoint) -> dict:
    """What an endpoint's events record of it (never its secret)."""
    return {
        "name": endpoint.name,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "is_active": endpoint.is_active,
    }


@transaction.atomic
def webhook_endpoint_create(
    *, name: Any, url: Any, event_types: Any, is_active: Any = True, user: RequestUser = None
) -> EndpointWithSecret:
    """A new endpoint with a new secret, returned this once."""
    cleaned = _fields_validate({"name": name, "url": url, "event_types": event_types, "is_active": is_active})
    secret = webhook_secret_generate()
    endpoint = WebhookEndpoint.objects.create(**cleaned, secret=secret, created_by=signed_in_user(user))
    with _endpoint_events(endpoint) as recorder:
        recorder.record(EventTypeChoices.WEBHOOK_ENDPOINT_CREATED, _shown(endpoint), actor=actor_label(user))
    webhook_subscriptions_forget()
    return EndpointWithSecret(endpoint, secret)


@transaction.atomic
def webhook_endpoint_update(
    *,
    uuid: uuid_lib.UUID | str,
    user: RequestUser,
    name: Any = UNSET,
    url: Any = UNSET,
    event_types: Any = UNSET,
    is_active: Any = UNSET,
) -> WebhookEndpoint:
    """Change the fields given. Deliveries already queued keep going to the endpoint (to its new URL); from an
    inactive endpoint nothing is sent until it is active again."""
    given = {
        key: value
        for key, value in (("name", name), ("url", url), ("event_types", event_types), ("is_active", is_active))
        if value is not UNSET
    }
    cleaned = _fields_validate(given)
    endpoint = WebhookEndpoint.objects.select_for_update().get(uuid=uuid)
    changes = {key: value for key, value in cleaned.items() if getattr(endpoint, key) != value}
    if changes:
        for key, value in changes.items():
            setattr(endpoint, key, value)
        endpoint.updated_at = timezone.now()
        endpoint.save(update_fields=[*changes, "updated_at"])
        with _endpoint_events(endpoint) as recorder:
            recorder.record(EventTypeChoices.WEBHOOK_ENDPOINT_UPDATED, {"changes": changes}, actor=actor_label(user))
        webhook_subscriptions_forget()
    return endpoint


@transaction.atomic
def webhook_endpoint_secret_rotate(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> EndpointWithSecret:
    """A new secret, returned this once; every attempt from now on is signed with it (the old one stops at once)."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(uuid=uuid)
    secret = webhook_secret_generate()
    endpoint.secret = secret
    endpoint.updated_at = timezone.now()
    endpoint.save(update_fields=["secret", "updated_at"])
    with _endpoint_events(endpoint) as recorder:
        recorder.record(EventTypeChoices.WEBHOOK_ENDPOINT_SECRET_ROTATED, {}, actor=actor_label(user))
    return EndpointWithSecret(endpoint, secret)


@transaction.atomic
def webhook_endpoint_delete(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> None:
    """Delete an endpoint with its deliveries and their attempts.

    The row is locked first: a unit of work queueing a delivery for it holds a share lock on it until it commits
    (``webhook_deliveries_enqueue``), so its deliveries are committed, and deleted here, before the endpoint goes."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(uuid=uuid)
    with _endpoint_events(endpoint) as recorder:
        recorder.record(EventTypeChoices.WEBHOOK_ENDPOINT_DELETED, {"name": endpoint.name}, actor=actor_label(user))
    endpoint.delete()
    webhook_subscriptions_forget()


# --------------------------------------------------------------------------------------------------------------
# The outbox (the event sink)
# --------------------------------------------------------------------------------------------------------------


def webhook_payload(event: Event) -> dict:
    """What a receiver gets for an event: its id (the same on every attempt: deduplicate on it), type, time, what
    it is about and what it says."""
    payload = {
        "id": str(event.event_id),
        "type": event.type,
        "createdAt": event.created_at.isoformat(),
        "aggregateType": event.aggregate_type,
        "aggregateId": event.aggregate_id,
        "data": event.data,
    }
    if event.aggregate_type == DEVICE_AGGREGATE:
        payload["device"] = {"uuid": event.aggregate_id}
    return payload


def _subscribers_locked() -> list[tuple[int, list[str]]]:
    """Every active endpoint's id and event types, read live. On PostgreSQL each row is share-locked (FOR KEY SHARE:
    it blocks only a deletion of the endpoint, until this transaction ends; concurrent writers do not wait for one
    another), so an endpoint is never deleted between this read and the commit of the deliveries queued for it."""
    qn = connection.ops.quote_name
    pk, types, active = (
        qn(concrete_field(WebhookEndpoint, name).column) for name in ("id", "event_types", "is_active")
    )
    sql = f"SELECT {pk}, {types} FROM {qn(WebhookEndpoint._meta.db_table)} WHERE {active} = %s"
    if connection.vendor == "postgresql":
        sql += " FOR KEY SHARE"
    with connection.cursor() as cursor:
        cursor.execute(sql, [True])
        rows = cursor.fetchall()
    return [
        (row_pk, orjson.loads(row_types) if isinstance(row_types, str | bytes) else row_types)
        for row_pk, row_types in rows
    ]


def webhook_deliveries_enqueue(events: Sequence[Event]) -> None:
    """The event sink: one delivery per (event a webhook goes out for, active endpoint subscribed to its type), in
    the transaction that appended the events.

    On the agent's hot paths this costs no statement unless the batch holds such an event and some endpoint
    subscribes to its type (as last read, at most SENSORSYNC_WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS ago: one SELECT
    when older); then the endpoints are read live and the deliveries inserted (two statements)."""
    wanted = [event for event in events if webhook_event_type_for(event) is not None]
    if not wanted:
        return
    subscribed = webhook_subscribed_types()
    wanted = [event for event in wanted if event.type in subscribed]
    if not wanted:
        return
    endpoints = _subscribers_locked()
    webhook_subscriptions_remember(types for _pk, types in endpoints)
    now = timezone.now()
    deliveries = [
        WebhookDelivery(
            endpoint_id=pk,
            event_id=event.event_id,
            event_type=event.type,
            aggregate_id=event.aggregate_id,
            payload=webhook_payload(event),
            next_attempt_at=now,
            created_at=now,
        )
        for event in wanted
        for pk, types in endpoints
        if event.type in types
    ]
    if deliveries:
        WebhookDelivery.objects.bulk_create(deliveries)
        for delivery in deliveries:
            ENQUEUED.labels(delivery.event_type).inc()


# --------------------------------------------------------------------------------------------------------------
# Delivery (the worker)
# --------------------------------------------------------------------------------------------------------------


def webhook_retry_delay(attempt: int, *, rng: random.Random | None = None) -> timedelta:
    """The wait after failed attempt number ``attempt`` (1-based): BACKOFF x 2^(attempt-1), at most BACKOFF_MAX,
    each +-20 % at random so that the deliveries of one outage do not come back all at once."""
    base = settings.SENSORSYNC_WEBHOOK_BACKOFF_SECONDS * 2 ** min(attempt - 1, 32)
    delay = min(base, settings.SENSORSYNC_WEBHOOK_BACKOFF_MAX_SECONDS)
    return timedelta(seconds=delay * (rng or random).uniform(0.8, 1.2))


def webhook_deliveries_claim(*, claim: str, limit: int, lease_seconds: float) -> list[WebhookDelivery]:
    """Take up to ``limit`` due deliveries of active endpoints for ``lease_seconds`` (``claim`` marks them ours):
    the oldest first, each by one worker only. PostgreSQL passes over rows another worker is claiming (SKIP LOCKED);
    SQLite runs one writing transaction at a time, so two claims cannot overlap there either."""
    now = timezone.now()
    due = (
        WebhookDelivery.objects.filter(
            status=WebhookDeliveryStatusChoices.PENDING, next_attempt_at__lte=now, endpoint__is_active=True
        )
        .exclude(locked_until__gt=now)
        .order_by("next_attempt_at", "id")
    )
    if not due.exists():  # idle: no write transaction (on SQLite it would take the database's write lock)
        return []
    with transaction.atomic():
        ids = list(due.select_for_update(skip_locked=True, of=("self",)).values_list("id", flat=True)[:limit])
        if not ids:
            return []
        WebhookDelivery.objects.filter(id__in=ids).update(
            locked_until=now + timedelta(seconds=lease_seconds), locked_by=claim
        )
    return list(WebhookDelivery.objects.select_related("endpoint").filter(id__in=ids, locked_by=claim))


def webhook_deliveries_release(*, ids: Sequence[int], claim: str) -> None:
    """Give back deliveries claimed and not attempted (the worker is stopping): the next worker takes them now."""
    WebhookDelivery.objects.filter(id__in=list(ids), locked_by=claim).update(locked_until=None, locked_by="")


def webhook_request(delivery: WebhookDelivery, *, now: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an attempt: the payload as JSON, signed now with the endpoint's secret."""
    body = orjson.dumps(delivery.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-SensorSync-Event": delivery.event_type,
        "X-SensorSync-Delivery": str(delivery.uuid),
        SIGNATURE_HEADER: signature_header(
            secret=delivery.endpoint.secret, body=body, timestamp=None if now is None else int(now)
        ),
    }
    return body, headers


@transaction.atomic
def webhook_attempt_record(
    *, delivery: WebhookDelivery, claim: str, started_at: datetime, result: PostResult
) -> WebhookAttemptResultChoices | None:
    """Record one attempt and what it makes of the delivery: delivered, retried later (with backoff) or failed
    (no attempt left); the endpoint shows it as its latest. None when the delivery is gone (its endpoint was
    deleted meanwhile). If the lease ran out and another worker claimed the delivery, the attempt is still
    recorded, and the delivery is left to that worker."""
    row = WebhookDelivery.objects.select_for_update().filter(pk=delivery.pk).values("attempts", "locked_by").first()
    if row is None:
        return None
    number = row["attempts"] + 1
    if result.delivered:
        outcome = WebhookAttemptResultChoices.DELIVERED
    elif number >= settings.SENSORSYNC_WEBHOOK_MAX_ATTEMPTS:
        outcome = WebhookAttemptResultChoices.FAILED
    else:
        outcome = WebhookAttemptResultChoices.RETRYING
    WebhookDeliveryAttempt.objects.create(
        delivery_id=delivery.pk,
        number=number,
        started_at=started_at,
        duration_ms=result.duration_ms,
        status_code=result.status_code,
        error=result.error,
        response_excerpt=result.response_excerpt,
        result=outcome,
    )
    now = timezone.now()
    changes: dict[str, Any] = {
        "attempts": F("attempts") + 1,
        "last_status_code": result.status_code,
        "last_error": result.error,
        "locked_until": None,
        "locked_by": "",
    }
    if outcome == WebhookAttemptResultChoices.RETRYING:
        changes["next_attempt_at"] = now + webhook_retry_delay(number)
    else:
        changes.update(
            status=WebhookDeliveryStatusChoices.DELIVERED
            if outcome == WebhookAttemptResultChoices.DELIVERED
            else WebhookDeliveryStatusChoices.FAILED,
            next_attempt_at=None,
            finished_at=now,
        )
    if row["locked_by"] == claim:
        WebhookDelivery.objects.filter(pk=delivery.pk).update(**changes)
    WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).update(
        last_attempt_at=started_at,
        last_attempt_result=outcome,
        last_status_code=result.status_code,
        last_error=result.error,
    )
    if outcome == WebhookAttemptResultChoices.FAILED:
        logger.warning(
            "webhook delivery failed for good delivery=%s endpoint=%s event=%s attempts=%d error=%s",
            delivery.uuid,
            delivery.endpoint_id,
            delivery.event_type,
            number,
            result.error,
        )
    return outcome


def webhook_deliveries_prune(*, days: int, batch: int = 1000) -> int:
    """Delete the deliveries (and their attempts) that ended more than ``days`` days ago, ``batch`` at a time so no
    transaction grows with the backlog; how many went."""
    cutoff = timezone.now() - timedelta(days=days)
    ended = WebhookDelivery.objects.filter(
        status__in=[WebhookDeliveryStatusChoices.DELIVERED, WebhookDeliveryStatusChoices.FAILED],
        finished_at__lt=cutoff,
    )
    removed = 0
    while True:
        ids = list(ended.values_list("id", flat=True)[:batch])
        if not ids:
            return removed
        with transaction.atomic():
            WebhookDeliveryAttempt.objects.filter(delivery_id__in=ids).delete()
            removed += WebhookDelivery.objects.filter(id__in=ids).delete()[0]
