"""What the fleet configuration does when the layers below tell it something (connected in ``apps``)."""

import logging
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from devices.models import Device
from devices.target_config import SENSORS_KEY, config_sensors, config_upcast
from events.context import RequestUser

from .choices import RenderProblemKindChoices
from .models import RenderProblem
from .rendering import SENSOR_EDIT, RenderedSensorEdit, sensors_split, staff_sensors_check
from .selectors import render_inputs
from .services import devices_render, render_job_create, rendering_in_progress

logger = logging.getLogger("sensorsync.fleetconfig")

OVERRIDES_HINT = (
    "Change a field of it for this device with an override (admin: Fleet configuration > Sensor overrides; API: POST "
    "/api/v1/sensor-overrides), or change the template, the assignment or the device's labels."
)


def labels_changed_render(sender: Any, *, device_ids: list[int], **kwargs: Any) -> None:
    """``devices.signals.device_labels_changed``, sent once the label change committed: what the devices' labels
    select may have changed, so re-render them (a job: at once when small, else by ``render_fleet``)."""
    with transaction.atomic():
        render_job_create(reason="labels changed", scope={"devices": sorted(device_ids)}, user=None)


def _rendered_by(device: Device, names: tuple[str, ...]) -> str:
    """Which assignment and template render each of ``names`` on the device, for a refusal's message."""
    provenance = render_inputs([device.pk]).render(device.pk).provenance
    parts = []
    for name in names:
        source = provenance.get(name, {}).get("fields", {}).get("name", {})
        if source.get("kind") == "template":
            parts.append(
                f"'{name}' is rendered by assignment '{source['assignment']}' from template '{source['template']}' "
                f"v{source['version']}"
            )
        else:
            parts.append(f"'{name}' is rendered by an assignment")
    return "; ".join(parts)


def desired_config_guard(
    sender: Any, *, device: Device, previous: dict, config: dict, edit: str, user: RequestUser, **kwargs: Any
) -> dict | None:
    """``reconciliation.signals.desired_config_proposed``: a staff write may not change or remove what the
    assignments render on the device (``rendering.staff_sensors_check``: refused with a message pointing at
    overrides; a whole document that leaves rendered sensors out keeps them). The renderer's own writes pass."""
    if rendering_in_progress(device.uuid):
        return None
    before = config_sensors(previous)
    try:
        sensors = staff_sensors_check(device.uuid, before, config_sensors(config), edit)
    except RenderedSensorEdit as refused:
        key = "name" if edit == SENSOR_EDIT else f"config.{SENSORS_KEY}"
        found = _rendered_by(device, refused.sensors)
        message = f"Sensors rendered from templates are not edited on the device: {found}. {OVERRIDES_HINT}"
        raise ValidationError({key: [message]}) from None
    after = config_sensors(config) if sensors is None else sensors
    _removed_own_rerender(device, before, after, user)
    return None if sensors is None else {**config_upcast(config), SENSORS_KEY: sensors}


def _removed_own_rerender(device: Device, before: list, after: list, user: RequestUser) -> None:
    """An own sensor removed may have shadowed a template's of the same name: once the write commits, the template's
    takes its place (a re-render of the device, when its last render found it shadowed)."""
    own, _ = sensors_split(device.uuid, before)
    removed = {s["name"] for s in own} - {s["name"] for s in after}
    if removed:
        transaction.on_commit(partial(_shadowed_rerender, device.pk, sorted(removed), user))


def _shadowed_rerender(device_id: int, names: list[str], user: RequestUser) -> None:
    try:
        shadowed = RenderProblem.objects.filter(
            device_id=device_id, kind=RenderProblemKindChoices.SHADOWED, sensor_name__in=names
        )
        if shadowed.exists():
            devices_render(device_ids=[device_id], user=user)
    except Exception:  # the staff write committed; a failed re-render is logged and the next render repairs it
        logger.exception("re-render of device %s after its own sensor was removed failed", device_id)
