"""The retry budget with a simulated fleet (``manage.py simulate_fleet``: agents that speak as the real one, failing
sensors on purpose) against pytest-django's live server over real HTTP, with a webhook receiver on loopback."""

import io

import pytest
from django.core.management import call_command
from django.db import connection

from devices.models import Device, DeviceTargetState
from events.models import Event
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from tests.webhooks.conftest import endpoint_for
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.django_db(transaction=True)

EXHAUSTED = "device.retry_budget_exhausted"


def test_every_device_whose_apply_failed_is_held_once_and_its_receiver_told_once(live_server, settings):
    settings.SENSORSYNC_RETRY_BUDGET = 1  # a simulated agent applies its target once: its first failure is the last
    settings.SENSORSYNC_WEBHOOK_BACKOFF_SECONDS = 0
    with Receiver() as receiver:
        _, secret = endpoint_for(receiver.url, EXHAUSTED)
        call_command(
            "simulate_fleet",
            url=live_server.url,
            prefix="held",
            devices=4,
            sensors=4,
            failure_rate=0.2,
            duration=2.0,
            poll_interval=0.3,
            report_interval=0.2,
            concurrency=1 if connection.vendor == "sqlite" else 3,
            seed=11,
            quiet=True,
            stdout=io.StringIO(),
            stderr=io.StringIO(),
        )
        call_command("deliver_webhooks", "--once", stdout=io.StringIO())

    devices = list(Device.objects.filter(name__startswith="held-"))
    held = set()
    for device in devices:
        target = DeviceTargetState.objects.get(device=device)
        failed = DeviceSensor.objects.filter(device=device, deployment_status=Status.FAILED)
        exhausted_events = Event.objects.filter(aggregate_id=str(device.uuid), type=EXHAUSTED)
        if failed.exists():
            held.add(str(device.uuid))
            assert (target.retry_exhausted_version, target.failed_applies) == (target.version, 1)
            assert all(
                e.startswith("Retry budget exhausted") for e in failed.values_list("deployment_error", flat=True)
            )
            assert exhausted_events.count() == 1
        else:
            assert target.retry_exhausted_at is None and not exhausted_events.exists()
    assert 0 < len(held) < len(devices)  # with seed 11, devices of both kinds
    told = {received.json["aggregateId"] for received in receiver.received}
    assert told == held and len(receiver.received) == len(held)
    assert all(received.verifies(secret) for received in receiver.received)
    call_command("rebuild_read_model", "--check", stdout=io.StringIO())
    call_command("replay_events", "--check", stdout=io.StringIO())
