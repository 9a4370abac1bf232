from django.db import models
from django.utils import timezone

from devices.models import Device


class DeviceMqttCredentials(models.Model):
    """That a device was issued MQTT credentials, and under which of its keys (the password itself is only ever in
    the answer that issued it, and hashed in the broker). The broker's client for a device is legitimate only while
    this row exists, ``key_digest`` is the device's current key and the device is active: the convergence loop
    (``ingest.services.mqtt_access_converge``) removes or disables every other client, so a revocation the broker
    missed (it was down) still happens."""

    device = models.OneToOneField(Device, on_delete=models.CASCADE, primary_key=True, related_name="mqtt_credentials")
    key_digest = models.CharField(max_length=64, help_text="The device's API key digest when these were issued.")
    issued_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = "device MQTT credentials"
        verbose_name_plural = "device MQTT credentials"

    def __str__(self) -> str:
        return f"MQTT credentials of {self.device_id} issued {self.issued_at:%Y-%m-%d %H:%M}"
