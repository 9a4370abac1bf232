import uuid

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from devices.models import Device
from sensorsync_project.fields import JSONField

from .choices import (
    DeviceSensorDeploymentStatusChoices,
    DeviceSensorHealthStatusChoices,
    DeviceSensorProtocolChoices,
)


class DeviceSensor(models.Model):
    """The read model: one row per sensor that is desired or running, written only by reconciliation.

    Its content is a function of (target state, last accepted report); see ``reconciliation.decision``.
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="sensors")
    sensor_id = models.UUIDField(default=uuid.uuid4, help_text="The sensor's id in the target configuration.")
    name = models.CharField(max_length=255)
    protocol = models.CharField(max_length=16, choices=DeviceSensorProtocolChoices.choices)
    enabled = models.BooleanField(default=True)
    poll_interval = models.PositiveIntegerField(default=5000, help_text="Milliseconds.")
    connection = JSONField(default=dict, encoder=DjangoJSONEncoder)
    data_points = JSONField(default=list, encoder=DjangoJSONEncoder)
    metadata = JSONField(default=dict, encoder=DjangoJSONEncoder)
    config_version = models.PositiveIntegerField()
    synced_to_config = models.BooleanField(default=False)
    deployment_status = models.CharField(
        max_length=16,
        choices=DeviceSensorDeploymentStatusChoices.choices,
        default=DeviceSensorDeploymentStatusChoices.PENDING,
    )
    running = models.BooleanField(default=False)
    last_deployed_at = models.DateTimeField(null=True, blank=True)
    deployment_error = models.TextField(blank=True)
    deployment_attempts = models.PositiveIntegerField(default=0)
    # The applied version of the last failure counted in deployment_attempts (attempts count distinct versions).
    failed_at_version = models.PositiveIntegerField(null=True, blank=True, editable=False)
    status_changed_at = models.DateTimeField(default=timezone.now)
    desired = JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    # Fields of the running sensor the agent did not report (the 2025-11-22 agent sends no dataPoints): the row
    # shows the desired value there, and it is never counted as a difference.
    unreported_fields = JSONField(default=list, blank=True, encoder=DjangoJSONEncoder)
    # The adapter's own view (agent health maps): a sensor can be deployed and running but unable to reach its PLC.
    health_status = models.CharField(
        max_length=16, choices=DeviceSensorHealthStatusChoices.choices, blank=True, default=""
    )
    connected = models.BooleanField(null=True, blank=True)
    communication_quality = models.CharField(max_length=32, blank=True)
    health_error = models.TextField(blank=True, help_text="The adapter's last error, as the agent reported it.")
    health_error_count = models.PositiveIntegerField(null=True, blank=True)
    health_last_seen = models.DateTimeField(
        null=True, blank=True, help_text="The adapter's last successful contact, as of the last health change."
    )
    health_changed_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    updated_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["device_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["device", "name"], name="sensor_name_unique_per_device"),
            models.CheckConstraint(
                condition=models.Q(deployment_status__in=DeviceSensorDeploymentStatusChoices.values),
                name="sensor_deployment_status_valid",
            ),
            models.CheckConstraint(
                condition=models.Q(protocol__in=DeviceSensorProtocolChoices.values),
                name="sensor_protocol_valid",
            ),
            models.CheckConstraint(condition=models.Q(poll_interval__gte=1), name="sensor_poll_interval_positive"),
            models.CheckConstraint(condition=models.Q(config_version__gte=0), name="sensor_config_version_valid"),
            models.CheckConstraint(
                condition=models.Q(health_status__in=DeviceSensorHealthStatusChoices.values),
                name="sensor_health_status_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["protocol"], name="sensor_protocol_idx"),
            models.Index(fields=["enabled"], name="sensor_enabled_idx"),
            models.Index(fields=["device", "protocol"], name="sensor_device_protocol_idx"),
            models.Index(fields=["deployment_status", "protocol", "id"], name="sensor_status_protocol_idx"),
            models.Index(fields=["synced_to_config"], name="sensor_synced_idx"),
            models.Index(fields=["health_status", "deployment_status"], name="sensor_health_status_idx"),
        ]

    def __str__(self) -> str:
        return self.name
