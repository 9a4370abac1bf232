"""Statement counts of re-rendering 1,000 devices: batched, not N+1.

A job reads each batch of devices (their desired states, labels and overrides, and the assignments with their
template versions) in a constant number of statements whatever the batch's size, writes each device that changed
through the target write path (a constant number of statements per device: its lock, its new version and history,
its event, its rows), stores the batch's problems in two statements and its progress in one. A device whose
rendered configuration did not change costs no statement of its own."""

import uuid

import pytest
from django.db import connection
from django.test import override_settings

from devices.keys import key_digest
from devices.models import Device, DeviceLabel, DeviceTargetState
from fleetconfig import services
from fleetconfig.models import RenderJob
from tests.factories import DeviceFactory
from webhooks.selectors import webhook_subscribed_types

from .conftest import desired_sensors, make_template, template_sensor

pytestmark = pytest.mark.django_db

FLEET = 1000
BATCH = 500


def fleet(count: int, labels: dict[str, str]) -> list[int]:
    """``count`` devices with an empty target at version 1 and ``labels``, inserted in bulk (the test's setup, not
    what it measures)."""
    devices = Device.objects.bulk_create(
        Device(name=f"dev-{index:05d}", api_key_digest=key_digest(uuid.uuid4().hex)) for index in range(count)
    )
    if connection.vendor != "postgresql":  # SQLite's bulk_create sets no primary keys before Django 5's RETURNING
        devices = list(Device.objects.filter(name__startswith="dev-").order_by("pk"))
    DeviceTargetState.objects.bulk_create(DeviceTargetState(device=d, config={"sensors": []}) for d in devices)
    DeviceLabel.objects.bulk_create(DeviceLabel(device=d, key=k, value=v) for d in devices for k, v in labels.items())
    return [d.pk for d in devices]


# Per batch: the batch's ids (1); its desired states, labels, overrides, the assignments and their template versions
# (5); its problems stored (a savepoint, one DELETE, its release: 3; an INSERT too when there are any); the job's
# progress (1). Per job: claim, read, finish, read back (4), and the look for a batch after the last (1).
BATCH_READS = 5
PROBLEM_WRITES = 3
PER_BATCH = 1 + BATCH_READS + PROBLEM_WRITES + 1
PER_JOB = 4 + 1
# Per device written: what the target write path costs (savepoint; the lock; the device, target and current state
# read; the target and its history written; the rows read and upserted; the drift episode opened; the target's
# cached statuses; the events; release).
TARGET_WRITE = 11


class StatementCount:
    """Every statement the connection executes inside (Django's query log keeps only the last 9,000)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, execute, sql, params, many, context):
        self.count += 1
        return execute(sql, params, many, context)

    def __enter__(self) -> "StatementCount":
        self._wrapper = connection.execute_wrapper(self)
        self._wrapper.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._wrapper.__exit__(*exc)


def one_device_render_statements() -> int:
    """Rendering one device of its own: the batch's reads and problems, and the one target write."""
    device = DeviceFactory()
    DeviceLabel.objects.create(device=device, key="probe", value="1")
    template = make_template("probe", template_sensor("p1"))
    assignment = services.assignment_create(user=None, name="probe", template=str(template.uuid), selector="probe=1")
    webhook_subscribed_types()  # read once per TTL by each process, not per render: not part of a device's cost
    with StatementCount() as one:
        services.devices_render(device_ids=[device.pk], user=None)
    assert set(desired_sensors(device)) == {"p1"}
    services.assignment_delete(uuid=assignment.instance.uuid, user=None)
    services.devices_render(device_ids=[device.pk], user=None)
    services.sensor_template_delete(uuid=template.uuid, user=None)
    RenderJob.objects.all().delete()
    return one.count


@override_settings(SENSORSYNC_RENDER_INLINE_MAX_DEVICES=0, SENSORSYNC_RENDER_BATCH_SIZE=BATCH)
def test_rendering_1000_devices_costs_a_constant_per_batch_and_per_changed_device():
    assert one_device_render_statements() == BATCH_READS + TARGET_WRITE + PROBLEM_WRITES
    ids = fleet(FLEET, {"plant": "3"})
    template = make_template("boiler-temp", template_sensor("t1"), template_sensor("t2", protocol="can"))
    job = services.assignment_create(user=None, name="plant-3", template=str(template.uuid), selector="plant=3").job
    assert job.total == FLEET

    with StatementCount() as changed:
        done = services.render_job_run(job_id=job.pk)

    assert (done.processed, done.changed, done.unchanged, done.failed) == (FLEET, FLEET, 0, 0)
    batches = FLEET // BATCH
    assert changed.count == PER_JOB + batches * PER_BATCH + FLEET * TARGET_WRITE  # 5 + 2 x 10 + 1,000 x 11
    assert set(desired_sensors(Device.objects.get(pk=ids[-1]))) == {"t1", "t2"}

    # Nothing changed since: the whole fleet is read in batches and not one device is written.
    again = services.render_request(scope={"selector": "plant=3"}, reason="unchanged", user=None)
    with StatementCount() as unchanged:
        done = services.render_job_run(job_id=again.pk)
    assert (done.processed, done.changed, done.unchanged) == (FLEET, 0, FLEET)
    assert unchanged.count == PER_JOB + batches * PER_BATCH  # 25 statements for 1,000 devices
