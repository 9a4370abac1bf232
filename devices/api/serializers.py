from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from devices.models import Device, DeviceTargetState, DeviceTargetStateVersion


class DeviceSerializer(serializers.ModelSerializer):
    isActive = serializers.BooleanField(source="is_active")
    lastSeenAt = serializers.DateTimeField(source="last_seen_at", read_only=True, allow_null=True)
    osVersion = serializers.CharField(source="os_version", read_only=True)
    agentVersion = serializers.CharField(source="agent_version", read_only=True)
    ipAddress = serializers.IPAddressField(source="ip_address", read_only=True, allow_null=True)
    lastFetchedVersion = serializers.IntegerField(source="last_fetched_version", read_only=True, allow_null=True)
    lastFetchedAt = serializers.DateTimeField(source="last_fetched_at", read_only=True, allow_null=True)
    targetVersion = serializers.IntegerField(source="target_state.version", read_only=True)
    reportedVersion = serializers.SerializerMethodField()
    needsDeployment = serializers.BooleanField(source="target_state.needs_deployment", read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = Device
        fields = [
            "uuid",
            "name",
            "description",
            "isActive",
            "lastSeenAt",
            "osVersion",
            "agentVersion",
            "ipAddress",
            "uptime",
            "lastFetchedVersion",
            "lastFetchedAt",
            "targetVersion",
            "reportedVersion",
            "needsDeployment",
            "createdAt",
            "updatedAt",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_reportedVersion(self, device: Device) -> int | None:  # noqa: N802 (wire name)
        current = device.current_state_or_none()
        return current.version if current else None


class DeviceWriteSerializer(serializers.Serializer):
    """Request body of device create / update (validated by the service; declared here for the schema)."""

    name = serializers.CharField(max_length=255)
    description = serializers.CharField(required=False, allow_blank=True)
    isActive = serializers.BooleanField(required=False)


class DeviceKeySerializer(DeviceSerializer):
    apiKey = serializers.CharField(read_only=True, help_text="Shown once: store it on the device now.")

    class Meta(DeviceSerializer.Meta):
        fields = [*DeviceSerializer.Meta.fields, "apiKey"]
        read_only_fields = fields


class TargetStateSerializer(serializers.ModelSerializer):
    deviceUuid = serializers.UUIDField(source="device.uuid", read_only=True)
    needsDeployment = serializers.BooleanField(source="needs_deployment", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)
    updatedBy = serializers.SerializerMethodField()
    lastDeployedAt = serializers.DateTimeField(source="last_deployed_at", read_only=True, allow_null=True)
    etag = serializers.CharField(read_only=True)

    class Meta:
        model = DeviceTargetState
        fields = [
            "deviceUuid",
            "version",
            "config",
            "apps",
            "needsDeployment",
            "updatedAt",
            "updatedBy",
            "lastDeployedAt",
            "etag",
        ]
        read_only_fields = fields

    def get_updatedBy(self, target) -> str | None:  # noqa: N802
        return target.updated_by.get_username() if target.updated_by_id else None


class TargetStateWriteSerializer(serializers.Serializer):
    config = serializers.JSONField(
        help_text='{"sensors": [sensor, ...], ...} (the old key protocolAdapterDevices is accepted and converted)'
    )
    apps = serializers.JSONField(required=False)


class TargetStateVersionSerializer(serializers.ModelSerializer):
    createdAt = serializers.DateTimeField(source="created_at")
    createdBy = serializers.SerializerMethodField()

    class Meta:
        model = DeviceTargetStateVersion
        fields = ["version", "config", "apps", "createdAt", "createdBy", "source", "change"]
        read_only_fields = fields

    def get_createdBy(self, version) -> str | None:  # noqa: N802
        return version.created_by.get_username() if version.created_by_id else None


class RollbackSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, help_text="The earlier target version whose content to deploy.")
