import uuid as uuid_lib

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from devices.models import Device
from events.choices import EventSourceChoices
from fleetconfig.models import Assignment, SensorTemplate
from sensorsync_project.fields import JSONField

from .choices import RolloutKindChoices, RolloutPauseReasonChoices, RolloutStatusChoices


class Rollout(models.Model):
    """A template or assignment change going out in stages (docs/rollouts.md): its assignments are held at
    ``from_version`` (``fleetconfig.models.AssignmentHold``) and devices are admitted to ``to_version`` stage by
    stage, each stage once the one before reached the success threshold; failures over the error threshold pause
    it. ``manage.py drive_rollouts`` moves it on."""

    uuid = models.UUIDField(default=uuid_lib.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=RolloutKindChoices.choices)
    template = models.ForeignKey(SensorTemplate, on_delete=models.PROTECT, related_name="rollouts")
    assignments = models.ManyToManyField(Assignment, related_name="rollouts", blank=True)
    from_version = models.PositiveIntegerField(help_text="The template version the fleet ran before.")
    to_version = models.PositiveIntegerField(help_text="The template version going out.")
    # For an assignment change, what the assignment was pinned to before (None: it followed the latest).
    previous_pin = models.PositiveIntegerField(null=True, blank=True)
    selector = models.CharField(
        max_length=4000, blank=True, help_text="Narrows the devices the stages count; empty: all the assignments'."
    )
    # [{"percent": 10}, {"selector": "site=lab"}, ...]; the last one admits every device left.
    stages = JSONField(encoder=DjangoJSONEncoder)
    success_threshold = models.PositiveSmallIntegerField(
        default=95, help_text="% of a stage's online devices deployed before the next stage starts."
    )
    error_threshold = models.PositiveSmallIntegerField(
        default=10, help_text="% of the admitted online devices failed that pauses the rollout."
    )
    deadline_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="A device not deployed this long after its admission counts as failed."
    )
    status = models.CharField(max_length=16, choices=RolloutStatusChoices.choices, default=RolloutStatusChoices.RUNNING)
    current_stage = models.PositiveSmallIntegerField(default=0)
    stage_started_at = models.DateTimeField(null=True, blank=True)
    pause_reason = models.CharField(
        max_length=16, choices=RolloutPauseReasonChoices.choices, blank=True, default=RolloutPauseReasonChoices.NONE
    )
    pause_detail = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=16, choices=EventSourceChoices.choices, default=EventSourceChoices.SYSTEM)
    actor = models.CharField(max_length=255, blank=True)
    correlation_id = models.UUIDField(default=uuid_lib.uuid4, help_text="Shared with the events of the rollout.")
    # The driver's lease (``services.rollout_claim``): one driver at a time moves a rollout on.
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "id"], name="rollout_status_idx")]
        constraints = [
            models.CheckConstraint(condition=models.Q(success_threshold__lte=100), name="rollout_success_pct"),
            models.CheckConstraint(condition=models.Q(error_threshold__lte=100), name="rollout_error_pct"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def active(self) -> bool:
        return self.status in (RolloutStatusChoices.RUNNING, RolloutStatusChoices.PAUSED)


class RolloutDevice(models.Model):
    """A device a rollout admitted: at which stage, its target version before, and the version its admission wrote
    (null until the re-render is done: a driver killed in between finishes it at its next pass)."""

    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="devices")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+")
    stage = models.PositiveSmallIntegerField()
    before_version = models.PositiveIntegerField()
    target_version = models.PositiveIntegerField(null=True, blank=True)
    draft = models.BooleanField(default=False, help_text="In draft mode at admission: the change went to its draft.")
    admitted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["rollout", "stage", "device"]
        constraints = [models.UniqueConstraint(fields=["rollout", "device"], name="rollout_device_unique")]
        indexes = [models.Index(fields=["rollout", "stage"], name="rollout_device_stage_idx")]

    def __str__(self) -> str:
        return f"{self.device_id} in {self.rollout_id} (stage {self.stage})"
