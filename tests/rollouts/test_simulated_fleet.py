"""A simulated fleet (``manage.py simulate_fleet``: agents speaking the real agent's protocol over HTTP to a live
server) through two staged rollouts: the first goes through every stage and finishes; the second, with every
sensor failing on one label's devices (``--fail-label``), pauses itself once that group is admitted, with the
reasons, and its abort brings every device it touched back. A webhook receiver is told of each step; the read model,
``rebuild_read_model --check`` and ``replay_events --check`` stay clean throughout."""

import io
import math
from collections import Counter

import pytest
from django.core.management import call_command
from django.db import connection

from devices.models import Device, DeviceCurrentState, DeviceTargetState
from devices.services import device_labels_set
from fleetconfig import services as fleet
from rollouts import services
from rollouts.choices import (
    ROLLOUT_ABORTED,
    ROLLOUT_FINISHED,
    ROLLOUT_PAUSED,
    ROLLOUT_STAGE_STARTED,
)
from rollouts.models import Rollout, RolloutDevice
from rollouts.selectors import rollout_progress
from tests.fleetconfig.conftest import template_sensor
from tests.webhooks.conftest import endpoint_for
from tests.webhooks.receiver import Receiver

from .conftest import rendered

pytestmark = pytest.mark.django_db(transaction=True)

# A few hundred devices on PostgreSQL; on SQLite the live server answers one request at a time (it shares the
# in-memory database through one connection, about 45 ms a request here), so the same run takes a smaller fleet.
SQLITE = connection.vendor == "sqlite"
DEVICES = 40 if SQLITE else 200
CONCURRENCY = 1 if SQLITE else 4
DURATION = 6.0 if SQLITE else 10.0  # seconds a run lasts: every agent polls and reports at least once
STEPS = (ROLLOUT_STAGE_STARTED, ROLLOUT_PAUSED, ROLLOUT_ABORTED, ROLLOUT_FINISHED)


def simulate(live_server, fail_label: str | None = None) -> str:
    out = io.StringIO()
    call_command(
        "simulate_fleet",
        url=live_server.url,
        prefix="ro",
        devices=DEVICES,
        sensors=1,
        failure_rate=0.0,
        fail_label=fail_label,
        duration=DURATION,
        poll_interval=1.0,
        report_interval=1.0,
        metrics_interval=60.0,
        concurrency=CONCURRENCY,
        seed=5,
        quiet=True,
        stdout=out,
        stderr=io.StringIO(),
    )
    return out.getvalue()


def clean() -> None:
    for command in ("rebuild_read_model", "replay_events"):
        call_command(command, "--check", stdout=io.StringIO(), stderr=io.StringIO())


def in_sync(devices) -> bool:
    targets = dict(DeviceTargetState.objects.filter(device__in=devices).values_list("device_id", "version"))
    reported = dict(DeviceCurrentState.objects.filter(device__in=devices).values_list("device_id", "version"))
    return all(reported.get(pk) == version for pk, version in targets.items())


def rollout_devices(rollout: Rollout) -> list[Device]:
    return list(Device.objects.filter(pk__in=RolloutDevice.objects.filter(rollout=rollout).values("device_id")))


def settle(live_server, devices, tries: int = 3) -> None:
    """The fleet runs until every agent reports its target (a run's agents may lag behind a slow server)."""
    for _ in range(tries):
        output = simulate(live_server)
        if in_sync(devices):
            return
    raise AssertionError(output)


def drive_until(rollout: Rollout, live_server, wanted: str, *, fail_label: str | None = None, passes: int = 6):
    """Driver pass, then the fleet runs; again, until the rollout is ``wanted`` (a status)."""
    for _ in range(passes):
        services.rollouts_drive()
        rollout.refresh_from_db()
        if rollout.status == wanted:
            return
        if fail_label:
            simulate(live_server, fail_label)
        else:
            settle(live_server, rollout_devices(rollout))
    raise AssertionError(f"{rollout.name} is {rollout.status} at stage {rollout.current_stage}, not {wanted}")


def test_a_simulated_fleet_through_a_finished_rollout_then_a_paused_and_aborted_one(live_server, settings):
    settings.SENSORSYNC_WEBHOOK_BACKOFF_SECONDS = 0
    simulate(live_server)  # creates the fleet
    devices = list(Device.objects.filter(name__startswith="ro-").order_by("name"))
    assert len(devices) == DEVICES
    plants = ("a", "a", "b", "c")  # half a, a quarter b, a quarter c
    for index, device in enumerate(devices):
        device_labels_set(device_uuid=device.uuid, labels={"plant": plants[index % 4]}, user=None)
    group_c = {d.pk for i, d in enumerate(devices) if i % 4 == 3}
    template = fleet.sensor_template_create(
        name="boiler", sensors=[template_sensor("temp", pollInterval=1000)], user=None
    )
    fleet.assignment_create(user=None, name="boilers", template=str(template.uuid), selector="plant")
    settle(live_server, devices)
    assert {rendered(d)["pollInterval"] for d in devices} == {1000}
    clean()

    with Receiver() as receiver:
        endpoint_for(receiver.url, *STEPS)

        # 1. Percent stages, no failure: every stage reaches its threshold and the rollout finishes.
        first = services.rollout_create(
            user=None,
            name="poll-2000",
            kind="template",
            template=str(template.uuid),
            sensors=[template_sensor("temp", pollInterval=2000)],
            stages=[{"percent": 5}, {"percent": 25}, {"percent": 100}],
            success_threshold=95,
            error_threshold=10,
        )
        services.rollouts_drive()
        first_stage = {d.pk for d in devices if rendered(d)["pollInterval"] == 2000}
        assert len(first_stage) == math.ceil(DEVICES * 0.05)  # the others still render v1
        settle(live_server, devices)
        clean()
        drive_until(first, live_server, "finished")
        stages = Counter(RolloutDevice.objects.filter(rollout=first).values_list("stage", flat=True))
        five, quarter = math.ceil(DEVICES * 0.05), math.ceil(DEVICES * 0.25)
        assert stages == {0: five, 1: quarter - five, 2: DEVICES - quarter}
        settle(live_server, devices)
        assert {rendered(d)["pollInterval"] for d in devices} == {2000}
        clean()

        # 2. Groups by label; plant=c's agents fail every sensor: the rollout pauses itself once c is admitted.
        before = {d.pk: DeviceTargetState.objects.get(device=d) for d in devices}
        second = services.rollout_create(
            user=None,
            name="poll-3000",
            kind="template",
            template=str(template.uuid),
            sensors=[template_sensor("temp", pollInterval=3000)],
            stages=[{"selector": "plant=a"}, {"selector": "plant=b"}, {"percent": 100}],
            success_threshold=95,
            error_threshold=10,
            deadline_seconds=600,
        )
        drive_until(second, live_server, "paused", fail_label="plant=c", passes=8)
        assert (second.pause_reason, second.current_stage) == ("threshold", 2)
        progress = rollout_progress(second)
        quarter = DEVICES // 4
        assert [s.targeted for s in progress.stages] == [DEVICES // 2, quarter, quarter]
        assert progress.stages[2].failed == quarter and progress.total.deployed == DEVICES - quarter
        assert f"{quarter} of {DEVICES} online devices failed" in second.pause_detail
        # Each failed device's reason: its first failed sensor with the error the read model keeps for it.
        assert sum(progress.total.reasons.values()) == quarter
        assert all(": " in reason for reason in progress.total.reasons), progress.total.reasons
        clean()

        # The abort: every device it touched gets a new version with what it ran before.
        services.rollout_abort(uuid=second.uuid, user=None)
        settle(live_server, devices)
        for device in devices:
            target = DeviceTargetState.objects.get(device=device)
            assert target.config["sensors"] == before[device.pk].config["sensors"]
            assert target.version > before[device.pk].version
        clean()

        call_command("deliver_webhooks", "--once", stdout=io.StringIO())
        told = Counter((r.json["type"], r.json["data"]["name"]) for r in receiver.received)
    assert told == {
        (ROLLOUT_STAGE_STARTED, "poll-2000"): 3,
        (ROLLOUT_FINISHED, "poll-2000"): 1,
        (ROLLOUT_STAGE_STARTED, "poll-3000"): 3,
        (ROLLOUT_PAUSED, "poll-3000"): 1,
        (ROLLOUT_ABORTED, "poll-3000"): 1,
    }
    assert group_c  # the failing group is a quarter of the fleet
