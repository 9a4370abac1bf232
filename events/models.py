import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from sensorsync_project.fields import JSONField

from .choices import EventTypeChoices


class Event(models.Model):
    """One fact in the append-only log. Nothing in the application updates or deletes an event.

    Sensors live inside their device's configuration document, so the device is the aggregate: every event
    carries ``aggregate_type="device"`` and the device uuid, and ``sequence`` numbers a device's history without
    gaps. Sequences are allocated while the device row is locked (see ``events.services``).
    """

    id = models.BigAutoField(primary_key=True)
    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    type = models.CharField(max_length=64, choices=EventTypeChoices.choices)
    aggregate_type = models.CharField(max_length=32)
    aggregate_id = models.CharField(max_length=64)
    sequence = models.PositiveIntegerField()
    data = JSONField(default=dict, encoder=DjangoJSONEncoder)
    metadata = JSONField(default=dict, encoder=DjangoJSONEncoder)
    correlation_id = models.UUIDField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["aggregate_type", "aggregate_id", "sequence"], name="event_aggregate_sequence_unique"
            ),
            models.CheckConstraint(condition=models.Q(sequence__gte=1), name="event_sequence_positive"),
        ]
        indexes = [
            models.Index(fields=["type", "id"], name="event_type_id_idx"),
            models.Index(fields=["created_at"], name="event_created_at_idx"),
            models.Index(fields=["correlation_id"], name="event_correlation_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.aggregate_type}:{self.aggregate_id}#{self.sequence}"
