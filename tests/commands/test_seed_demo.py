import re
from collections import Counter

import pytest
from django.core.management import CommandError

from devices.keys import key_digest
from devices.models import Device
from events.models import Event
from sensors.models import DeviceSensor
from tests.helpers import agent_headers, state_url

from .conftest import run

DEMO_NAMES = ["press-line-1", "boiler-room", "packaging-cell", "cold-store"]


def statuses(name: str) -> dict[str, str]:
    return dict(DeviceSensor.objects.filter(device__name=name).values_list("name", "deployment_status"))


def test_demo_shows_every_status(db):
    run("seed_demo")

    assert sorted(Device.objects.values_list("name", flat=True)) == sorted(DEMO_NAMES)
    assert set(DeviceSensor.objects.values_list("deployment_status", flat=True)) == {
        "pending",
        "deployed",
        "failed",
        "reconciling",
    }
    assert set(statuses("press-line-1").values()) == {"deployed"}
    assert not Device.objects.get(name="press-line-1").target_state.needs_deployment
    assert set(statuses("packaging-cell").values()) == {"pending"}
    assert sorted(statuses("cold-store").values()) == ["deployed", "reconciling", "reconciling"]

    failed = DeviceSensor.objects.get(device__name="boiler-room", deployment_status="failed")
    assert failed.deployment_error == "connection refused"
    assert not failed.running


def test_the_protocols_are_mixed_and_the_sensors_realistic(db):
    run("seed_demo")

    assert set(DeviceSensor.objects.values_list("protocol", flat=True)) == {"modbus", "can", "opcua", "mqtt"}
    for row in DeviceSensor.objects.all():
        # A sensor still running after its removal has no desired data points to show where the agent sent none.
        assert row.connection and (row.data_points or (row.desired is None and "dataPoints" in row.unreported_fields))


def test_agent_reports_went_through_the_agent_path(db):
    run("seed_demo")

    device = Device.objects.select_related("current_state").get(name="boiler-room")
    assert device.agent_version == "1.0.84"
    assert device.last_seen_at is not None
    assert device.facts["network_interfaces"][0]["name"] == "eth0"
    health = device.current_state.sensor_health["endpoints_health"]
    assert health["mqtt-environment"]["lastError"] == "connection refused"
    failed = DeviceSensor.objects.get(device=device, name="mqtt-environment")
    assert (failed.deployment_status, failed.health_status, failed.deployment_error) == (
        "failed",
        "offline",
        "connection refused",
    )
    # The agent's own row shape: no dataPoints reported, so the rows list them as unreported and show the target's.
    deployed = DeviceSensor.objects.filter(device=device, deployment_status="deployed")
    assert deployed and all(row.unreported_fields == ["dataPoints"] and row.data_points for row in deployed)
    reported = Event.objects.get(aggregate_id=str(device.uuid), type="current_state.reported")
    assert reported.metadata == {**reported.metadata, "source": "command", "actor": f"agent:{device.uuid}"}
    assert set(Event.objects.values_list("metadata__source", flat=True)) == {"command"}


def test_prints_name_uuid_and_a_working_key_per_device(db, api_client):
    out, _ = run("seed_demo")

    for name in DEMO_NAMES:
        device = Device.objects.get(name=name)
        block = re.search(rf"{name}: created.*?uuid:\s+(\S+)\n\s+API key:\s+(\S+)", out, re.S)
        assert block.group(1) == str(device.uuid)
        assert key_digest(block.group(2)) == device.api_key_digest
    assert "mqtt-environment         failed       connection refused" in out
    assert "Demo data: 4 devices created, 0 skipped." in out

    # The printed key is usable by a (simulated) agent.
    key = re.search(r"press-line-1: created.*?API key:\s+(\S+)", out, re.S).group(1)
    device = Device.objects.get(name="press-line-1")
    response = api_client.get(state_url(device.uuid), headers=agent_headers(key))
    assert response.status_code == 200


def test_running_twice_creates_no_duplicates(db):
    run("seed_demo")
    events = Event.objects.count()

    out, _ = run("seed_demo")

    assert Counter(Device.objects.values_list("name", flat=True)) == Counter(DEMO_NAMES)
    assert Event.objects.count() == events
    assert out.count("already exists") == 4
    assert "API key:" not in out
    assert "Demo data: 0 devices created, 4 skipped." in out


def test_a_second_run_with_more_devices_adds_only_the_new_ones(db):
    run("seed_demo", "--devices", "2")

    out, _ = run("seed_demo", "--devices", "5")

    assert Device.objects.count() == 5
    assert "Demo data: 3 devices created, 2 skipped." in out


def test_devices_and_sensors_options(db):
    run("seed_demo", "--devices", "6", "--sensors", "9")

    assert Device.objects.count() == 6
    assert Device.objects.filter(name__in=["demo-device-5", "demo-device-6"]).count() == 2
    # 9 sensors per device, minus the one removed on cold-store.
    counts = Counter(DeviceSensor.objects.values_list("device__name", flat=True))
    assert counts["press-line-1"] == 9
    assert counts["cold-store"] == 9  # the removed sensor still runs: its row stays (reconciling)
    names = list(DeviceSensor.objects.filter(device__name="press-line-1").values_list("name", flat=True))
    assert len(set(names)) == 9


def test_one_sensor_per_device_still_works(db):
    run("seed_demo", "--sensors", "1")

    assert set(statuses("boiler-room").values()) == {"failed"}
    assert set(statuses("cold-store").values()) == {"reconciling"}


def test_the_seeded_read_model_is_consistent(db):
    run("seed_demo")

    out, _ = run("rebuild_read_model", "--check")

    assert "matches" in out


@pytest.mark.parametrize("option", [["--devices", "0"], ["--sensors", "0"], ["--sensors", "101"]])
def test_out_of_range_options_are_errors(db, option):
    with pytest.raises(CommandError, match="must be a whole number") as exc:
        run("seed_demo", *option)

    assert exc.value.returncode == 1
    assert not Device.objects.exists()


def test_the_devices_that_reported_have_a_log_with_their_adapters_errors(db):
    from devicelogs.models import DeviceLogLine

    run("seed_demo")
    errors = DeviceLogLine.objects.filter(device__name="boiler-room", level="error").values_list("message", flat=True)
    assert [message for message in errors if message.endswith("connection refused")]
    assert DeviceLogLine.objects.filter(device__name="press-line-1", level="info").exists()
    assert not DeviceLogLine.objects.filter(device__name="packaging-cell").exists()  # it never connected
