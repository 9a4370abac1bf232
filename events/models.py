import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from sensorsync_project.fields import JSONField

from .choices import EventTypeChoices


class Event(models.Model):
    """One fact in the append-only log. Nothing in the application updates an event, and only retention deletes
    them, oldest first and whole months at a time (``events.retention``).

    On PostgreSQL the table is partitioned by month of ``created_at`` (``events.partitions``): its primary key and
    unique constraints there include ``created_at``, as partitioning requires; ``id`` and ``event_id`` stay unique
    by construction (a sequence, a random uuid), and (aggregate, sequence) is unique per partition. Migrations that
    alter these need ``RunSQL`` there (see ``events/migrations/0005``).

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


class AggregateSnapshot(models.Model):
    """What the events of an aggregate that retention dropped had established (``events.retention``).

    ``through_sequence`` is the last sequence folded in: the log goes on from the next one, and new events are
    numbered after it even when none of the aggregate's events is left. ``state`` is what the aggregate's folder
    (registered by the app that owns the aggregate) kept of the dropped events, for replays that start here."""

    aggregate_type = models.CharField(max_length=32)
    aggregate_id = models.CharField(max_length=64)
    through_sequence = models.PositiveIntegerField()
    state = JSONField(default=dict, encoder=DjangoJSONEncoder)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["aggregate_type", "aggregate_id"], name="snapshot_aggregate_unique")
        ]

    def __str__(self) -> str:
        return f"{self.aggregate_type}:{self.aggregate_id} through #{self.through_sequence}"
