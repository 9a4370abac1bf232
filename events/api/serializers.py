from rest_framework import serializers

from events.models import Event


class EventSerializer(serializers.ModelSerializer):
    eventId = serializers.UUIDField(source="event_id")
    aggregateType = serializers.CharField(source="aggregate_type")
    aggregateId = serializers.CharField(source="aggregate_id")
    correlationId = serializers.UUIDField(source="correlation_id")
    createdAt = serializers.DateTimeField(source="created_at")

    class Meta:
        model = Event
        fields = [
            "id",
            "eventId",
            "type",
            "aggregateType",
            "aggregateId",
            "sequence",
            "data",
            "metadata",
            "correlationId",
            "createdAt",
        ]
        read_only_fields = fields
