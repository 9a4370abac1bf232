from django.db import models


class DeviceSyncStatusChoices(models.TextChoices):
    """How far a device is from its target state, as operators ask about it."""

    IN_SYNC = "in_sync", "In sync"
    DRIFTING = "drifting", "Drifting"
    NEVER_REPORTED = "never_reported", "Never reported"
