from rest_framework import serializers

from devices.models import DeviceCurrentState


class CurrentStateSerializer(serializers.ModelSerializer):
    deviceUuid = serializers.UUIDField(source="device.uuid", read_only=True)
    sensorHealth = serializers.JSONField(source="sensor_health", read_only=True)
    reportedAt = serializers.DateTimeField(source="reported_at", read_only=True)

    class Meta:
        model = DeviceCurrentState
        fields = ["deviceUuid", "version", "seq", "config", "apps", "sensorHealth", "reportedAt", "digest"]
        read_only_fields = fields


class DriftSensorSerializer(serializers.Serializer):
    name = serializers.CharField()
    deploymentStatus = serializers.CharField()
    running = serializers.BooleanField()
    deploymentError = serializers.CharField()
    deploymentAttempts = serializers.IntegerField()
    configVersion = serializers.IntegerField()
    statusChangedAt = serializers.DateTimeField()


class DriftSerializer(serializers.Serializer):
    deviceUuid = serializers.UUIDField()
    inSync = serializers.BooleanField()
    stage = serializers.ChoiceField(
        choices=["in_sync", "never_fetched", "not_fetched", "never_reported", "not_applied", "sensors_failed"]
    )
    reason = serializers.CharField()
    targetVersion = serializers.IntegerField()
    targetUpdatedAt = serializers.DateTimeField()
    lastFetchedVersion = serializers.IntegerField(allow_null=True)
    lastFetchedAt = serializers.DateTimeField(allow_null=True)
    reportedVersion = serializers.IntegerField(allow_null=True)
    lastReportedAt = serializers.DateTimeField(allow_null=True)
    lastSeenAt = serializers.DateTimeField(allow_null=True)
    sensors = DriftSensorSerializer(many=True)


class ReconcileResultSerializer(serializers.Serializer):
    deviceUuid = serializers.UUIDField(source="device_uuid")
    targetVersion = serializers.IntegerField(source="target_version")
    reportedVersion = serializers.IntegerField(source="reported_version", allow_null=True)
    inSync = serializers.BooleanField(source="in_sync")
    inserted = serializers.IntegerField()
    updated = serializers.IntegerField()
    removed = serializers.IntegerField()
    failed = serializers.IntegerField()
    drifting = serializers.ListField(child=serializers.CharField())
