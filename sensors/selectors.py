import uuid
from typing import TYPE_CHECKING, TypeAlias, TypedDict

from django.db.models import F, QuerySet

from devices.target_config import config_sensors

from .choices import DeviceSensorDraftChangeChoices
from .models import DeviceSensor

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _DeviceUuid(TypedDict):
    device_uuid: uuid.UUID
    device_draft_config: dict | None


# A row as the API shows it: with its device's uuid joined in, and its device's draft configuration (null when the
# device has no draft).
ListedSensor: TypeAlias = "WithAnnotations[DeviceSensor, _DeviceUuid]"


def sensor_list(*, device_uuid: uuid.UUID | str | None = None) -> "QuerySet[ListedSensor]":
    """Read-model rows with the device uuid and the device's draft configuration joined in (the API shows both on
    every row: ``sensor_draft``)."""
    queryset = DeviceSensor.objects.annotate(
        device_uuid=F("device__uuid"), device_draft_config=F("device__target_draft__config")
    )
    if device_uuid is not None:
        queryset = queryset.filter(device__uuid=device_uuid)
    return queryset


def sensor_draft(*, name: str, desired: dict | None, draft_config: dict | None) -> dict | None:
    """How the device's draft changes a sensor against what is published (``desired``): ``{"change": "added" |
    "updated" | "removed", "sensor": <the drafted sensor, or null>}``; None when there is no draft or it leaves the
    sensor as published."""
    if draft_config is None:
        return None
    drafted = next((s for s in config_sensors(draft_config) if s.get("name") == name), None)
    if drafted == desired:
        return None
    if drafted is None:
        return {"change": DeviceSensorDraftChangeChoices.REMOVED, "sensor": None}
    change = DeviceSensorDraftChangeChoices.ADDED if desired is None else DeviceSensorDraftChangeChoices.UPDATED
    return {"change": change, "sensor": drafted}
