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
