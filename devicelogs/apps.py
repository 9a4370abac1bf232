"""The devices' own logs: what the agent streams to ``/api/v1/device/<uuid>/logs``, kept for a while per device so
staff can read why a device misbehaves without logging in to it. A sibling of ingest and fleetconfig: it needs
only the devices."""

from django.apps import AppConfig


class DeviceLogsConfig(AppConfig):
    name = "devicelogs"
    verbose_name = "Device logs"
    default_auto_field = "django.db.models.BigAutoField"
