import uuid as uuid_lib

from django.db.models import F

from devices.models import Device
from devices.selectors import REPORT_DEFERRED_TARGET


def device_for_mqtt_report(*, uuid: uuid_lib.UUID) -> Device | None:
    """The device an MQTT report's topic names, loaded as the PATCH's ``device_for_report`` loads it (the target's
    version and cached statuses, the stored report's digest), with the key its MQTT credentials were issued under
    (``mqtt_key_digest``, None if it has none), in one query."""
    return (
        Device.objects.select_related("target_state", "current_state")
        .defer(
            "facts",
            "target_state__apps",
            *(f"target_state__{name}" for name in REPORT_DEFERRED_TARGET),
            "current_state__config",
            "current_state__apps",
            "current_state__sensor_health",
        )
        .annotate(mqtt_key_digest=F("mqtt_credentials__key_digest"))
        .filter(uuid=uuid)
        .order_by()
        .first()
    )
