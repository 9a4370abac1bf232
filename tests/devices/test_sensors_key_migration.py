"""The move of the desired sensors from ``config.protocolAdapterDevices`` to ``config.sensors``: stored targets,
their history and stored reports are converted by a data migration; events are not rewritten, and replaying them
still rebuilds every version."""

import uuid

import pytest
from django.core.management import call_command

from devices.models import DeviceCurrentState, DeviceTargetState, DeviceTargetStateVersion
from events.models import Event
from tests.factories import DeviceFactory
from tests.helpers import migrate_to

BEFORE = [("devices", "0003_device_facts_and_report_parts")]
SENSOR = {
    "id": "2b1c8f0e-6a43-4c55-9d0b-2f3e7a9c1d44",
    "name": "boiler-temp",
    "protocol": "modbus",
    "enabled": True,
    "pollInterval": 5000,
    "connection": {"host": "10.0.0.5", "port": 502},
    "dataPoints": [],
    "metadata": {},
}


@pytest.mark.django_db(transaction=True)
def test_stored_configs_move_to_config_sensors_and_old_events_still_replay(latest_migrations):
    device = DeviceFactory()
    old = migrate_to(BEFORE)
    legacy = {"protocolAdapterDevices": [SENSOR], "logLevel": "debug"}
    old.get_model("devices", "DeviceTargetState").objects.filter(device_id=device.pk).update(config=legacy, version=2)
    old.get_model("devices", "DeviceTargetStateVersion").objects.create(
        device_id=device.pk, version=2, config=legacy, apps={}, source="api", change={}
    )
    old.get_model("devices", "DeviceCurrentState").objects.create(
        device_id=device.pk,
        config={"protocolAdapterDevices": [SENSOR]},
        apps={},
        version=2,
        sensor_health={"boiler-temp": {"healthy": False, "lastError": "timeout"}},
        digest="d" * 64,
    )
    # The event log as it was written then (append-only: the migration leaves it alone).
    Event.objects.filter(aggregate_id=str(device.uuid), type="target_state.updated").update(
        data={"version": 1, "config": {"protocolAdapterDevices": []}, "apps": {}, "change": {}}
    )
    Event.objects.create(
        type="target_state.updated",
        aggregate_type="device",
        aggregate_id=str(device.uuid),
        sequence=Event.objects.filter(aggregate_id=str(device.uuid)).count() + 1,
        data={"version": 2, "config": legacy, "apps": {}, "change": {}},
        correlation_id=uuid.uuid4(),
    )
    old.get_model("devices", "DeviceTargetStateVersion").objects.filter(device_id=device.pk, version=1).update(
        config={"protocolAdapterDevices": []}
    )

    migrate_to(latest_migrations)

    expected = {"sensors": [SENSOR], "logLevel": "debug"}
    assert DeviceTargetState.objects.get(device=device).config == expected
    assert DeviceTargetStateVersion.objects.get(device=device, version=2).config == expected
    assert DeviceTargetStateVersion.objects.get(device=device, version=1).config == {"sensors": []}
    current = DeviceCurrentState.objects.get(device=device)
    assert current.config == {"sensors": [SENSOR]}
    assert current.sensor_health == {
        "sensor_health": {
            "boiler-temp": {"status": "offline", "connected": False, "quality": "", "lastError": "timeout"}
        }
    }
    assert (current.digest, current.parts) == ("", {})  # the next report is compared afresh
    assert Event.objects.get(aggregate_id=str(device.uuid), sequence=3).data["config"] == legacy
    call_command("replay_events", "--check")  # exits 1 (SystemExit) on any difference


@pytest.mark.django_db(transaction=True)
def test_the_migration_reverses(latest_migrations):
    device = DeviceFactory()
    old = migrate_to(BEFORE)
    assert old.get_model("devices", "DeviceTargetState").objects.get(device_id=device.pk).config == {
        "protocolAdapterDevices": []
    }
    migrate_to(latest_migrations)
    assert DeviceTargetState.objects.get(device=device).config == {"sensors": []}
