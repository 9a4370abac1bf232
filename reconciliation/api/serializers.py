from rest_framework import serializers

from devices.models import DeviceCurrentState
from reconciliation.agent_protocol import health_merge
from reconciliation.models import DriftEpisode
from sensors.choices import DeviceSensorHealthStatusChoices


class CurrentStateSerializer(serializers.ModelSerializer):
    deviceUuid = serializers.UUIDField(source="device.uuid", read_only=True)
    sensorHealth = serializers.SerializerMethodField(
        help_text="Each sensor's adapter health as last reported ({name: {status, connected, quality, lastError, "
        "lastSeen, errorCount}}), from whichever health map the agent sends."
    )
    reportedAt = serializers.DateTimeField(source="reported_at", read_only=True)

    class Meta:
        model = DeviceCurrentState
        fields = ("deviceUuid", "version", "seq", "config", "apps", "sensorHealth", "reportedAt", "digest")
        read_only_fields = fields

    def get_sensorHealth(self, current: DeviceCurrentState) -> dict:
        return health_merge(current.sensor_health)


class DriftSensorSerializer(serializers.Serializer):
    name = serializers.CharField()
    deploymentStatus = serializers.CharField()
    running = serializers.BooleanField()
    deploymentError = serializers.CharField()
    deploymentAttempts = serializers.IntegerField()
    configVersion = serializers.IntegerField()
    statusChangedAt = serializers.DateTimeField()
    healthStatus = serializers.ChoiceField(
        choices=DeviceSensorHealthStatusChoices.choices,
        help_text="The adapter's view of the sensor, apart from its deployment: online, offline, disabled, or '' "
        "when the agent reports no health for it.",
    )
    healthError = serializers.CharField(help_text="The adapter's own last error, as the agent reported it.")
    healthErrorCount = serializers.IntegerField(allow_null=True)
    healthLastSeen = serializers.DateTimeField(
        allow_null=True, help_text="The adapter's last successful contact, as of the last health change."
    )
    healthChangedAt = serializers.DateTimeField(allow_null=True)


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
    sensors = DriftSensorSerializer(many=True, help_text="The sensors not deployed: the drift.")
    deployedOfflineSensors = DriftSensorSerializer(
        many=True,
        help_text="Sensors deployed as desired whose adapter reports them offline: not drift (the agent runs what "
        "it should), but not working either.",
    )


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


class DriftEpisodeSerializer(serializers.ModelSerializer):
    deviceUuid = serializers.UUIDField(source="device.uuid")
    deviceName = serializers.CharField(source="device.name")
    startedAt = serializers.DateTimeField(source="started_at")
    endedAt = serializers.DateTimeField(source="ended_at", allow_null=True)
    durationSeconds = serializers.SerializerMethodField()
    startTargetVersion = serializers.IntegerField(source="start_target_version")
    startReportedVersion = serializers.IntegerField(source="start_reported_version", allow_null=True)
    endTargetVersion = serializers.IntegerField(source="end_target_version", allow_null=True)
    driftingSensors = serializers.JSONField(source="drifting_sensors")
    sensorsThatDrifted = serializers.JSONField(
        source="sensors", help_text="Every sensor that drifted during the episode (complete once it ended)."
    )

    class Meta:
        model = DriftEpisode
        fields = (
            "id",
            "deviceUuid",
            "deviceName",
            "startedAt",
            "endedAt",
            "durationSeconds",
            "cause",
            "startTargetVersion",
            "startReportedVersion",
            "endTargetVersion",
            "driftingSensors",
            "sensorsThatDrifted",
        )
        read_only_fields = fields

    def get_durationSeconds(self, episode) -> float:
        return episode.duration.total_seconds()


class DriftStatsQuerySerializer(serializers.Serializer):
    since = serializers.DateTimeField(required=False, help_text="Default: 24 hours ago.")
    until = serializers.DateTimeField(required=False, help_text="Default: now.")
    device = serializers.UUIDField(required=False)

    def validate(self, attrs):
        if attrs.get("since") and attrs.get("until") and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"since": "Must be before until."})
        return attrs
