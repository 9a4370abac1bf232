from django.db import models


class RolloutStatusChoices(models.TextChoices):
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    ABORTED = "aborted", "Aborted"
    FINISHED = "finished", "Finished"


class RolloutKindChoices(models.TextChoices):
    TEMPLATE = "template", "Template change"  # a new version of a template, for the assignments following it
    ASSIGNMENT = "assignment", "Assignment change"  # another pinned template version for one assignment


class RolloutPauseReasonChoices(models.TextChoices):
    NONE = "", "-"
    THRESHOLD = "threshold", "Error threshold crossed"
    STAFF = "staff", "Paused by staff"


class RolloutDeviceStateChoices(models.TextChoices):
    """Where an admitted device stands, from the read model (``rollouts.staging.device_outcome``)."""

    PENDING = "pending", "Pending"  # not fetched yet
    FETCHED = "fetched", "Fetched"
    APPLIED = "applied", "Applied"  # the agent reports running the version, not every sensor deployed
    DEPLOYED = "deployed", "Deployed"
    FAILED = "failed", "Failed"
    OFFLINE = "offline", "Offline"
    DRAFT = "draft", "In draft mode"  # the change waits in the device's draft


# The event types a rollout appends (aggregate ``rollout``). Plain strings, not ``events.choices.EventTypeChoices``:
# the event log stores any type, and the rollout's own events are never replayed into a device.
ROLLOUT_CREATED = "rollout.created"
ROLLOUT_STAGE_STARTED = "rollout.stage_started"
ROLLOUT_PAUSED = "rollout.paused"
ROLLOUT_RESUMED = "rollout.resumed"
ROLLOUT_ABORTED = "rollout.aborted"
ROLLOUT_FINISHED = "rollout.finished"
