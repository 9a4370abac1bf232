"""Deploying and discarding drafts: the staff edits a device in draft mode collected (``targets.draft_store``).

Deploying publishes the draft as a new target version through the normal path (``targets.target_state_publish``:
history, ``target_state.updated``, the rows re-projected) and then the agent gets it on its next poll; discarding
drops it. Both run under the device lock and append ``target_state.draft_deployed`` / ``_discarded``. For a
selector, each device with a draft is deployed (or discarded) in a unit of work of its own, so no transaction
spans the fleet and one device's refusal does not undo the others'.
"""

import uuid as uuid_lib
from collections.abc import Callable
from dataclasses import dataclass, field

from devices.labels import Selector
from devices.locking import device_events, device_write
from devices.models import Device, DeviceTargetDraft, DeviceTargetState
from events.choices import EventTypeChoices
from events.context import RequestUser, actor_label
from sensorsync_project.exceptions import StateConflict, if_match_check

from .targets import config_change_summary, target_state_publish


def _draft_of(device: Device) -> DeviceTargetDraft:
    draft = device.target_draft_or_none()
    if draft is None:
        raise StateConflict("no_draft", f"Device {device.name} has no draft to deploy or discard.")
    return draft


def draft_deploy(
    *, device_uuid: uuid_lib.UUID | str, user: RequestUser, if_match: str | None = None
) -> DeviceTargetState:
    """Publish the device's draft as a new target version (none when it equals the published state) and drop it.

    Refused (409) when there is no draft, or when the published target moved on since the draft was started (which
    only a write around the services can do): deploying would undo that change."""
    with device_write(uuid=device_uuid) as device, device_events(device) as recorder:
        draft = _draft_of(device)
        if_match_check(if_match, draft.etag)
        target = device.target_state
        if draft.base_version != target.version:
            raise StateConflict(
                "draft_outdated",
                f"The published target of {device.name} is at version {target.version}, but its draft was started "
                f"on version {draft.base_version}: discard the draft and edit again.",
            )
        change = config_change_summary(target.config, draft.config)
        if draft.apps != target.apps:
            change["apps"] = True
        draft.delete()
        device.target_draft = None  # the cached draft is gone
        published = target.config != draft.config or target.apps != draft.apps
        if published:
            target = target_state_publish(
                device=device, config=draft.config, apps=draft.apps, user=user, change={**change, "draft": True}
            )
        recorder.record(
            EventTypeChoices.TARGET_STATE_DRAFT_DEPLOYED,
            {
                "base_version": draft.base_version,
                "revision": draft.revision,
                "version": target.version,
                "published": published,
                "change": change,
            },
            actor=actor_label(user),
        )
        return target


def draft_discard(*, device_uuid: uuid_lib.UUID | str, user: RequestUser, if_match: str | None = None) -> Device:
    """Drop the device's draft; its published target and rows stay as they are."""
    with device_write(uuid=device_uuid) as device, device_events(device) as recorder:
        draft = _draft_of(device)
        if_match_check(if_match, draft.etag)
        draft.delete()
        device.target_draft = None
        recorder.record(
            EventTypeChoices.TARGET_STATE_DRAFT_DISCARDED,
            {"base_version": draft.base_version, "revision": draft.revision, "change": draft.change},
            actor=actor_label(user),
        )
        return device


@dataclass
class DraftsResult:
    matched: int = 0  # devices with a draft that the selector selected
    done: int = 0  # of which deployed (or discarded)
    refused: dict[str, str] = field(default_factory=dict)  # device uuid -> why not


DRAFTS_PAGE = 500


def _each_draft(
    *, selector: Selector, uuids: list[uuid_lib.UUID | str] | None, act: Callable[[uuid_lib.UUID], object]
) -> DraftsResult:
    """``act`` on each device with a draft that the selector selects, in order of id, each in its own unit of
    work; the ids are read a page at a time."""
    selected = Device.objects.filter(selector.q(), target_draft__isnull=False)
    if uuids is not None:
        selected = selected.filter(uuid__in=uuids)
    result = DraftsResult()
    last_pk = 0
    while page := list(selected.filter(pk__gt=last_pk).order_by("pk").values_list("pk", "uuid")[:DRAFTS_PAGE]):
        last_pk = page[-1][0]
        for _pk, uuid in page:
            result.matched += 1
            try:
                act(uuid)
            except StateConflict as refusal:
                if refusal.code != "no_draft":  # deployed or discarded meanwhile: nothing left to do
                    result.refused[str(uuid)] = str(refusal)
                continue
            result.done += 1
    return result


def drafts_deploy(
    *, selector: Selector | str, user: RequestUser, uuids: list[uuid_lib.UUID | str] | None = None
) -> DraftsResult:
    """Deploy the draft of every device the selector selects (among ``uuids``, given) that has one."""
    selector = Selector.parse(selector) if isinstance(selector, str) else selector
    return _each_draft(selector=selector, uuids=uuids, act=lambda uuid: draft_deploy(device_uuid=uuid, user=user))


def drafts_discard(
    *, selector: Selector | str, user: RequestUser, uuids: list[uuid_lib.UUID | str] | None = None
) -> DraftsResult:
    """Discard the draft of every device the selector selects (among ``uuids``, given) that has one."""
    selector = Selector.parse(selector) if isinstance(selector, str) else selector
    return _each_draft(selector=selector, uuids=uuids, act=lambda uuid: draft_discard(device_uuid=uuid, user=user))
