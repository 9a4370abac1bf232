from django.db.models import QuerySet

from .models import Device, DeviceTargetStateVersion


def device_list() -> QuerySet[Device]:
    return Device.objects.select_related("target_state", "current_state").order_by("name", "id")


def device_get(*, uuid) -> Device:
    return device_list().get(uuid=uuid)


def device_exists(*, uuid) -> bool:
    return Device.objects.filter(uuid=uuid).exists()


def target_versions(*, device_uuid) -> QuerySet[DeviceTargetStateVersion]:
    return DeviceTargetStateVersion.objects.filter(device__uuid=device_uuid).select_related("created_by")
