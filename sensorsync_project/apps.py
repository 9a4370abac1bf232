from django.apps import AppConfig


class SensorSyncProjectConfig(AppConfig):
    """The project package as an app, so its system checks are registered (``checks.py``)."""

    name = "sensorsync_project"
    verbose_name = "SensorSync"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
