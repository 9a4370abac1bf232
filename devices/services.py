"""Writes to devices and their target state. Each runs in one transaction holding the device row lock.

A staff change of the desired state is a new target version (``target_state_store``) and, at once, a re-projection
of the device's sensor rows: that use case spans the apps, so it lives at the top, in
``reconciliation.services.targets`` and ``reconciliation.services.sensors``."""

import uuid as uuid_lib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from events.choices import EventTypeChoices
from events.context import RequestUser, actor_label, current_context, signed_in_user
from sensorsync_project.validation import has_control_characters

from .keys import key_digest, key_generate
from .locking import device_events, device_write
from .models import Device, DeviceTargetState, DeviceTargetStateVersion, empty_config
from .signals import device_access_changed

DEVICE_NAME_MAX = 255


@dataclass(frozen=True)
class DeviceWithKey:
    device: Device
    api_key: str


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # a field the client did not send (None is a value it sent: JSON null)


def _device_fields_validate(fields: dict[str, Any]) -> None:
    errors: dict[str, list[str]] = {}
    name = fields.get("name", UNSET)
    if name is not UNSET and (
        not isinstance(name, str) or not name.strip() or len(name) > DEVICE_NAME_MAX or has_control_characters(name)
    ):
        errors["name"] = [f"Must be a non-empty string of at most {DEVICE_NAME_MAX} characters, no control characters."]
    description = fields.get("description", "")
    if not isinstance(description, str) or has_control_characters(description, allow="\n\r\t"):
        errors["description"] = ["Must be a string without control characters (newlines and tabs are fine)."]
    if "is_active" in fields and type(fields["is_active"]) is not bool:
        errors["isActive"] = ["Must be a boolean."]
    if errors:
        raise ValidationError(errors)


def _target_version_store(
    *, device: Device, target: DeviceTargetState, user: RequestUser, change: dict, created_at: datetime | None = None
) -> None:
    """Append the target's current content to the history and the event log (rebuildable from either)."""
    DeviceTargetStateVersion.objects.create(
        device=device,
        version=target.version,
        config=target.config,
        apps=target.apps,
        created_at=created_at or target.updated_at,
        created_by=signed_in_user(user),
        source=current_context().source,
        change=change,
    )
    with device_events(device) as recorder:
        recorder.record(
            EventTypeChoices.TARGET_STATE_UPDATED,
            {"version": target.version, "config": target.config, "apps": target.apps, "change": change},
            actor=actor_label(user),
        )


def device_store(
    *, name: str, api_key_digest: str, user: RequestUser, actor: str | None = None, **fields: Any
) -> Device:
    """Insert a device with an empty target at version 1, its history and its events. The caller validated
    ``name`` and holds the transaction; ``fields`` are further Device fields (a registered device's facts)."""
    device = Device.objects.create(name=name.strip(), api_key_digest=api_key_digest, **fields)
    target = DeviceTargetState.objects.create(
        device=device,
        config=empty_config(),
        apps={},
        version=1,
        updated_by=signed_in_user(user),
    )
    with device_events(device) as recorder:
        data = {"name": device.name, "is_active": device.is_active}
        key = device.provisioned_by  # no query: the instance given to the constructor, or none
        if key is not None:
            data |= {"provisioning_key": str(key.uuid), "device_type": device.device_type}
        recorder.record(EventTypeChoices.DEVICE_REGISTERED, data, actor=actor or actor_label(user))
        _target_version_store(device=device, target=target, user=user, change={"created": True})
    return device


@transaction.atomic
def device_create(
    *, name: str, description: str = "", is_active: bool = True, user: RequestUser = None
) -> DeviceWithKey:
    """A device created by staff, with a key the server generates (shown once)."""
    _device_fields_validate({"name": name, "description": description, "is_active": is_active})
    api_key = key_generate()
    device = device_store(
        name=name, api_key_digest=key_digest(api_key), user=user, description=description, is_active=is_active
    )
    return DeviceWithKey(device=device, api_key=api_key)


def device_update(
    *,
    uuid: uuid_lib.UUID | str,
    user: RequestUser,
    name: str = UNSET,
    description: str = UNSET,
    is_active: bool = UNSET,
) -> Device:
    """Change the fields given; a field left UNSET keeps its value."""
    sent = {
        key: value
        for key, value in (("name", name), ("description", description), ("is_active", is_active))
        if value is not UNSET
    }
    _device_fields_validate(sent)
    if "name" in sent:
        sent["name"] = name.strip()
    with device_write(uuid=uuid) as device, device_events(device) as recorder:
        changes = {field_name: value for field_name, value in sent.items() if getattr(device, field_name) != value}
        if changes:
            for field_name, value in changes.items():
                setattr(device, field_name, value)
            device.save(update_fields=[*changes, "updated_at"])
            recorder.record(EventTypeChoices.DEVICE_UPDATED, {"changes": changes}, actor=actor_label(user))
            if "is_active" in changes:  # MQTT: disable (or enable) its broker client once this commits
                device_access_changed.send(
                    Device, uuid=device.uuid, reason="deactivated" if not is_active else "activated"
                )
    return device


def device_key_rotate(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> DeviceWithKey:
    """Replace the key; the old one stops working when this commits."""
    api_key = key_generate()
    with device_write(uuid=uuid) as device, device_events(device) as recorder:
        device.api_key_digest = key_digest(api_key)
        # A new key re-provisions the agent, which may start its report clocks over: forget the old high marks.
        for field in Device.REPORT_MARKS.values():
            setattr(device, field, None)
        device.save(update_fields=["api_key_digest", *Device.REPORT_MARKS.values(), "updated_at"])
        recorder.record(EventTypeChoices.DEVICE_KEY_ROTATED, {}, actor=actor_label(user))
        device_access_changed.send(Device, uuid=device.uuid, reason="key_rotated")  # MQTT credentials go with it
    return DeviceWithKey(device=device, api_key=api_key)


def device_delete(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> None:
    """Delete a device with its states and sensor rows; its events stay in the log."""
    with device_write(uuid=uuid) as device, device_events(device) as recorder:
        recorder.record(EventTypeChoices.DEVICE_DELETED, {"name": device.name}, actor=actor_label(user))
        device.delete()
        device_access_changed.send(Device, uuid=device.uuid, reason="deleted")


def target_state_store(
    *, device: Device, config: dict, apps: dict, user: RequestUser, change: dict, keep_retry_budget: bool = False
) -> DeviceTargetState:
    """Store a new target version: the target row, its history row and its ``target_state.updated`` event. The
    caller holds the device lock (``device_write``), has validated ``config`` and re-projects the read model from
    the new version (``reconciliation.services.targets.target_state_write``).

    A new version is staff acting on the device: its retry budget starts afresh, unless ``keep_retry_budget`` (the
    version an exhausted budget falls back to keeps the record of why)."""
    target = device.target_state
    target.version += 1
    target.config = config
    target.apps = apps
    target.updated_at = timezone.now()
    target.updated_by = signed_in_user(user)
    fields = ["version", "config", "apps", "updated_at", "updated_by"]
    if not keep_retry_budget:
        for name, value in DeviceTargetState.RETRY_BUDGET_CLEARED.items():
            setattr(target, name, value)
        fields += DeviceTargetState.RETRY_BUDGET_CLEARED
    target.save(update_fields=fields)
    _target_version_store(device=device, target=target, user=user, change=change)
    return target
