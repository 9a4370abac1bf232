"""Staff writes of a device's whole desired state (PUT target-state, rollback), and the write every staff edit
ends in: a new target version (``devices.services.target_state_store``), then the device's sensor rows
re-projected from it (``projection.device_reconcile``), in one transaction holding the device row lock.

A device in draft mode (``Device.draft_mode``) collects the same edits in its draft instead
(``DeviceTargetDraft``): every edit starts from the draft (``target_working``), is checked against the draft's
ETag, and ``target_state_write`` stores the draft, which the agent never sees. ``drafts.draft_deploy`` publishes
it as a new target version through ``target_state_publish``."""

import copy
import uuid as uuid_lib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from devices.locking import device_events, device_write
from devices.models import Device, DeviceTargetDraft, DeviceTargetState, DeviceTargetStateVersion
from devices.services import UNSET, target_state_store
from devices.target_config import config_sensors
from events.choices import EventTypeChoices
from events.context import RequestUser, actor_label, signed_in_user
from sensors.validation import target_config_validate
from sensorsync_project.exceptions import if_match_check
from sensorsync_project.validation import is_int

from ..choices import DriftEpisodeCauseChoices
from ..signals import desired_config_proposed
from .projection import device_reconcile


@dataclass(frozen=True)
class WorkingTarget:
    """What a staff edit of a device's desired state starts from: its draft, when it is in draft mode and has one,
    else its published target; ``etag`` is what the edit's If-Match is checked against."""

    config: dict
    apps: dict
    etag: str
    drafting: bool  # the edit will be stored in the draft, not published


def target_working(device: Device) -> WorkingTarget:
    """The working state of a device the caller holds locked (one query for a device in draft mode, else none)."""
    if device.draft_mode:
        draft = device.target_draft_or_none()
        if draft is not None:
            return WorkingTarget(config=draft.config, apps=draft.apps, etag=draft.etag, drafting=True)
    target = device.target_state
    return WorkingTarget(config=target.config, apps=target.apps, etag=target.etag, drafting=device.draft_mode)


def desired_config_checked(
    *, device: Device, working: WorkingTarget, config: dict, edit: str, user: RequestUser
) -> dict:
    """``config`` as the receivers of ``signals.desired_config_proposed`` let it be written (they may refuse it)."""
    answers: Sequence[tuple[object, object]] = desired_config_proposed.send(
        sender=Device, device=device, previous=working.config, config=config, edit=edit, user=user
    )
    return next((answer for _receiver, answer in answers if isinstance(answer, dict)), config)


def target_state_write(
    *, device: Device, config: dict, apps: dict, user: RequestUser, change: dict
) -> DeviceTargetState:
    """The end of every staff edit of the desired state (``config`` validated, the device locked by the caller's
    ``device_write``): a new target version, published (``target_state_publish``), or, for a device in draft mode,
    the draft (``draft_store``). Returns the published target either way."""
    if device.draft_mode:
        draft_store(device=device, config=config, apps=apps, user=user, change=change)
        return device.target_state
    return target_state_publish(device=device, config=config, apps=apps, user=user, change=change)


def target_state_publish(
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


def draft_store(*, device: Device, config: dict, apps: dict, user: RequestUser, change: dict) -> DeviceTargetDraft:
    """Store an edit in the device's draft (creating it on the published target), with a ``target_state.draft_saved``
    event carrying the whole draft, the edit's ``change`` and what deploying the draft would change."""
    target = device.target_state
    draft = device.target_draft_or_none()
    pending = draft_change_summary(target, config, apps)
    now = timezone.now()
    if draft is None:
        draft = DeviceTargetDraft.objects.create(
            device=device,
            config=config,
            apps=apps,
            base_version=target.version,
            change=pending,
            created_at=now,
            updated_at=now,
            updated_by=signed_in_user(user),
        )
        device.target_draft = draft
    else:
        draft.config, draft.apps, draft.change = config, apps, pending
        draft.revision += 1
        draft.updated_at, draft.updated_by = now, signed_in_user(user)
        draft.save(update_fields=["config", "apps", "change", "revision", "updated_at", "updated_by"])
    with device_events(device) as recorder:
        recorder.record(
            EventTypeChoices.TARGET_STATE_DRAFT_SAVED,
            {
                "base_version": draft.base_version,
                "revision": draft.revision,
                "config": config,
                "apps": apps,
                "change": change,
                "pending": pending,
            },
            actor=actor_label(user),
        )
    return draft


def draft_change_summary(target: DeviceTargetState, config: dict, apps: dict) -> dict:
    """What publishing ``config`` and ``apps`` would change in the published target."""
    summary = config_change_summary(target.config, config)
    if apps != target.apps:
        summary["apps"] = True
    return summary


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
    """Replace the whole desired state (PUT target-state). An identical document makes no new version (nor draft)."""
    with device_write(uuid=uuid) as device:
        working = target_working(device)
        if_match_check(if_match, working.etag)
        new_config = target_config_validate(config, previous=working.config)
        new_config = desired_config_checked(
            device=device, working=working, config=new_config, edit="document", user=user
        )
        if apps is UNSET:
            new_apps = copy.deepcopy(working.apps)
        elif isinstance(apps, dict):
            new_apps = apps
        else:
            raise ValidationError({"apps": ["Must be a JSON object."]})
        if new_config == working.config and new_apps == working.apps:
            return device.target_state
        change = config_change_summary(working.config, new_config)
        if new_apps != working.apps:
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
        working = target_working(device)
        if_match_check(if_match, working.etag)
        config = desired_config_checked(device=device, working=working, config=old.config, edit="rollback", user=user)
        if config == working.config and old.apps == working.apps:
            return device.target_state
        change = {**config_change_summary(working.config, config), "rollback_to": version}
        return target_state_write(device=device, config=config, apps=old.apps, user=user, change=change)
