"""Reads of devices, their target history and provisioning keys, and the agent's key lookups (one query each)."""

import hashlib
import uuid as uuid_lib

import orjson
from django.db import connection, transaction
from django.db.models import Prefetch, QuerySet

from events.choices import EventTypeChoices
from events.models import Event
from events.retention import EventRows
from events.selectors import snapshot_get
from events.services import DEVICE_AGGREGATE
from sensorsync_project.hot_queries import KeyedInstance

from .keys import key_digest
from .models import Device, DeviceLabel, DeviceTargetState, DeviceTargetStateVersion, ProvisioningKey
from .target_config import config_upcast


def device_list() -> QuerySet[Device]:
    return Device.objects.select_related("target_state", "current_state", "provisioned_by").order_by("name", "id")


def device_list_shown() -> QuerySet[Device]:
    """Devices as the API and pages show them: with their labels (one more query per page) and their draft's
    summary (joined; the draft's content left out)."""
    return (
        device_list()
        .select_related("target_draft", "target_draft__updated_by")
        .defer("target_draft__config", "target_draft__apps")
        .prefetch_related(
            Prefetch("labels", queryset=DeviceLabel.objects.order_by("key").only("device", "key", "value"))
        )
    )


def device_shown_get(*, uuid: uuid_lib.UUID | str) -> Device:
    return device_list_shown().get(uuid=uuid)


def provisioning_key_list() -> QuerySet[ProvisioningKey]:
    return ProvisioningKey.objects.select_related("created_by", "revoked_by").order_by("-created_at", "-id")


KEY_DEVICES_SHOWN = 100


def provisioning_key_devices(*, key: ProvisioningKey) -> QuerySet[Device]:
    """The newest devices a key registered, as many as a page shows (the API's device list has them all)."""
    return key.devices.order_by("-created_at", "-id")[:KEY_DEVICES_SHOWN]


def device_get(*, uuid: uuid_lib.UUID | str) -> Device:
    return device_list().get(uuid=uuid)


def device_exists(*, uuid: uuid_lib.UUID | str) -> bool:
    return Device.objects.filter(uuid=uuid).exists()


def target_versions(*, device_uuid: uuid_lib.UUID | str) -> QuerySet[DeviceTargetStateVersion]:
    return DeviceTargetStateVersion.objects.filter(device__uuid=device_uuid).select_related("created_by")


def target_version_digest(config: dict, apps: dict) -> str:
    """A target version's content in a few bytes: what a snapshot keeps of a version whose event was dropped."""
    return hashlib.blake2b(orjson.dumps([config, apps], option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def target_history_fold(state: dict | None, events: EventRows) -> dict:
    """Retention's snapshot of a device's target history (``events.retention``): each version the dropped
    ``target_state.updated`` events recorded, by its content's digest."""
    versions = dict((state or {}).get("versions", {}))
    for _sequence, _type, data in events:
        # Events are never rewritten: one written before config.sensors was the key is read through the upcast.
        versions[str(data["version"])] = target_version_digest(config_upcast(data["config"]), data["apps"])
    return {"versions": versions}


def target_history_replay_diff(*, device: Device) -> list[str]:
    """Rebuild every target version of a device from its event log alone and compare with the stored history
    and the current target. Empty when the log, the history and the target agree; else one line per problem.

    Where retention dropped the oldest events, the replay starts from the device's snapshot: the versions those
    events recorded are compared by digest, and the log must go on from the snapshot's last sequence."""
    with transaction.atomic():
        if connection.vendor == "postgresql" and not connection.savepoint_ids:
            # One view of the log, the snapshot and the history (a prune may commit meanwhile).
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        snapshot = snapshot_get(aggregate_id=str(device.uuid))
        events = Event.objects.filter(aggregate_type=DEVICE_AGGREGATE, aggregate_id=str(device.uuid))
        rows = events.order_by("sequence").values_list("sequence", "type", "data").iterator(chunk_size=500)
        through = snapshot.through_sequence if snapshot else 0
        problems, replayed = _log_replay(device, rows, through=through)
        stored = {v.version: (v.config, v.apps) for v in DeviceTargetStateVersion.objects.filter(device=device)}
        target = DeviceTargetState.objects.get(device=device)
    folded = {int(v): digest for v, digest in snapshot.state.get("versions", {}).items()} if snapshot else {}
    problems += _stored_history_problems(device, replayed, folded, stored)
    problems += _current_target_problems(device, target, replayed, folded)
    return problems


def _log_replay(device: Device, rows: EventRows, *, through: int) -> tuple[list[str], dict[int, tuple[dict, dict]]]:
    """The log's gaps and repeats after the snapshot's last sequence (``through``), and each target version its
    events record."""
    problems: list[str] = []
    replayed: dict[int, tuple[dict, dict]] = {}
    expected_sequence, previous = through + 1, None
    for sequence, event_type, data in rows:
        if sequence == previous:  # unique per month only on PostgreSQL: the replay finds one across months
            problems.append(f"{device.uuid}: event sequence {sequence} appears twice")
        elif sequence > through:  # one at or below is older than the snapshot, kept while a later one went
            if sequence != expected_sequence:
                problems.append(f"{device.uuid}: event sequence jumps from {expected_sequence - 1} to {sequence}")
            expected_sequence = sequence + 1
        previous = sequence
        if event_type == EventTypeChoices.TARGET_STATE_UPDATED:
            replayed[data["version"]] = (config_upcast(data["config"]), data["apps"])
    return problems, replayed


def _stored_history_problems(
    device: Device,
    replayed: dict[int, tuple[dict, dict]],
    folded: dict[int, str],
    stored: dict[int, tuple[dict, dict]],
) -> list[str]:
    """Each stored version against what the log records of it, or the snapshot's digest of a dropped event."""
    problems = []
    for version in sorted(set(replayed) | set(folded) | set(stored)):
        if version not in stored:
            problems.append(f"{device.uuid} v{version}: in the event log but missing from the stored history")
        elif version in replayed:
            if replayed[version][0] != stored[version][0]:
                problems.append(f"{device.uuid} v{version}: stored config differs from the config the log records")
            elif replayed[version][1] != stored[version][1]:
                problems.append(f"{device.uuid} v{version}: stored apps differ from the apps the log records")
        elif version not in folded:
            problems.append(f"{device.uuid} v{version}: in the stored history but no event records it")
        elif folded[version] != target_version_digest(*stored[version]):
            problems.append(f"{device.uuid} v{version}: stored version differs from the snapshot of the dropped log")
    return problems


def _current_target_problems(
    device: Device, target: DeviceTargetState, replayed: dict[int, tuple[dict, dict]], folded: dict[int, str]
) -> list[str]:
    """The current target against the log's last version (or the snapshot's digest of it)."""
    last = max([*replayed, *folded], default=None)
    if last is None or last != target.version:
        return [f"{device.uuid}: the log's last version is {last}, target is v{target.version}"]
    if last in replayed and replayed[last] != (target.config, target.apps):
        return [f"{device.uuid} v{target.version}: the current target differs from what the log records"]
    if last not in replayed and folded[last] != target_version_digest(target.config, target.apps):
        return [f"{device.uuid} v{target.version}: the current target differs from the snapshot of the log"]
    return []


def device_for_key(*, api_key: str) -> Device | None:
    """The device an agent key belongs to, with both states (for tools; the endpoints use the two below)."""
    return (
        Device.objects.select_related("target_state", "current_state")
        .filter(api_key_digest=key_digest(api_key))
        .first()
    )


# What no agent request reads of the device: its latest facts (metrics, processes, interfaces), its description and
# what registration and staff set, and its timestamps. Left out of the agent's lookups (fewer columns to read and
# convert on every request); a read of one loads it (tests/agent/test_query_counts.py would count it).
AGENT_DEFERRED_DEVICE = (
    "facts",
    "description",
    "facts_reported_at",
    "last_fetched_at",
    "device_type",
    "mac_address",
    "application_id",
    "created_at",
    "updated_at",
)


def _device_by_digest(*, states: dict[str, tuple[str, ...]]) -> KeyedInstance:
    return KeyedInstance(Device, key="api_key_digest", deferred=AGENT_DEFERRED_DEVICE, related=states)


# The agent's lookups: one query each, written once per process (sensorsync_project.hot_queries).
_POLL_LEAN = _device_by_digest(states={"target_state": ("config", "apps", "sensor_statuses", "drift")})
_POLL_FULL = _device_by_digest(states={"target_state": ("sensor_statuses", "drift")})
# What a report's lookup leaves out of the target: an unchanged report (most of them) needs neither, and a changed
# one gets them from the statement that locks the device (reconciliation.services.reports._report_lock).
REPORT_DEFERRED_TARGET = ("config", "drift")
_REPORT = _device_by_digest(
    states={
        "target_state": ("apps", *REPORT_DEFERRED_TARGET),
        "current_state": ("config", "apps", "sensor_health"),
    }
)


def device_for_poll(*, api_key: str, with_content: bool) -> Device | None:
    """The device an agent key belongs to, with its target state: the one query of a poll.

    A poll that sends If-None-Match is almost always answered 304 from the version alone, so it leaves the target's
    config and apps out (decoding them is most of the cost) and a 200 loads them; a poll without it is a 200."""
    return (_POLL_FULL if with_content else _POLL_LEAN).get(key_digest(api_key))


def device_for_report(*, api_key: str) -> Device | None:
    """The device an agent key belongs to, with what a report needs: the target's version and cached sensor
    statuses (the verdict) and the stored report's version and digest, in one query."""
    return _REPORT.get(key_digest(api_key))
