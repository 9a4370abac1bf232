import uuid
from typing import TYPE_CHECKING, TypeAlias, TypedDict

from django.db.models import F, QuerySet

from .models import DeviceSensor

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _DeviceUuid(TypedDict):
    device_uuid: uuid.UUID


# A row as the API shows it: with its device's uuid joined in.
ListedSensor: TypeAlias = "WithAnnotations[DeviceSensor, _DeviceUuid]"


def sensor_list(*, device_uuid: uuid.UUID | str | None = None) -> "QuerySet[ListedSensor]":
    """Read-model rows with the device uuid joined in (the API shows it on every row)."""
    queryset = DeviceSensor.objects.annotate(device_uuid=F("device__uuid"))
    if device_uuid is not None:
        queryset = queryset.filter(device__uuid=device_uuid)
    return queryset
