from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from devices.models import Device
from sensors.choices import DeviceSensorProtocolChoices

from .choices import DriftEpisodeCauseChoices


class DriftEpisode(models.Model):
    """One stretch of time a device was not converged, from the first drift to ``device.in_sync``.

    Opened and updated only on drift transitions (the same moments as the drift events), never per report.
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="drift_episodes")
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    cause = models.CharField(max_length=16, choices=DriftEpisodeCauseChoices.choices)
    start_target_version = models.PositiveIntegerField()
    start_reported_version = models.PositiveIntegerField(null=True, blank=True)
    end_target_version = models.PositiveIntegerField(null=True, blank=True)
    # The drifting set as last seen (kept when the episode ends): [{"name", "protocol", "status", "error"}].
    drifting_sensors = models.JSONField(default=list, encoder=DjangoJSONEncoder)

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
    def duration(self):
        return (self.ended_at or timezone.now()) - self.started_at


class DriftEpisodeSensor(models.Model):
    """A sensor that drifted during an episode: what makes time-in-drift queryable per protocol."""

    episode = models.ForeignKey(DriftEpisode, on_delete=models.CASCADE, related_name="sensors")
    name = models.CharField(max_length=255)
    protocol = models.CharField(max_length=16, choices=DeviceSensorProtocolChoices.choices)
    first_status = models.CharField(max_length=16)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["episode", "name"], name="drift_episode_sensor_unique")]
        indexes = [models.Index(fields=["protocol"], name="drift_sensor_protocol_idx")]

    def __str__(self) -> str:
        return f"{self.name} ({self.protocol})"
