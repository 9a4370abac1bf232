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
    DEVICE_RETRY_BUDGET_EXHAUSTED = "device.retry_budget_exhausted"
    DEVICE_RETRY_BUDGET_RESET = "device.retry_budget_reset"
    DEVICE_KEY_EXCHANGED = "device.key_exchanged"
    PROVISIONING_KEY_CREATED = "provisioning_key.created"
    PROVISIONING_KEY_USED = "provisioning_key.used"
    PROVISIONING_KEY_REVOKED = "provisioning_key.revoked"
    WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
    WEBHOOK_ENDPOINT_UPDATED = "webhook_endpoint.updated"
    WEBHOOK_ENDPOINT_SECRET_ROTATED = "webhook_endpoint.secret_rotated"
    WEBHOOK_ENDPOINT_DELETED = "webhook_endpoint.deleted"


class EventSourceChoices(models.TextChoices):
    API = "api"
    ADMIN = "admin"
    AGENT = "agent"
    COMMAND = "command"
    SYSTEM = "system"
