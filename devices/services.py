"""Writes to devices and their target state. Each runs in one transaction holding the device row lock.

A staff change of the desired state is a new target version (``target_state_store``) and, at once, a re-projection
of the device's sensor rows: that use case spans the apps, so it lives at the top, in
``reconciliation.services.targets`` and ``reconciliation.services.sensors``."""

import uuid as uuid_lib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from events.choices import EventTypeChoices
from events.context import RequestUser, actor_label, current_context, signed_in_user
from events.services import EventRecorder, event_recording
from sensorsync_project.exceptions import StateConflict
from sensorsync_project.validation import has_control_characters

from .keys import key_digest, key_generate
from .labels import (
    LABELS_PER_DEVICE_MAX,
    Selector,
    label_key_problem,
    labels_validate,
)
from .locking import device_events, device_write
from .models import Device, DeviceLabel, DeviceTargetDraft, DeviceTargetState, DeviceTargetStateVersion, empty_config
from .signals import device_access_changed, device_labels_changed

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
    if "draft_mode" in fields and type(fields["draft_mode"]) is not bool:
        errors["draftMode"] = ["Must be a boolean."]
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
    draft_mode: bool = UNSET,
) -> Device:
    """Change the fields given; a field left UNSET keeps its value. Leaving draft mode is refused while the device
    has a draft (deploy or discard it first), so that a draft is always on top of the published target."""
    sent = {
        key: value
        for key, value in (
            ("name", name),
            ("description", description),
            ("is_active", is_active),
            ("draft_mode", draft_mode),
        )
        if value is not UNSET
    }
    _device_fields_validate(sent)
    if "name" in sent:
        sent["name"] = name.strip()
    with device_write(uuid=uuid) as device, device_events(device) as recorder:
        changes = {field_name: value for field_name, value in sent.items() if getattr(device, field_name) != value}
        if changes.get("draft_mode") is False and device.target_draft_or_none() is not None:
            raise _draft_pending([device.name])
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


BATCH_SIZE = 500  # devices per transaction of a write to many devices


def _draft_pending(names: list[str]) -> StateConflict:
    return StateConflict(
        "draft_pending",
        f"Undeployed draft on {', '.join(names)}: deploy or discard it before leaving draft mode.",
    )


def _labels_after(before: dict[str, str], *, set: dict[str, str], remove: Iterable[str]) -> dict[str, str]:
    after = {key: value for key, value in before.items() if key not in remove} | set
    if len(after) > LABELS_PER_DEVICE_MAX:
        raise ValidationError(
            {"labels": [f"A device has at most {LABELS_PER_DEVICE_MAX} labels; this change would leave {len(after)}."]}
        )
    return dict(sorted(after.items()))


def _labels_change_validate(set: object, remove: object) -> tuple[dict[str, str], list[str]]:
    """A change of labels: ``set`` (keys to values, added or replaced) and ``remove`` (keys), checked."""
    to_set = labels_validate(set, field="set")
    if not isinstance(remove, list | tuple):
        raise ValidationError({"remove": ["Must be a list of label keys."]})
    problems = [problem for key in remove if (problem := label_key_problem(key))]
    if problems:
        raise ValidationError({"remove": [problem[0].upper() + problem[1:] + "." for problem in problems]})
    both = sorted(key for key in remove if key in to_set)
    if both:
        raise ValidationError({"remove": [f"Keys both set and removed: {', '.join(both)}."]})
    return to_set, list(remove)


def _labels_store(*, changes: dict[int, tuple[dict[str, str], dict[str, str]]]) -> None:
    """Write each device's labels from ``before`` to ``after`` (device id -> (before, after)): one DELETE and one
    upsert for all of them."""
    # Devices losing the same keys (all of them, in a bulk change) share one condition.
    losing: dict[frozenset[str], list[int]] = {}
    for device_id, (before, after) in changes.items():
        keys = frozenset(key for key in before if key not in after)
        if keys:
            losing.setdefault(keys, []).append(device_id)
    if losing:
        condition = Q()
        for keys, device_ids in losing.items():
            condition |= Q(device_id__in=device_ids, key__in=sorted(keys))
        DeviceLabel.objects.filter(condition).delete()
    upserts = [
        DeviceLabel(device_id=device_id, key=key, value=value)
        for device_id, (before, after) in changes.items()
        for key, value in after.items()
        if before.get(key) != value
    ]
    if upserts:
        DeviceLabel.objects.bulk_create(
            upserts, update_conflicts=True, unique_fields=["device", "key"], update_fields=["value"]
        )


def _labels_record(recorder: EventRecorder, before: dict, after: dict, user: RequestUser) -> None:
    recorder.record(EventTypeChoices.DEVICE_LABELS_CHANGED, {"before": before, "after": after}, actor=actor_label(user))


def _labels_changed_announce(device_ids: list[int]) -> None:
    """Tell the layers above, once the change commits; a receiver's failure is logged, not the writer's."""
    transaction.on_commit(partial(device_labels_changed.send, sender=DeviceLabel, device_ids=device_ids), robust=True)


def _device_labels_replace(*, device_uuid: uuid_lib.UUID | str, user: RequestUser, change: Any) -> dict[str, str]:
    """One device's labels, ``change(before) -> after``, under its lock: written, recorded and announced when
    they changed."""
    with device_write(uuid=device_uuid) as device, device_events(device) as recorder:
        before = dict(device.labels.order_by("key").values_list("key", "value"))
        after = change(before)
        if after != before:
            _labels_store(changes={device.pk: (before, after)})
            _labels_record(recorder, before, after, user)
            _labels_changed_announce([device.pk])
        return after


def device_labels_store_new(*, device: Device, labels: dict[str, str], actor: str) -> None:
    """The first labels of a device being created (registration: its provisioning key's defaults), in its unit of
    work: stored, recorded and announced like any change."""
    labels = dict(sorted(labels.items()))  # as stored in a JSON column: PostgreSQL's jsonb keeps no order
    _labels_store(changes={device.pk: ({}, labels)})
    with device_events(device) as recorder:
        recorder.record(EventTypeChoices.DEVICE_LABELS_CHANGED, {"before": {}, "after": labels}, actor=actor)
    _labels_changed_announce([device.pk])


def device_labels_set(*, device_uuid: uuid_lib.UUID | str, labels: dict[str, str], user: RequestUser) -> dict[str, str]:
    """Replace a device's labels with ``labels``; returns them as stored."""
    new = dict(sorted(labels_validate(labels).items()))
    return _device_labels_replace(device_uuid=device_uuid, user=user, change=lambda before: new)


def device_labels_update(
    *, device_uuid: uuid_lib.UUID | str, set: dict[str, str], remove: list[str], user: RequestUser
) -> dict[str, str]:
    """Set some labels (added or replaced) and remove others (an absent key is no error); returns all of them."""
    to_set, to_remove = _labels_change_validate(set, remove)
    return _device_labels_replace(
        device_uuid=device_uuid, user=user, change=lambda before: _labels_after(before, set=to_set, remove=to_remove)
    )


@dataclass(frozen=True)
class BulkResult:
    matched: int  # devices the selector selected
    changed: int  # of which this call changed


def _in_batches(
    selected: QuerySet[Device], *, fields: tuple[str, ...], batch_size: int, apply: Callable[[list[tuple]], int]
) -> BulkResult:
    """``apply`` to the selected devices, ``batch_size`` at a time in order of id, each batch in a transaction of
    its own holding its rows locked (so no transaction spans the fleet, and two bulk writes lock in one order).
    ``apply`` gets the batch's rows, ``(pk, *fields)``, and answers how many devices it changed."""
    matched = changed = 0
    last_pk = 0
    while True:
        with transaction.atomic():
            batch = list(
                selected.filter(pk__gt=last_pk)
                .order_by("pk")
                .select_for_update()
                .values_list("pk", *fields)[:batch_size]
            )
            if not batch:
                break
            last_pk = batch[-1][0]
            matched += len(batch)
            changed += apply(batch)
        if len(batch) < batch_size:
            break
    return BulkResult(matched=matched, changed=changed)


def _selected(selector: Selector | str, uuids: Iterable[uuid_lib.UUID | str] | None) -> QuerySet[Device]:
    selector = Selector.parse(selector) if isinstance(selector, str) else selector
    selected = Device.objects.filter(selector.q())
    return selected if uuids is None else selected.filter(uuid__in=list(uuids))


def devices_labels_update(
    *,
    selector: Selector | str,
    set: dict[str, str],
    remove: list[str],
    user: RequestUser,
    uuids: Iterable[uuid_lib.UUID | str] | None = None,
    batch_size: int = BATCH_SIZE,
) -> BulkResult:
    """``device_labels_update`` on every device the selector selects (and, given ``uuids``, only among those), in
    batches (``_in_batches``). Each batch writes in a constant number of statements plus one event INSERT per
    changed device, and announces its changed devices once.

    A change that would leave a selected device with too many labels is refused before anything is written."""
    selected = _selected(selector, uuids)
    to_set, to_remove = _labels_change_validate(set, remove)
    _labels_room_check(selected, to_set, to_remove)

    def apply(batch: list[tuple]) -> int:
        changes = _labels_batch_changes([pk for pk, _ in batch], to_set, to_remove)
        if not changes:
            return 0
        _labels_store(changes=changes)
        Device.objects.filter(pk__in=changes).update(revision=F("revision") + 1)
        for pk, uuid in batch:
            if pk in changes:
                with event_recording(str(uuid)) as recorder:
                    _labels_record(recorder, *changes[pk], user)
        _labels_changed_announce(sorted(changes))
        return len(changes)

    return _in_batches(selected, fields=("uuid",), batch_size=batch_size, apply=apply)


def _labels_room_check(selected: QuerySet[Device], to_set: dict[str, str], remove: list[str]) -> None:
    """Refuse, in one query, a change that would leave a selected device with more labels than allowed."""
    if not to_set:
        return
    kept = Count("labels", filter=~Q(labels__key__in=[*to_set, *remove]))
    crowded = list(
        selected.annotate(kept=kept)
        .filter(kept__gt=LABELS_PER_DEVICE_MAX - len(to_set))
        .values_list("name", flat=True)[:5]
    )
    if crowded:
        raise ValidationError(
            {
                "set": [
                    f"A device has at most {LABELS_PER_DEVICE_MAX} labels; this change would leave more on: "
                    f"{', '.join(crowded)}."
                ]
            }
        )


def _labels_batch_changes(
    device_ids: list[int], to_set: dict[str, str], remove: list[str]
) -> dict[int, tuple[dict[str, str], dict[str, str]]]:
    """The devices of a batch whose labels the change changes: id -> (before, after), from one query."""
    current: dict[int, dict[str, str]] = {pk: {} for pk in device_ids}
    rows = DeviceLabel.objects.filter(device_id__in=device_ids).values_list("device_id", "key", "value")
    for device_id, key, value in rows:
        current[device_id][key] = value
    changes = {}
    for pk, labels in current.items():
        before = dict(sorted(labels.items()))
        after = _labels_after(before, set=to_set, remove=remove)
        if after != before:
            changes[pk] = (before, after)
    return changes


def devices_draft_mode_set(
    *,
    selector: Selector | str,
    enabled: bool,
    user: RequestUser,
    uuids: Iterable[uuid_lib.UUID | str] | None = None,
    batch_size: int = BATCH_SIZE,
) -> BulkResult:
    """Put every device the selector selects (among ``uuids``, given) in draft mode, or take it out, in batches
    (``_in_batches``); each device that changes gets a ``device.updated`` event. Leaving draft mode is refused,
    before anything is written, while a selected device has a draft (and a device that got one meanwhile is left
    in draft mode)."""
    if type(enabled) is not bool:
        raise ValidationError({"enabled": ["Must be a boolean."]})
    selected = _selected(selector, uuids)
    if not enabled:
        drafted = list(selected.filter(target_draft__isnull=False).order_by("name").values_list("name", flat=True)[:5])
        if drafted:
            raise _draft_pending(drafted)

    def apply(batch: list[tuple]) -> int:
        flipped = {pk: uuid for pk, uuid, mode in batch if mode != enabled}
        if not enabled:  # under the batch's locks: no draft can appear on these devices now
            for pk in DeviceTargetDraft.objects.filter(device_id__in=flipped).values_list("device_id", flat=True):
                del flipped[pk]
        if not flipped:
            return 0
        Device.objects.filter(pk__in=flipped).update(
            draft_mode=enabled, revision=F("revision") + 1, updated_at=timezone.now()
        )
        for uuid in flipped.values():
            with event_recording(str(uuid)) as recorder:
                recorder.record(
                    EventTypeChoices.DEVICE_UPDATED, {"changes": {"draft_mode": enabled}}, actor=actor_label(user)
                )
        return len(flipped)

    return _in_batches(selected, fields=("uuid", "draft_mode"), batch_size=batch_size, apply=apply)
