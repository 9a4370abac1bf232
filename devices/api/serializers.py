from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from devices.models import Device, DeviceTargetDraft, DeviceTargetState, DeviceTargetStateVersion, ProvisioningKey
from devices.selectors import KEY_DEVICES_SHOWN, provisioning_key_devices

_PROCESS_SCHEMA = {
    "type": "object",
    "properties": {
        "pid": {"type": "integer"},
        "name": {"type": "string"},
        "cpu": {"type": "number"},
        "mem": {"type": "number"},
    },
}
_INTERFACE_SCHEMA = {
    "type": "object",
    "properties": {
        **{name: {"type": "string"} for name in ("name", "ip4", "ip6", "mac", "type", "operstate")},
        "default": {"type": "boolean"},
        "virtual": {"type": "boolean"},
    },
}
FACTS_SCHEMA = {
    "type": "object",
    "properties": {
        **{
            name: {"type": "number"}
            for name in ("cpu_usage", "memory_usage", "memory_total", "storage_usage", "storage_total")
        },
        "temperature": {"type": "number"},
        "uptime": {"type": "number"},
        "is_online": {"type": "boolean"},
        "top_processes": {"type": "array", "items": _PROCESS_SCHEMA},
        "network_interfaces": {"type": "array", "items": _INTERFACE_SCHEMA},
    },
}


@extend_schema_field(FACTS_SCHEMA)
class FactsField(serializers.JSONField):
    """The device's latest metrics: a JSON object whose keys are documented in the schema (each optional)."""


class RetryBudgetSerializer(serializers.ModelSerializer):
    budget = serializers.SerializerMethodField(help_text="SENSORSYNC_RETRY_BUDGET (0: no budget).")
    failedApplies = serializers.IntegerField(
        source="failed_applies", help_text="Failed applies counted of failedAppliesVersion (0 once it converges)."
    )
    failedAppliesVersion = serializers.IntegerField(source="failed_applies_version", allow_null=True)
    exhausted = serializers.SerializerMethodField(help_text="The budget ran out: not retried until staff act.")
    exhaustedAt = serializers.DateTimeField(source="retry_exhausted_at", allow_null=True)
    exhaustedVersion = serializers.IntegerField(source="retry_exhausted_version", allow_null=True)
    fallbackVersion = serializers.IntegerField(
        source="retry_fallback_version",
        allow_null=True,
        help_text="The version it fell back to (the last fully deployed version's content), if it did.",
    )
    deployedVersion = serializers.IntegerField(
        source="deployed_version", allow_null=True, help_text="The last target version it fully deployed."
    )

    class Meta:
        model = DeviceTargetState
        fields = (
            "budget",
            "failedApplies",
            "failedAppliesVersion",
            "exhausted",
            "exhaustedAt",
            "exhaustedVersion",
            "fallbackVersion",
            "deployedVersion",
        )
        read_only_fields = fields

    def get_budget(self, target: DeviceTargetState) -> int:
        return settings.SENSORSYNC_RETRY_BUDGET

    def get_exhausted(self, target: DeviceTargetState) -> bool:
        return target.retry_exhausted_at is not None


DRAFT_SUMMARY_SCHEMA = {
    "type": "object",
    "nullable": True,
    "description": "The undeployed draft, or null: the published version it was started on, what deploying it "
    "would change (added, updated, removed sensors; apps), and its ETag.",
    "properties": {
        "baseVersion": {"type": "integer"},
        "revision": {"type": "integer"},
        "etag": {"type": "string"},
        "change": {"type": "object"},
        "createdAt": {"type": "string", "format": "date-time"},
        "updatedAt": {"type": "string", "format": "date-time"},
        "updatedBy": {"type": "string", "nullable": True},
    },
}


def draft_summary(draft: DeviceTargetDraft | None) -> dict | None:
    if draft is None:
        return None
    return {
        "baseVersion": draft.base_version,
        "revision": draft.revision,
        "etag": draft.etag,
        "change": draft.change,
        "createdAt": serializers.DateTimeField().to_representation(draft.created_at),
        "updatedAt": serializers.DateTimeField().to_representation(draft.updated_at),
        "updatedBy": draft.updated_by.get_username() if draft.updated_by is not None else None,
    }


@extend_schema_field({"type": "object", "additionalProperties": {"type": "string"}})
class LabelsField(serializers.Field):
    """A device's labels, ``{"key": "value"}`` (read from the prefetched rows)."""

    def to_representation(self, labels) -> dict[str, str]:
        return {label.key: label.value for label in labels.all()}


class DeviceSerializer(serializers.ModelSerializer):
    isActive = serializers.BooleanField(source="is_active")
    labels = LabelsField(
        read_only=True,
        help_text="Key-value labels that selectors select devices by (?selector=plant=3,role=boiler).",
    )
    draftMode = serializers.BooleanField(
        source="draft_mode",
        read_only=True,
        help_text="Staff edits of the desired state collect in a draft, which the agent gets only once deployed "
        "(POST devices/<uuid>/deploy).",
    )
    draft = serializers.SerializerMethodField()
    lastSeenAt = serializers.DateTimeField(source="last_seen_at", read_only=True, allow_null=True)
    osVersion = serializers.CharField(source="os_version", read_only=True)
    agentVersion = serializers.CharField(source="agent_version", read_only=True)
    ipAddress = serializers.IPAddressField(source="ip_address", read_only=True, allow_null=True)
    lastFetchedVersion = serializers.IntegerField(source="last_fetched_version", read_only=True, allow_null=True)
    lastFetchedAt = serializers.DateTimeField(source="last_fetched_at", read_only=True, allow_null=True)
    targetVersion = serializers.IntegerField(source="target_state.version", read_only=True)
    reportedVersion = serializers.SerializerMethodField()
    needsDeployment = serializers.BooleanField(source="target_state.needs_deployment", read_only=True)
    facts = FactsField(
        read_only=True,
        help_text="The agent's latest metrics, as it last reported them (each report that carries metrics replaces "
        "them whole): cpu_usage (%), memory_usage and memory_total (MB), storage_usage and storage_total (MB), "
        "temperature (°C), uptime (s), is_online, top_processes [{pid, name, cpu, mem}], network_interfaces "
        "[{name, ip4, ip6, mac, type, operstate, default, virtual}]. Empty until the agent sends metrics.",
    )
    factsReportedAt = serializers.DateTimeField(source="facts_reported_at", read_only=True, allow_null=True)
    deviceType = serializers.CharField(source="device_type", read_only=True)
    macAddress = serializers.CharField(source="mac_address", read_only=True)
    registeredBy = serializers.SerializerMethodField(
        help_text="The provisioning key the device registered itself with; null for a device staff created."
    )
    retryBudget = RetryBudgetSerializer(
        source="target_state",
        read_only=True,
        help_text="Failed applies of the target version the agent runs; once they reach the budget the device is "
        "not retried at that version until staff act (a new target version, or POST .../retry-budget/reset).",
    )
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)

    class Meta:
        model = Device
        fields: tuple[str, ...] = (
            "uuid",
            "name",
            "description",
            "isActive",
            "labels",
            "draftMode",
            "draft",
            "lastSeenAt",
            "osVersion",
            "agentVersion",
            "ipAddress",
            "uptime",
            "facts",
            "factsReportedAt",
            "deviceType",
            "macAddress",
            "registeredBy",
            "lastFetchedVersion",
            "lastFetchedAt",
            "targetVersion",
            "reportedVersion",
            "needsDeployment",
            "retryBudget",
            "createdAt",
            "updatedAt",
        )
        read_only_fields = fields

    @extend_schema_field(
        {
            "type": "object",
            "nullable": True,
            "properties": {"uuid": {"type": "string", "format": "uuid"}, "name": {"type": "string"}},
        }
    )
    def get_registeredBy(self, device: Device) -> dict | None:
        key = device.provisioned_by
        return {"uuid": str(key.uuid), "name": key.name} if key is not None else None

    @extend_schema_field(DRAFT_SUMMARY_SCHEMA)
    def get_draft(self, device: Device) -> dict | None:
        return draft_summary(device.target_draft_or_none())

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_reportedVersion(self, device: Device) -> int | None:
        current = device.current_state_or_none()
        return current.version if current else None


class DeviceWriteSerializer(serializers.Serializer):
    """Request body of device create / update (validated by the service; declared here for the schema)."""

    name = serializers.CharField(max_length=255)
    description = serializers.CharField(required=False, allow_blank=True)
    isActive = serializers.BooleanField(required=False)
    labels = serializers.DictField(
        child=serializers.CharField(allow_blank=True), required=False, help_text="Replaces the device's labels."
    )
    draftMode = serializers.BooleanField(required=False)


class DeviceKeySerializer(DeviceSerializer):
    # The key is never stored: it comes in the context, {"api_key": ...}. (A docstring would show in the schema.)
    apiKey = serializers.SerializerMethodField(help_text="Shown once: store it on the device now.")

    class Meta(DeviceSerializer.Meta):
        fields = (*DeviceSerializer.Meta.fields, "apiKey")
        read_only_fields = fields

    def get_apiKey(self, device: Device) -> str:
        return self.context["api_key"]


class TargetStateSerializer(serializers.ModelSerializer):
    deviceUuid = serializers.UUIDField(source="device.uuid", read_only=True)
    needsDeployment = serializers.BooleanField(source="needs_deployment", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)
    updatedBy = serializers.SerializerMethodField()
    lastDeployedAt = serializers.DateTimeField(source="last_deployed_at", read_only=True, allow_null=True)
    etag = serializers.CharField(read_only=True, help_text="The published version's ETag.")
    draft = serializers.SerializerMethodField(
        help_text="The undeployed draft of a device in draft mode, whole (config and apps), or null. Writes to a "
        "device with a draft go to it, and their If-Match is checked against its etag (the ETag header)."
    )

    class Meta:
        model = DeviceTargetState
        fields = (
            "deviceUuid",
            "version",
            "config",
            "apps",
            "needsDeployment",
            "updatedAt",
            "updatedBy",
            "lastDeployedAt",
            "etag",
            "draft",
        )
        read_only_fields = fields

    def get_updatedBy(self, target) -> str | None:
        return target.updated_by.get_username() if target.updated_by_id else None

    @extend_schema_field(
        {
            **DRAFT_SUMMARY_SCHEMA,
            "properties": {
                **DRAFT_SUMMARY_SCHEMA["properties"],  # type: ignore[dict-item]
                "config": {"type": "object"},
                "apps": {"type": "object"},
            },
        }
    )
    def get_draft(self, target: DeviceTargetState) -> dict | None:
        draft = target.device.target_draft_or_none()
        summary = draft_summary(draft)
        if draft is None or summary is None:
            return None
        return {**summary, "config": draft.config, "apps": draft.apps}


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
        fields = ("version", "config", "apps", "createdAt", "createdBy", "source", "change")
        read_only_fields = fields

    def get_createdBy(self, version) -> str | None:
        return version.created_by.get_username() if version.created_by_id else None


class RollbackSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, help_text="The earlier target version whose content to deploy.")


class ProvisioningKeyDeviceSerializer(serializers.ModelSerializer):
    registeredAt = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = Device
        fields = ("uuid", "name", "registeredAt")
        read_only_fields = fields


class ProvisioningKeySerializer(serializers.ModelSerializer):
    keyPrefix = serializers.CharField(source="key_prefix", read_only=True)
    expiresAt = serializers.DateTimeField(source="expires_at", read_only=True, allow_null=True)
    maxDevices = serializers.IntegerField(source="max_devices", read_only=True, allow_null=True)
    defaultLabels = serializers.DictField(
        source="default_labels",
        child=serializers.CharField(allow_blank=True),
        read_only=True,
        help_text="Labels every device it registers starts with.",
    )
    lastUsedAt = serializers.DateTimeField(source="last_used_at", read_only=True, allow_null=True)
    revokedAt = serializers.DateTimeField(source="revoked_at", read_only=True, allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    createdBy = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)
    revokedBy = serializers.CharField(source="revoked_by.username", read_only=True, allow_null=True, default=None)
    state = serializers.SerializerMethodField(help_text="active, revoked, expired or exhausted")
    devicesUrl = serializers.SerializerMethodField(help_text="The devices this key registered (filterable list).")

    class Meta:
        model = ProvisioningKey
        fields: tuple[str, ...] = (
            "uuid",
            "name",
            "keyPrefix",
            "state",
            "expiresAt",
            "maxDevices",
            "defaultLabels",
            "registrations",
            "lastUsedAt",
            "revokedAt",
            "revokedBy",
            "createdAt",
            "createdBy",
            "devicesUrl",
        )
        read_only_fields = fields

    def get_state(self, key: ProvisioningKey) -> str:
        refusal = key.refusal(timezone.now())
        return refusal[0].removeprefix("provisioning_key_") if refusal else "active"

    def get_devicesUrl(self, key: ProvisioningKey) -> str:
        return f"/api/v1/devices?registeredBy={key.uuid}"


class ProvisioningKeyDetailSerializer(ProvisioningKeySerializer):
    devices = serializers.SerializerMethodField(help_text=f"The newest {KEY_DEVICES_SHOWN} devices it registered.")

    class Meta(ProvisioningKeySerializer.Meta):
        fields = (*ProvisioningKeySerializer.Meta.fields, "devices")
        read_only_fields = fields

    @extend_schema_field(ProvisioningKeyDeviceSerializer(many=True))
    def get_devices(self, key: ProvisioningKey) -> list[dict]:
        return [ProvisioningKeyDeviceSerializer(device).data for device in provisioning_key_devices(key=key)]


class ProvisioningKeyCreatedSerializer(ProvisioningKeySerializer):
    # The key is never stored: it comes in the context, {"secret": ...}. (A docstring would show in the schema.)
    key = serializers.SerializerMethodField(help_text="The key itself: shown this once, stored only as a digest.")

    class Meta(ProvisioningKeySerializer.Meta):
        fields = (*ProvisioningKeySerializer.Meta.fields, "key")
        read_only_fields = fields

    def get_key(self, key: ProvisioningKey) -> str:
        return self.context["secret"]


class ProvisioningKeyWriteSerializer(serializers.Serializer):
    """Request body of provisioning key create (validated by the service; declared here for the schema)."""

    name = serializers.CharField(max_length=255)
    expiresAt = serializers.DateTimeField(required=False, allow_null=True)
    maxDevices = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    defaultLabels = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        help_text="Labels every device it registers starts with, {key: value}.",
    )


class LabelsChangeSerializer(serializers.Serializer):
    """Request body of a change of labels (validated by the service; declared here for the schema)."""

    set = serializers.DictField(
        child=serializers.CharField(allow_blank=True), required=False, help_text="Labels added or replaced."
    )
    remove = serializers.ListField(
        child=serializers.CharField(), required=False, help_text="Keys removed (an absent key is no error)."
    )


class DraftModeWriteSerializer(serializers.Serializer):
    enabled = serializers.BooleanField()


class BulkResultSerializer(serializers.Serializer):
    selector = serializers.CharField(help_text="The selector, in its canonical form.")
    matched = serializers.IntegerField(help_text="Devices it selected.")
    changed = serializers.IntegerField(help_text="Of which this call changed.")


class DeployResultSerializer(serializers.Serializer):
    selector = serializers.CharField(help_text="The selector, in its canonical form.")
    matched = serializers.IntegerField(help_text="Devices it selected that had a draft.")
    done = serializers.IntegerField(help_text="Drafts deployed (or discarded).")
    refused = serializers.DictField(child=serializers.CharField(), help_text="Device uuid -> why its draft was not.")
