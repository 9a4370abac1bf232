import uuid as uuid_lib

from django.db.models import QuerySet

from devices.keys import key_digest
from devices.models import Device

from .choices import LogLevelChoices
from .models import DeviceLogLine


def device_for_log_upload(*, api_key: str) -> Device | None:
    """The device a key belongs to, with only what a log upload needs (one query, no states)."""
    return Device.objects.only("id", "uuid", "is_active").filter(api_key_digest=key_digest(api_key)).first()


def device_log_lines(*, device_uuid: uuid_lib.UUID | str) -> QuerySet[DeviceLogLine]:
    """The device's log, newest first; Device.DoesNotExist for an unknown device (a 404, not an empty log)."""
    device_id = Device.objects.values_list("id", flat=True).get(uuid=device_uuid)
    return DeviceLogLine.objects.filter(device_id=device_id).order_by("-id")


RECENT_PROBLEMS_SHOWN = 10


def device_log_recent_problems(*, device_id: int, limit: int = RECENT_PROBLEMS_SHOWN) -> list[DeviceLogLine]:
    """The device's latest warnings and errors, newest first (one query on the device's index, bounded by the
    per-device cap): what its agent last complained about, for the device page."""
    lines = DeviceLogLine.objects.filter(device_id=device_id).order_by("-id")
    problems = lines.filter(level__in=(LogLevelChoices.WARN, LogLevelChoices.ERROR))
    return list(problems[:limit])
