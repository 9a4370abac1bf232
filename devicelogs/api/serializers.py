from rest_framework import serializers

from devicelogs.models import DeviceLogLine


class DeviceLogLineSerializer(serializers.ModelSerializer):
    loggedAt = serializers.DateTimeField(source="logged_at", read_only=True, help_text="The device's clock.")
    receivedAt = serializers.DateTimeField(source="received_at", read_only=True)
    sourceName = serializers.CharField(source="source_name", read_only=True)
    serviceName = serializers.CharField(source="service_name", read_only=True)
    isStderr = serializers.BooleanField(source="is_stderr", read_only=True)

    class Meta:
        model = DeviceLogLine
        fields = ("id", "loggedAt", "receivedAt", "level", "source", "sourceName", "serviceName", "isStderr", "message")
        read_only_fields = fields
