from django.db import models


class EventTypeChoices(models.TextChoices):
    DEVICE_REGISTERED = "device.registered"
    DEVICE_UPDATED = "device.updated"
    DEVICE_DELETED = "device.deleted"
    DEVICE_KEY_ROTATED = "device.key_rotated"
    TARGET_STATE_UPDATED = "target_state.updated"
    SENSOR_ADDED = "sensor.added"
    SENSOR_UPDATED = "sensor.updated"
    SENSOR_REMOVED = "sensor.removed"
    CURRENT_STATE_REPORTED = "current_state.reported"
    CURRENT_STATE_QUEUED = "current_state.queued"
    SENSOR_DEPLOYED = "sensor.deployed"
    SENSOR_FAILED = "sensor.failed"
    DEVICE_CONFIG_DRIFT = "device.config_drift"
    DEVICE_IN_SYNC = "device.in_sync"
    DEVICE_RECONCILE_FAILED = "device.reconcile_failed"
    DEVICE_KEY_EXCHANGED = "device.key_exchanged"
    PROVISIONING_KEY_CREATED = "provisioning_key.created"
    PROVISIONING_KEY_USED = "provisioning_key.used"
    PROVISIONING_KEY_REVOKED = "provisioning_key.revoked"
    DEVICE_LABELS_CHANGED = "device.labels_changed"
    TARGET_STATE_DRAFT_SAVED = "target_state.draft_saved"
    TARGET_STATE_DRAFT_DEPLOYED = "target_state.draft_deployed"
    TARGET_STATE_DRAFT_DISCARDED = "target_state.draft_discarded"
    # Fleet configuration (fleetconfig): templates and assignments are aggregates of their own; overrides are the
    # device's.
    SENSOR_TEMPLATE_CREATED = "sensor_template.created"
    SENSOR_TEMPLATE_UPDATED = "sensor_template.updated"
    SENSOR_TEMPLATE_DELETED = "sensor_template.deleted"
    ASSIGNMENT_CREATED = "assignment.created"
    ASSIGNMENT_UPDATED = "assignment.updated"
    ASSIGNMENT_DELETED = "assignment.deleted"
    SENSOR_OVERRIDE_SET = "sensor_override.set"
    SENSOR_OVERRIDE_REMOVED = "sensor_override.removed"


class EventSourceChoices(models.TextChoices):
    API = "api"
    ADMIN = "admin"
    AGENT = "agent"
    COMMAND = "command"
    SYSTEM = "system"
