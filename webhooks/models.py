import uuid

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from sensorsync_project.fields import JSONField

from .choices import WebhookAttemptResultChoices, WebhookDeliveryStatusChoices


class WebhookEndpoint(models.Model):
    """A receiver staff configured: where to POST which events, signed with its secret.

    ``secret`` is the HMAC-SHA256 key the deliveries are signed with, so it is kept as it is (a digest could not
    sign); it is shown once, when made or rotated, and never again by the admin or the API. The ``last_*`` fields are
    the latest attempt of any of its deliveries, written by the delivery worker, for the lists."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=255)
    url = models.CharField(max_length=2048, help_text="http:// or https://; redirects are not followed.")
    secret = models.CharField(max_length=128, editable=False)
    # Names from the registry of webhook event types (``webhooks.event_types``).
    event_types = JSONField(default=list, encoder=DjangoJSONEncoder)
    is_active = models.BooleanField(default=True, help_text="Inactive: nothing is queued for it, nor sent.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    last_attempt_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_attempt_result = models.CharField(
        max_length=16, blank=True, choices=WebhookAttemptResultChoices.choices, editable=False
    )
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"


class WebhookDelivery(models.Model):
    """One event to send to one endpoint: the transactional outbox.

    Inserted in the transaction that appended the event (``webhooks.services.webhook_deliveries_enqueue``, an event
    sink), so it exists exactly when the event committed. The payload is fixed then; each attempt signs it anew. A
    worker claims a pending delivery for ``lease`` seconds (``locked_until``, its claim in ``locked_by``): a worker
    that dies leaves it to the next one once the lease ends."""

    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(help_text="The event's id: the same on every attempt, for receivers to deduplicate.")
    event_type = models.CharField(max_length=64)
    aggregate_id = models.CharField(max_length=64, help_text="The device (or other aggregate) the event is about.")
    payload = JSONField(encoder=DjangoJSONEncoder)
    status = models.CharField(
        max_length=16, choices=WebhookDeliveryStatusChoices.choices, default=WebhookDeliveryStatusChoices.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, default=timezone.now)
    locked_until = models.DateTimeField(null=True, blank=True, editable=False)
    locked_by = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="webhook_delivery_once_per_endpoint"),
        ]
        indexes = [
            # What the workers claim: the pending deliveries that are due, oldest first.
            models.Index(
                fields=["next_attempt_at", "id"],
                condition=models.Q(status="pending"),
                name="webhook_delivery_due_idx",
            ),
            models.Index(fields=["status", "finished_at"], name="webhook_delivery_status_idx"),
            models.Index(fields=["aggregate_id", "id"], name="webhook_delivery_aggregate_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.endpoint_id} ({self.status})"


class WebhookDeliveryAttempt(models.Model):
    """One POST of a delivery: when, how long, and what came back (a status code, or why none did)."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    response_excerpt = models.TextField(blank=True, help_text="The start of the receiver's answer.")
    result = models.CharField(max_length=16, choices=WebhookAttemptResultChoices.choices)

    class Meta:
        ordering = ["delivery", "number", "id"]
        indexes = [models.Index(fields=["delivery", "number"], name="webhook_attempt_delivery_idx")]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"
