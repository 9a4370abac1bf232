from django.apps import AppConfig


class IngestConfig(AppConfig):
    name = "ingest"
    verbose_name = "MQTT ingestion"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from devices.signals import device_access_changed

        from . import checks  # noqa: F401 (registers the system checks)
        from .services import device_mqtt_access_changed

        # Rotation, deactivation and deletion revoke the device's broker access (devices cannot import us).
        device_access_changed.connect(device_mqtt_access_changed, dispatch_uid="ingest.device_access_changed")
