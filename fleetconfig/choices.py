from django.db import models

from . import rendering


class RenderJobStatusChoices(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class RenderProblemKindChoices(models.TextChoices):
    CONFLICT = rendering.CONFLICT, "Conflict between equal priorities"
    SHADOWED = rendering.SHADOWED, "Shadowed by the device's own sensor"
    INVALID = rendering.INVALID, "Invalid with the device's overrides"
    LIMIT = rendering.LIMIT, "Too many sensors"
    WRITE_FAILED = "write_failed", "Could not be written"
