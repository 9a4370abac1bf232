from django.db.models import QuerySet

from .keys import key_digest
from .models import Device, DeviceTargetStateVersion


def device_list() -> QuerySet[Device]:
    return Device.objects.select_related("target_state", "current_state").order_by("name", "id")


def device_get(*, uuid) -> Device:
    return device_list().get(uuid=uuid)


def device_exists(*, uuid) -> bool:
    return Device.objects.filter(uuid=uuid).exists()


def target_versions(*, device_uuid) -> QuerySet[DeviceTargetStateVersion]:
    return DeviceTargetStateVersion.objects.filter(device__uuid=device_uuid).select_related("created_by")


def device_for_key(*, api_key: str) -> Device | None:
    """The device an agent key belongs to, with both states joined: the one query of the agent's hot paths."""
    return (
        Device.objects.select_related("target_state", "current_state")
        .filter(api_key_digest=key_digest(api_key))
        .first()
    )
