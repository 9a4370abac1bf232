import uuid as uuid_lib

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from devices.models import Device
from events.choices import EventSourceChoices
from sensorsync_project.fields import JSONField

from .choices import RenderJobStatusChoices, RenderProblemKindChoices


class SensorTemplate(models.Model):
    """A named definition of one or more sensors, versioned: every change of its sensors is a new version
    (``SensorTemplateVersion``, kept for ever), and the assignments that follow it re-render their devices."""

    uuid = models.UUIDField(default=uuid_lib.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    version = models.PositiveIntegerField(default=1, editable=False, help_text="Its latest version.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.CheckConstraint(condition=models.Q(version__gte=1), name="template_version_positive")]

    def __str__(self) -> str:
        return self.name


class SensorTemplateVersion(models.Model):
    """One version of a template's sensors: complete sensor objects (SPEC section 3) without ids. Never changed."""

    template = models.ForeignKey(SensorTemplate, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    sensors = JSONField(encoder=DjangoJSONEncoder)
    note = models.CharField(max_length=255, blank=True, help_text="What changed, for the history.")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        ordering = ["template", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["template", "version"], name="template_version_unique"),
            models.CheckConstraint(condition=models.Q(version__gte=1), name="template_history_version_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.template_id} v{self.version}"


class Assignment(models.Model):
    """A template's sensors rendered on every device its label selector selects, at a priority: of two assignments
    rendering a sensor of the same name, the higher priority wins; equal priorities that disagree are a conflict."""

    uuid = models.UUIDField(default=uuid_lib.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    template = models.ForeignKey(SensorTemplate, on_delete=models.PROTECT, related_name="assignments")
    template_version = models.PositiveIntegerField(
        null=True, blank=True, help_text="A version to stay on; empty: always the template's latest."
    )
    selector = models.CharField(
        max_length=4000, blank=True, help_text="A label selector in its canonical form; empty selects every device."
    )
    priority = models.IntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        ordering = ["-priority", "name", "id"]

    def __str__(self) -> str:
        return self.name


class AssignmentHold(models.Model):
    """An assignment held at an earlier template version while its change goes out in stages: the devices it
    selects keep rendering ``version``, except those released (``AssignmentHoldRelease``), which render what the
    assignment itself says (its pinned version, or its template's latest). Written by whoever stages the change (the
    ``rollouts`` app); rendering only reads it. At most one hold per assignment."""

    assignment = models.OneToOneField(Assignment, on_delete=models.CASCADE, related_name="hold")
    version = models.PositiveIntegerField(help_text="The template version the devices not released keep rendering.")
    reason = models.CharField(max_length=255, blank=True, help_text="Who holds it and why (a rollout).")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["assignment"]
        constraints = [models.CheckConstraint(condition=models.Q(version__gte=1), name="assignment_hold_version")]

    def __str__(self) -> str:
        return f"{self.assignment_id} held at v{self.version}"


class AssignmentHoldRelease(models.Model):
    """A device let through a hold: it renders the assignment's own version."""

    hold = models.ForeignKey(AssignmentHold, on_delete=models.CASCADE, related_name="releases")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="+")
    released_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["hold", "device"]
        constraints = [models.UniqueConstraint(fields=["hold", "device"], name="assignment_hold_release_unique")]
        indexes = [models.Index(fields=["device", "hold"], name="hold_release_device_idx")]

    def __str__(self) -> str:
        return f"{self.device_id} released from {self.hold_id}"


class SensorOverride(models.Model):
    """One field of one rendered sensor, set for one device: it wins over every template."""

    uuid = models.UUIDField(default=uuid_lib.uuid4, unique=True, editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="sensor_overrides")
    sensor_name = models.CharField(max_length=255)
    field = models.CharField(max_length=300, help_text="A sensor field, or one key of connection or metadata.")
    value = JSONField(encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    updated_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )

    class Meta:
        ordering = ["device", "sensor_name", "field"]
        constraints = [
            models.UniqueConstraint(fields=["device", "sensor_name", "field"], name="sensor_override_unique")
        ]

    def __str__(self) -> str:
        return f"{self.sensor_name}.{self.field}"


class RenderProblem(models.Model):
    """Why a device's rendering is not what its assignments ask for, as its last render found it: one row per
    sensor and assignment involved (a conflict of two assignments is two rows), so both the device and each
    assignment list their problems from an index."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="render_problems")
    assignment = models.ForeignKey(
        Assignment, null=True, blank=True, on_delete=models.CASCADE, related_name="render_problems"
    )
    sensor_name = models.CharField(max_length=255, blank=True)
    kind = models.CharField(max_length=16, choices=RenderProblemKindChoices.choices)
    message = models.TextField()
    found_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["device", "sensor_name", "id"]
        indexes = [models.Index(fields=["assignment", "device"], name="render_problem_assignment_idx")]

    def __str__(self) -> str:
        return f"{self.kind}: {self.sensor_name}"


class RenderJob(models.Model):
    """A re-render of the devices a change may affect, in batches, with its progress: run at once after a small
    change, else queued for ``manage.py render_fleet`` (see ``fleetconfig.services.render_job_run``)."""

    uuid = models.UUIDField(default=uuid_lib.uuid4, unique=True, editable=False)
    status = models.CharField(
        max_length=16, choices=RenderJobStatusChoices.choices, default=RenderJobStatusChoices.QUEUED
    )
    reason = models.CharField(max_length=255)
    # Which devices: {"all": true}, {"selectors": [...]} (the devices any of them selects) or {"devices": [ids]}.
    scope = JSONField(encoder=DjangoJSONEncoder)
    total = models.PositiveIntegerField(default=0, help_text="Devices in scope when the job was created.")
    processed = models.PositiveIntegerField(default=0)
    changed = models.PositiveIntegerField(default=0, help_text="Devices given a new target version (or draft).")
    unchanged = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    with_problems = models.PositiveIntegerField(default=0, help_text="Devices rendered with a problem.")
    last_device_id = models.BigIntegerField(default=0, help_text="Where a resumed run goes on from.")
    errors = JSONField(default=list, encoder=DjangoJSONEncoder, help_text="The first failures, with the device.")
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    source = models.CharField(max_length=16, choices=EventSourceChoices.choices, default=EventSourceChoices.SYSTEM)
    actor = models.CharField(max_length=255, blank=True)
    correlation_id = models.UUIDField(default=uuid_lib.uuid4, help_text="Shared with the events of the change.")
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "id"], name="render_job_status_idx")]

    def __str__(self) -> str:
        return f"render job {self.uuid} ({self.status})"


class DeviceConfiguration(Device):
    """A device as the fleet configuration sees it (its labels, rendered sensors and where each field came from):
    the admin's page for it. No table of its own."""

    class Meta:
        proxy = True
        verbose_name = "device configuration"
        verbose_name_plural = "device configurations"
