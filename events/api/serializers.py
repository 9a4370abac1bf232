from rest_framework import serializers

from events.models import Event
from sensorsync_project.api.pagination import EventCursorPagination


class EventSerializer(serializers.ModelSerializer):
    """One event, read from ``events.selectors.event_list`` (which measures the data and leaves large data out of
    lists)."""

    eventId = serializers.UUIDField(source="event_id")
    aggregateType = serializers.CharField(source="aggregate_type")
    aggregateId = serializers.CharField(source="aggregate_id")
    # The stubs take this field for an override of ``Serializer.data``; DRF's metaclass moves declared fields off
    # the class, so it never is one.
    data = serializers.JSONField(  # type: ignore[assignment]
        source="data_inline",
        allow_null=True,
        read_only=True,
        help_text=(
            "What happened. Null in a list when larger than "
            f"{EventCursorPagination.data_inline_max_bytes} bytes (see dataTruncated); always whole on "
            "GET /api/v1/events/{id}."
        ),
    )
    dataTruncated = serializers.BooleanField(
        source="data_truncated",
        read_only=True,
        help_text="True when `data` was left out of this list for its size: read the event by its id for it.",
    )
    dataSize = serializers.IntegerField(
        source="data_size", read_only=True, help_text="The size of the stored data in bytes (as JSON text)."
    )
    correlationId = serializers.UUIDField(source="correlation_id")
    createdAt = serializers.DateTimeField(source="created_at")

    class Meta:
        model = Event
        fields = (
            "id",
            "eventId",
            "type",
            "aggregateType",
            "aggregateId",
            "sequence",
            "data",
            "dataTruncated",
            "dataSize",
            "metadata",
            "correlationId",
            "createdAt",
        )
        read_only_fields = fields
