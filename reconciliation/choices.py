from django.db import models


class DriftEpisodeCauseChoices(models.TextChoices):
    """What made a device leave its converged state."""

    TARGET_CHANGED = "target_changed", "Target changed (staff edit)"
    AGENT_REPORT = "agent_report", "Agent report (reality differs)"
    MANUAL = "manual", "Manual reconcile"
