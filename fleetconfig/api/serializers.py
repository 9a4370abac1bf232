"""The fleet configuration's API representations. Writes are read from the body by the views (``body_fields``) and
validated by the services; the ``*WriteSerializer`` classes only describe request bodies in the schema."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from sensors.choices import DeviceSensorProtocolChoices
from sensors.validation import POLL_INTERVAL_MAX, POLL_INTERVAL_MIN

from ..choices import RenderJobStatusChoices, RenderProblemKindChoices
from ..models import Assignment, RenderJob, RenderProblem, SensorOverride, SensorTemplate, SensorTemplateVersion
from ..rendering import OVERRIDE_FIELDS, OVERRIDE_OBJECT_FIELDS

SENSOR_SCHEMA = {
    "type": "object",
    "description": "A sensor object (SPEC section 3), without id: a rendered sensor's id is its device's.",
    "required": ["name", "protocol", "connection"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[A-Za-z0-9._-]+$"},
        "protocol": {"type": "string", "enum": DeviceSensorProtocolChoices.values},
        "enabled": {"type": "boolean"},
        "pollInterval": {"type": "integer", "minimum": POLL_INTERVAL_MIN, "maximum": POLL_INTERVAL_MAX},
        "connection": {"type": "object"},
        "dataPoints": {"type": "array", "items": {"type": "object"}},
        "metadata": {"type": "object"},
    },
}
SENSORS_SCHEMA = {"type": "array", "minItems": 1, "items": SENSOR_SCHEMA}
SOURCE_SCHEMA = {
    "type": "object",
    "description": "Where a field came from: kind `own` (the device's own sensor), `template` (a template version "
    "through an assignment), `override` (a per-device override) or `held` (kept as rendered before: `reason`).",
    "required": ["kind"],
    "properties": {
        "kind": {"type": "string", "enum": ["own", "template", "override", "held"]},
        "template": {"type": "string"},
        "templateUuid": {"type": "string", "format": "uuid"},
        "version": {"type": "integer"},
        "assignment": {"type": "string"},
        "assignmentUuid": {"type": "string", "format": "uuid"},
        "priority": {"type": "integer"},
        "override": {"type": "string", "format": "uuid"},
        "reason": {"type": "string"},
    },
}
DIFF_SCHEMA = {
    "type": "object",
    "description": "By sensor name: added, removed, and for each sensor changed each field's value before and after.",
    "properties": {
        "added": {"type": "array", "items": {"type": "string"}},
        "removed": {"type": "array", "items": {"type": "string"}},
        "updated": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": {"type": "object", "properties": {"before": {}, "after": {}}},
            },
        },
    },
}
PROBLEM_SCHEMA = {
    "type": "object",
    "properties": {
        "sensor": {"type": "string"},
        "kind": {"type": "string", "enum": RenderProblemKindChoices.values},
        "message": {"type": "string"},
        "assignments": {"type": "array", "items": {"type": "string", "format": "uuid"}},
    },
}


def _username(user) -> str | None:
    return user.get_username() if user is not None else None


class _Audited(serializers.Serializer):
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    createdBy = serializers.SerializerMethodField()
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)
    updatedBy = serializers.SerializerMethodField()

    def get_createdBy(self, obj) -> str | None:
        return _username(obj.created_by)

    def get_updatedBy(self, obj) -> str | None:
        return _username(obj.updated_by)


@extend_schema_field(SENSORS_SCHEMA)
class SensorsField(serializers.JSONField):
    pass


class SensorTemplateSerializer(_Audited, serializers.ModelSerializer):
    sensors = SensorsField(source="latest_sensors", read_only=True, help_text="The latest version's sensors.")
    assignmentCount = serializers.IntegerField(source="assignment_count", read_only=True)

    class Meta:
        model = SensorTemplate
        fields: tuple[str, ...] = (
            "uuid",
            "name",
            "description",
            "version",
            "sensors",
            "assignmentCount",
            "createdAt",
            "createdBy",
            "updatedAt",
            "updatedBy",
        )
        read_only_fields = fields


class SensorTemplateWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True)
    sensors = SensorsField(help_text="Complete sensor objects; a change makes a new version.")
    note = serializers.CharField(
        required=False, allow_blank=True, max_length=255, help_text="What this version changes."
    )


class SensorTemplateVersionSerializer(serializers.ModelSerializer):
    sensors = SensorsField(read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    createdBy = serializers.SerializerMethodField()

    class Meta:
        model = SensorTemplateVersion
        fields = ("version", "sensors", "note", "createdAt", "createdBy")
        read_only_fields = fields

    def get_createdBy(self, obj) -> str | None:
        return _username(obj.created_by)


class RenderJobSerializer(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=RenderJobStatusChoices.choices, read_only=True)
    scope = serializers.JSONField(read_only=True, help_text='{"all": true}, {"selectors": [...]} or {"devices": [ids]}')
    withProblems = serializers.IntegerField(source="with_problems", read_only=True)
    progress = serializers.SerializerMethodField(help_text="Percent of the devices in scope processed.")
    failures = serializers.ListField(
        source="errors",
        child=serializers.CharField(),
        read_only=True,
        help_text="The first devices it could not write.",
    )
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    createdBy = serializers.SerializerMethodField()
    startedAt = serializers.DateTimeField(source="started_at", read_only=True, allow_null=True)
    finishedAt = serializers.DateTimeField(source="finished_at", read_only=True, allow_null=True)

    class Meta:
        model = RenderJob
        fields = (
            "uuid",
            "status",
            "reason",
            "scope",
            "total",
            "processed",
            "changed",
            "unchanged",
            "failed",
            "withProblems",
            "progress",
            "failures",
            "createdAt",
            "createdBy",
            "startedAt",
            "finishedAt",
        )
        read_only_fields = fields

    def get_progress(self, obj) -> int:
        if obj.status == RenderJobStatusChoices.DONE or not obj.total:
            return 100 if obj.status == RenderJobStatusChoices.DONE else 0
        return min(100, obj.processed * 100 // obj.total)

    def get_createdBy(self, obj) -> str | None:
        return _username(obj.created_by)


class RenderJobRequestSerializer(serializers.Serializer):
    all = serializers.BooleanField(required=False)
    selector = serializers.CharField(required=False, help_text="Re-render the devices this label selector selects.")
    devices = serializers.ListField(child=serializers.UUIDField(), required=False)


class _WithRenderJob(serializers.Serializer):
    renderJob = serializers.SerializerMethodField(help_text="The re-render this change started; null: none needed.")

    @extend_schema_field(RenderJobSerializer(allow_null=True))
    def get_renderJob(self, obj):
        job = self.context.get("job")
        if job is None:
            return None
        job.refresh_from_db()  # a small job ran once the change committed
        return RenderJobSerializer(job).data


class SensorTemplateChangeSerializer(_WithRenderJob, SensorTemplateSerializer):
    class Meta(SensorTemplateSerializer.Meta):
        fields = (*SensorTemplateSerializer.Meta.fields, "renderJob")
        read_only_fields = fields


class TemplatePreviewRequestSerializer(serializers.Serializer):
    sensors = SensorsField(help_text="The sensors of the version this would make.")


class AssignmentSerializer(_Audited, serializers.ModelSerializer):
    template = serializers.UUIDField(source="template.uuid", read_only=True)
    templateName = serializers.CharField(source="template.name", read_only=True)
    templateVersion = serializers.IntegerField(
        source="template_version", read_only=True, allow_null=True, help_text="Pinned version; null: the latest."
    )
    renderedVersion = serializers.SerializerMethodField(help_text="The template version it renders now.")
    devicesWithProblems = serializers.IntegerField(source="devices_with_problems", read_only=True)

    class Meta:
        model = Assignment
        fields: tuple[str, ...] = (
            "uuid",
            "name",
            "description",
            "template",
            "templateName",
            "templateVersion",
            "renderedVersion",
            "selector",
            "priority",
            "devicesWithProblems",
            "createdAt",
            "createdBy",
            "updatedAt",
            "updatedBy",
        )
        read_only_fields = fields

    def get_renderedVersion(self, obj) -> int:
        return obj.template_version or obj.template.version


class RenderProblemSerializer(serializers.ModelSerializer):
    device = serializers.UUIDField(source="device.uuid", read_only=True)
    deviceName = serializers.CharField(source="device.name", read_only=True)
    assignment = serializers.SerializerMethodField()
    sensor = serializers.CharField(source="sensor_name", read_only=True)
    kind = serializers.ChoiceField(choices=RenderProblemKindChoices.choices, read_only=True)
    foundAt = serializers.DateTimeField(source="found_at", read_only=True)

    class Meta:
        model = RenderProblem
        fields = ("id", "device", "deviceName", "assignment", "sensor", "kind", "message", "foundAt")
        read_only_fields = fields

    def get_assignment(self, obj) -> str | None:
        return str(obj.assignment.uuid) if obj.assignment_id else None


class AssignmentCountsSerializer(serializers.Serializer):
    targeted = serializers.IntegerField(help_text="Devices its selector selects now.")
    converged = serializers.IntegerField(help_text="Of those, devices whose agent runs their target exactly.")
    withProblems = serializers.IntegerField(
        source="with_problems", help_text="Devices whose last render found a problem this assignment is part of."
    )


class AssignmentDetailSerializer(AssignmentSerializer):
    counts = serializers.SerializerMethodField()
    problems = serializers.SerializerMethodField(help_text="The first problems found, newest renders first.")

    class Meta(AssignmentSerializer.Meta):
        fields = (*AssignmentSerializer.Meta.fields, "counts", "problems")
        read_only_fields = fields

    @extend_schema_field(AssignmentCountsSerializer)
    def get_counts(self, obj):
        return AssignmentCountsSerializer(self.context["counts"]).data

    @extend_schema_field(RenderProblemSerializer(many=True))
    def get_problems(self, obj):
        return RenderProblemSerializer(self.context["problems"], many=True).data


class AssignmentChangeSerializer(_WithRenderJob, AssignmentSerializer):
    class Meta(AssignmentSerializer.Meta):
        fields = (*AssignmentSerializer.Meta.fields, "renderJob")
        read_only_fields = fields


class AssignmentWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(required=False, allow_blank=True)
    template = serializers.UUIDField(help_text="The template's uuid.")
    templateVersion = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, help_text="A version to stay on; null: always the latest."
    )
    selector = serializers.CharField(
        allow_blank=True, help_text="A label selector (plant=3,role in (boiler,chiller)); empty selects every device."
    )
    priority = serializers.IntegerField(required=False, help_text="Higher wins; equal priorities must agree.")


class AssignmentDeleteSerializer(_WithRenderJob, serializers.Serializer):
    pass


OVERRIDE_FIELD_HELP = (
    f"One of {', '.join(OVERRIDE_FIELDS)}, or one key of {' or '.join(OVERRIDE_OBJECT_FIELDS)} ('connection.host')."
)


class SensorOverrideSerializer(_Audited, serializers.ModelSerializer):
    device = serializers.UUIDField(source="device.uuid", read_only=True)
    deviceName = serializers.CharField(source="device.name", read_only=True)
    sensor = serializers.CharField(source="sensor_name", read_only=True)
    field = serializers.CharField(read_only=True, help_text=OVERRIDE_FIELD_HELP)
    value = serializers.JSONField(read_only=True)

    class Meta:
        model = SensorOverride
        fields: tuple[str, ...] = (
            "uuid",
            "device",
            "deviceName",
            "sensor",
            "field",
            "value",
            "createdAt",
            "createdBy",
            "updatedAt",
            "updatedBy",
        )
        read_only_fields = fields


class SensorOverrideChangeSerializer(SensorOverrideSerializer):
    rendered = serializers.SerializerMethodField(help_text="The device got a new target version (or draft).")
    applied = serializers.SerializerMethodField(
        help_text="An assignment renders the sensor on the device, so the override is in its configuration now."
    )

    class Meta(SensorOverrideSerializer.Meta):
        fields = (*SensorOverrideSerializer.Meta.fields, "rendered", "applied")
        read_only_fields = fields

    def get_rendered(self, obj) -> bool:
        return self.context["change"].rendered

    def get_applied(self, obj) -> bool:
        return self.context["change"].applied


class SensorOverrideWriteSerializer(serializers.Serializer):
    device = serializers.UUIDField()
    sensor = serializers.CharField(max_length=255)
    field = serializers.CharField(help_text=OVERRIDE_FIELD_HELP)
    value = serializers.JSONField()


class SensorOverrideValueSerializer(serializers.Serializer):
    value = serializers.JSONField()


class DeviceChangeSerializer(serializers.Serializer):
    device = serializers.UUIDField(source="device_uuid")
    deviceName = serializers.CharField(source="device_name")
    draft = serializers.BooleanField(help_text="The change would collect in the device's draft (draft mode).")
    diff = serializers.SerializerMethodField()
    problems = serializers.SerializerMethodField()

    @extend_schema_field(DIFF_SCHEMA)
    def get_diff(self, obj):
        return obj.diff

    @extend_schema_field({"type": "array", "items": PROBLEM_SCHEMA})
    def get_problems(self, obj):
        return obj.problems


class PreviewSerializer(serializers.Serializer):
    devices = serializers.IntegerField(help_text="Devices the change reaches.")
    changed = serializers.IntegerField(help_text="Of which would get a new target version (or draft).")
    unchanged = serializers.IntegerField()
    withProblems = serializers.IntegerField(source="with_problems")
    truncated = serializers.BooleanField(help_text="More devices change than `changes` lists (see ?limit=).")
    changes = DeviceChangeSerializer(many=True)


class RenderedSensorSerializer(serializers.Serializer):
    name = serializers.CharField()
    origin = serializers.ChoiceField(choices=["own", "template", "held"])
    sensor = serializers.SerializerMethodField(help_text="As the device's desired configuration has it (rendered).")
    sources = serializers.SerializerMethodField(help_text="Where each field came from; keys like connection.host too.")
    assignments = serializers.SerializerMethodField(help_text="The assignments that render this sensor name.")

    @extend_schema_field({"type": "object"})
    def get_sensor(self, obj):
        return obj["sensor"]

    @extend_schema_field({"type": "object", "additionalProperties": SOURCE_SCHEMA})
    def get_sources(self, obj):
        return obj.get("fields", {})

    @extend_schema_field({"type": "array", "items": {"type": "object"}})
    def get_assignments(self, obj):
        return obj.get("assignments", [])


class RenderingOverrideSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    sensor = serializers.CharField()
    field = serializers.CharField()
    value = serializers.JSONField()
    applied = serializers.BooleanField(help_text="False: no assignment renders this sensor on the device.")


class MatchedAssignmentSerializer(serializers.Serializer):
    uuid = serializers.UUIDField()
    name = serializers.CharField()
    priority = serializers.IntegerField()
    template = serializers.CharField()
    version = serializers.IntegerField()


class DeviceRenderingSerializer(serializers.Serializer):
    device = serializers.UUIDField()
    name = serializers.CharField()
    labels = serializers.DictField(child=serializers.CharField(allow_blank=True))
    draft = serializers.BooleanField(help_text="Its desired configuration here is its draft (draft mode).")
    upToDate = serializers.BooleanField(
        help_text="Its desired configuration is what its assignments and overrides render now (else a re-render is "
        "on its way: `pending` says what it will change)."
    )
    pending = serializers.SerializerMethodField()
    assignments = MatchedAssignmentSerializer(many=True, help_text="The assignments whose selector matches it.")
    sensors = RenderedSensorSerializer(many=True)
    problems = serializers.SerializerMethodField()
    overrides = RenderingOverrideSerializer(many=True)

    @extend_schema_field(DIFF_SCHEMA)
    def get_pending(self, obj):
        return obj["pending"]

    @extend_schema_field({"type": "array", "items": PROBLEM_SCHEMA})
    def get_problems(self, obj):
        return obj["problems"]
