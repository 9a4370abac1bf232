from datetime import timedelta

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from devices.models import Device
from sensorsync_project.fields import JSONField

from .choices import DriftEpisodeCauseChoices


class DriftEpisode(models.Model):
    """One stretch of time a device was not converged, from the first drift to ``device.in_sync``.

    Written twice: inserted when drift starts and updated when it ends. While it is open, the sensors that drift
    are gathered on the device's target state (``DeviceTargetState.drift``), which every drift transition rewrites
    anyway, so a report that changes the drifting set costs no extra statement.
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="drift_episodes")
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    cause = models.CharField(max_length=16, choices=DriftEpisodeCauseChoices.choices)
    start_target_version = models.PositiveIntegerField()
    start_reported_version = models.PositiveIntegerField(null=True, blank=True)
    end_target_version = models.PositiveIntegerField(null=True, blank=True)
    # The drifting set when the episode started, then (once it ended) just before it ended:
    # [{"name", "protocol", "status", "error"}].
    drifting_sensors = JSONField(default=list, encoder=DjangoJSONEncoder)
    # Every sensor that drifted during the episode: [{"name", "protocol", "first_status"}] (complete once ended).
    sensors = JSONField(default=list, encoder=DjangoJSONEncoder)
    # {protocol: number of sensors}: "which episodes involved modbus" is ``protocols__has_key="modbus"``.
    protocols = JSONField(default=dict, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["device"], condition=models.Q(ended_at__isnull=True), name="one_open_drift_episode_per_device"
            ),
            models.CheckConstraint(
                condition=models.Q(ended_at__isnull=True) | models.Q(ended_at__gte=models.F("started_at")),
                name="drift_episode_ends_after_start",
            ),
        ]
        indexes = [
            models.Index(fields=["device", "started_at"], name="drift_device_started_idx"),
            models.Index(fields=["started_at"], name="drift_started_idx"),
        ]

    def __str__(self) -> str:
        return f"drift of {self.device_id} from {self.started_at:%Y-%m-%d %H:%M}"

    @property
    def duration(self) -> timedelta:
        return (self.ended_at or timezone.now()) - self.started_at
