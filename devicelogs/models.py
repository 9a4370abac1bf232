from django.db import models
from django.utils import timezone

from devices.models import Device

from .choices import LogLevelChoices, LogSourceChoices


class DeviceLogLine(models.Model):
    """One line of a device's log, as its agent sent it. Kept per device up to
    ``SENSORSYNC_DEVICE_LOG_KEEP`` lines (the oldest go first) and for ``SENSORSYNC_DEVICE_LOG_RETENTION_DAYS``
    (``manage.py prune_device_logs``). Never changed once written."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="log_lines", db_index=False)
    logged_at = models.DateTimeField(help_text="When the device logged it (its clock; the receipt time if absent).")
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    level = models.CharField(max_length=8, choices=LogLevelChoices.choices, default=LogLevelChoices.INFO)
    source = models.CharField(max_length=16, choices=LogSourceChoices.choices, default=LogSourceChoices.MANAGER)
    source_name = models.CharField(max_length=100, blank=True, help_text="The agent's component or the container.")
    service_name = models.CharField(max_length=100, blank=True)
    is_stderr = models.BooleanField(default=False)
    message = models.TextField()

    class Meta:
        ordering = ["-id"]
        verbose_name = "device log line"
        indexes = [models.Index(fields=["device", "-id"], name="device_log_device_idx")]

    def __str__(self) -> str:
        return f"{self.level}: {self.message[:60]}"
