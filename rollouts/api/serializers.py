"""The rollouts' API representations. Writes are read from the body by the views (``body_fields``) and validated
by the services; the ``*WriteSerializer`` classes only describe request bodies in the schema."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..choices import RolloutKindChoices, RolloutPauseReasonChoices, RolloutStatusChoices
from ..models import Rollout

STAGES_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "description": 'Stages, in order: {"percent": 1 to 100} (of the devices the rollout counts, growing) or '
    '{"selector": "<label selector>"} (the devices it selects among them).',
    "items": {
        "type": "object",
        "properties": {
            "percent": {"type": "integer", "minimum": 1, "maximum": 100},
            "selector": {"type": "string"},
        },
    },
}


SENSORS_SCHEMA = {
    "type": "array",
    "minItems": 1,
    "description": "The template's new sensors: complete sensor objects (SPEC section 3) without ids.",
    "items": {"type": "object"},
}


@extend_schema_field(SENSORS_SCHEMA)
class SensorsField(serializers.JSONField):
    pass


@extend_schema_field(STAGES_SCHEMA)
class StagesField(serializers.JSONField):
    pass


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField()
    devices = serializers.IntegerField()


class StageProgressSerializer(serializers.Serializer):
    stage = serializers.IntegerField(help_text="The stage's index (-1: the whole rollout).")
    title = serializers.CharField(help_text='The stage as staff wrote it: "10%" or a selector.')
    targeted = serializers.IntegerField(help_text="Devices admitted.")
    fetched = serializers.IntegerField(help_text="Devices whose agent fetched the version (or a later one).")
    applied = serializers.IntegerField(help_text="Devices whose agent reports running it, deployed or not.")
    deployed = serializers.IntegerField(help_text="Devices with every sensor deployed at it.")
    failed = serializers.IntegerField(help_text="Online devices failed: a sensor, the retry budget or the deadline.")
    offline = serializers.IntegerField(help_text="Devices offline, not deployed: counted apart, never as failed.")
    draft = serializers.IntegerField(help_text="Devices in draft mode: the change waits in their draft.")
    reasons = ReasonSerializer(many=True, help_text="Why devices failed, most frequent first.")


class RolloutSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=RolloutKindChoices.choices, read_only=True)
    status = serializers.ChoiceField(choices=RolloutStatusChoices.choices, read_only=True)
    template = serializers.UUIDField(source="template.uuid", read_only=True)
    templateName = serializers.CharField(source="template.name", read_only=True)
    assignments = serializers.SerializerMethodField()
    fromVersion = serializers.IntegerField(source="from_version", read_only=True)
    toVersion = serializers.IntegerField(source="to_version", read_only=True)
    stages = serializers.SerializerMethodField()
    successThreshold = serializers.IntegerField(source="success_threshold", read_only=True)
    errorThreshold = serializers.IntegerField(source="error_threshold", read_only=True)
    deadlineSeconds = serializers.IntegerField(source="deadline_seconds", read_only=True, allow_null=True)
    currentStage = serializers.IntegerField(source="current_stage", read_only=True, help_text="From 0.")
    pauseReason = serializers.ChoiceField(
        source="pause_reason", choices=RolloutPauseReasonChoices.choices, read_only=True
    )
    pauseDetail = serializers.CharField(source="pause_detail", read_only=True)
    progress = serializers.SerializerMethodField(help_text="The whole rollout's progress.")
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    createdBy = serializers.SerializerMethodField()
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)
    finishedAt = serializers.DateTimeField(source="finished_at", read_only=True, allow_null=True)

    class Meta:
        model = Rollout
        fields: tuple[str, ...] = (
            "uuid",
            "name",
            "kind",
            "status",
            "template",
            "templateName",
            "assignments",
            "fromVersion",
            "toVersion",
            "selector",
            "stages",
            "successThreshold",
            "errorThreshold",
            "deadlineSeconds",
            "currentStage",
            "pauseReason",
            "pauseDetail",
            "progress",
            "createdAt",
            "createdBy",
            "updatedAt",
            "finishedAt",
        )
        read_only_fields: tuple[str, ...] = fields

    def get_assignments(self, obj) -> list[str]:
        return [str(a.uuid) for a in obj.assignments.all()]

    @extend_schema_field(STAGES_SCHEMA)
    def get_stages(self, obj):
        return obj.stages

    def get_createdBy(self, obj) -> str | None:
        return obj.created_by.get_username() if obj.created_by else None

    @extend_schema_field(StageProgressSerializer)
    def get_progress(self, obj):
        return self.context["progress"][obj.pk].total.as_dict()


class RolloutDetailSerializer(RolloutSerializer):
    stageProgress = serializers.SerializerMethodField(help_text="Each stage's progress, in order.")

    class Meta(RolloutSerializer.Meta):
        fields: tuple[str, ...] = (*RolloutSerializer.Meta.fields, "stageProgress")
        read_only_fields: tuple[str, ...] = fields

    @extend_schema_field(StageProgressSerializer(many=True))
    def get_stageProgress(self, obj):
        return [stage.as_dict() for stage in self.context["progress"][obj.pk].stages]


class RolloutWriteSerializer(serializers.Serializer):
    """A new rollout: a template change (``kind`` template: ``template``, ``sensors``, ``note``) or an assignment
    change (``kind`` assignment: ``assignment``, ``templateVersion``), with its stages and thresholds."""

    name = serializers.CharField(max_length=100)
    kind = serializers.ChoiceField(choices=RolloutKindChoices.choices)
    template = serializers.UUIDField(required=False)
    sensors = SensorsField(required=False, help_text="kind template: the new version's sensors.")
    note = serializers.CharField(required=False, max_length=255)
    assignment = serializers.UUIDField(required=False)
    templateVersion = serializers.IntegerField(required=False)
    stages = StagesField(required=False, help_text="Default: 1%, 10%, 100%.")
    successThreshold = serializers.IntegerField(required=False, min_value=0, max_value=100, help_text="Default 95.")
    errorThreshold = serializers.IntegerField(required=False, min_value=0, max_value=100, help_text="Default 10.")
    deadlineSeconds = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    selector = serializers.CharField(required=False, allow_blank=True)


class RolloutResumeSerializer(serializers.Serializer):
    successThreshold = serializers.IntegerField(required=False, min_value=0, max_value=100)
    errorThreshold = serializers.IntegerField(required=False, min_value=0, max_value=100)
