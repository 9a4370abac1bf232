from django.db import models


class DeviceSensorProtocolChoices(models.TextChoices):
    MODBUS = "modbus", "Modbus"
    CAN = "can", "CAN"
    OPCUA = "opcua", "OPC UA"
    MQTT = "mqtt", "MQTT"


class DeviceSensorDeploymentStatusChoices(models.TextChoices):
    PENDING = "pending", "Pending"
    RECONCILING = "reconciling", "Reconciling"
    DEPLOYED = "deployed", "Deployed"
    FAILED = "failed", "Failed"


class DeviceSensorHealthStatusChoices(models.TextChoices):
    """What the agent's adapter says of a sensor (``endpoints_health`` / ``protocol_adapters_health``): separate
    from deployment, since a sensor can be deployed and running yet unable to reach its PLC."""

    UNKNOWN = "", "Unknown"
    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    DISABLED = "disabled", "Disabled"


class DeviceSensorDraftChangeChoices(models.TextChoices):
    """What a device's undeployed draft does to a sensor, against the published target."""

    ADDED = "added", "Added"
    UPDATED = "updated", "Changed"
    REMOVED = "removed", "Removed"
