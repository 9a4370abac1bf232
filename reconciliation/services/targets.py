"""Staff writes of a device's whole desired state (PUT target-state, rollback), and the write every staff edit
ends in: a new target version (``devices.services.target_state_store``), then the device's sensor rows
re-projected from it (``projection.device_reconcile``), in one transaction holding the device row lock."""

import copy
import uuid as uuid_lib
from typing import Any

from django.core.exceptions import ValidationError

from devices.locking import device_write
from devices.models import Device, DeviceTargetState, DeviceTargetStateVersion
from devices.services import UNSET, target_state_store
from devices.target_config import config_sensors
from events.context import RequestUser, actor_label
from sensors.validation import target_config_validate
from sensorsync_project.exceptions import if_match_check
from sensorsync_project.validation import is_int

from ..choices import DriftEpisodeCauseChoices
from .projection import device_reconcile


def target_state_write(
    *, device: Device, config: dict, apps: dict, user: RequestUser, change: dict
) -> DeviceTargetState:
    """Store a new target version and re-project the read model from it. The caller holds the device lock
    (``device_write``) and has validated ``config``."""
    target = target_state_store(device=device, config=config, apps=apps, user=user, change=change)
    device_reconcile(
        device=device,
        target=target,
        current=device.current_state_or_none(),
        actor=actor_label(user),
        cause=DriftEpisodeCauseChoices.TARGET_CHANGED,
    )
    return target


def _sensor_names(config: dict) -> dict[str, dict]:
    return {s["name"]: s for s in config_sensors(config)}


def config_change_summary(before: dict, after: dict) -> dict:
    """Which sensors a new configuration adds, changes and removes, for history and events."""
    old, new = _sensor_names(before), _sensor_names(after)
    summary = {
        "added": sorted(set(new) - set(old)),
        "updated": sorted(name for name in set(new) & set(old) if new[name] != old[name]),
        "removed": sorted(set(old) - set(new)),
    }
    return {key: value for key, value in summary.items() if value}


def target_state_update(
    *, uuid: uuid_lib.UUID | str, user: RequestUser, config: Any, apps: Any = UNSET, if_match: str | None = None
) -> DeviceTargetState:
    """Replace the whole desired state (PUT target-state). An identical document makes no new version."""
    with device_write(uuid=uuid) as device:
        target = device.target_state
        if_match_check(if_match, target.etag)
        new_config = target_config_validate(config, previous=target.config)
        if apps is UNSET:
            new_apps = copy.deepcopy(target.apps)
        elif isinstance(apps, dict):
            new_apps = apps
        else:
            raise ValidationError({"apps": ["Must be a JSON object."]})
        if new_config == target.config and new_apps == target.apps:
            return target
        change = config_change_summary(target.config, new_config)
        if new_apps != target.apps:
            change["apps"] = True
        return target_state_write(device=device, config=new_config, apps=new_apps, user=user, change=change)


def target_state_rollback(
    *, uuid: uuid_lib.UUID | str, version: Any, user: RequestUser, if_match: str | None = None
) -> DeviceTargetState:
    """A new version with an earlier version's content (versions are never reused)."""
    if not is_int(version) or version < 1:
        raise ValidationError({"version": ["Must be a positive integer."]})
    old = DeviceTargetStateVersion.objects.filter(device__uuid=uuid, version=version).first()
    if old is None:
        if not Device.objects.filter(uuid=uuid).exists():
            raise Device.DoesNotExist
        raise ValidationError({"version": [f"This device has no target version {version}."]})
    with device_write(uuid=uuid) as device:
        target = device.target_state
        if_match_check(if_match, target.etag)
        if old.config == target.config and old.apps == target.apps:
            return target
        change = {**config_change_summary(target.config, old.config), "rollback_to": version}
        return target_state_write(device=device, config=old.config, apps=old.apps, user=user, change=change)
