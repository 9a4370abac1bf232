"""Every exchange the real agent was recorded sending (``../shared/agent-wire``), replayed verbatim against the
server, with the answer and the read model SPEC section 5 asks for.

The device is created by staff with an empty target (version 1), as the recordings' device was. Where a recorded
report names a target version the recording's server had reached, staff first write that version with the sensor
the agent runs, through the API, as an operator would have.
"""

import pytest

from devices.models import Device, DeviceCurrentState
from events.models import Event
from sensors.models import DeviceSensor
from tests.helpers import add_sensor, change_sensor, device_snapshot, events_of, fresh, rows, send_body, verdict

from .wire import FILES, exchange_body, exchanges, recording, replay, sent_sensors

pytestmark = pytest.mark.django_db


def _staff_sensor_like(reported: dict, **overrides) -> dict:
    """The sensor staff define so that the recorded agent runs it as desired (its wire fields, no id)."""
    wanted = {key: reported[key] for key in ("name", "protocol", "pollInterval") if key in reported}
    wanted["enabled"] = bool(reported.get("enabled", True))
    wanted["connection"] = reported.get("connection") or {"host": "127.0.0.1", "port": 5020, "unitId": 1}
    wanted["dataPoints"] = reported.get("dataPoints", [{"name": "temperature", "address": 40001}])
    return {**wanted, **overrides}


def test_every_recording_is_read_and_names_its_agent():
    for name in FILES:
        data = recording(name)
        assert data["agent"] == name.removesuffix(".json")
        assert data["exchanges"], name


def test_2025_11_06_agent_polls_reports_and_is_never_refused(admin_client, agent, device):
    first_poll, first_report, poll_304, plain, metrics = exchanges("agent-2025-11-06.json")

    answer = replay(agent, first_poll, device)
    assert answer.status_code == 200
    served = answer.json()[str(device.uuid)]
    # The desired sensors under config.sensors, where the agent reads them, and under no other key.
    assert served == {"apps": {}, "config": {"sensors": []}, "version": 1}
    assert answer["ETag"] == '"1"'

    # Its first report: facts sent once per start, metrics with a float uptime. Refused with 400 when recorded.
    body = verdict(replay(agent, first_report, device), device)
    assert (body["outcome"], body["reportedVersion"], body["inSync"]) == ("applied", 1, True)
    reported = fresh(device)
    assert (reported.os_version, reported.agent_version, reported.ip_address) == (
        "Debian GNU/Linux 12 (bookworm)",
        "upstream",
        "192.0.2.2",
    )
    assert reported.uptime == 925.16
    assert reported.facts["cpu_usage"] == 68
    assert reported.facts["memory_total"] == 24105
    assert [i["name"] for i in reported.facts["network_interfaces"]] == ["lo", "eth0"]
    assert reported.facts["top_processes"][0] == {"pid": 812, "name": "agent", "cpu": 3.1, "mem": 1.2}
    assert reported.facts_reported_at is not None

    assert replay(agent, poll_304, device).status_code == 304

    # The plain report says what the first said about sensors, apps and version: unchanged, nothing written.
    before = device_snapshot(device)
    assert verdict(replay(agent, plain, device), device)["outcome"] == "unchanged"
    assert device_snapshot(device)["current"] == before["current"]
    assert device_snapshot(device)["events"] == before["events"]

    # Staff had moved the target to version 3 with the sensor the agent then ran.
    running = sent_sensors(metrics)[0]
    add_sensor(admin_client, device, _staff_sensor_like(running, pollInterval=1000))
    change_sensor(admin_client, device, running["name"], {"pollInterval": running["pollInterval"]})

    body = verdict(replay(agent, metrics, device), device)
    assert (body["outcome"], body["targetVersion"], body["reportedVersion"], body["inSync"]) == (
        "applied",
        3,
        3,
        True,
    )
    assert body["sensors"] == {"modbus-sensor-1": {"status": "deployed", "running": True, "error": "", "health": None}}
    row = rows(admin_client, device)["modbus-sensor-1"]
    assert (row["deploymentStatus"], row["running"], row["configVersion"]) == ("deployed", True, 3)
    assert row["unreportedFields"] == []
    # The 5-minute metrics replace the previous ones; the static facts sent once stay.
    reported = fresh(device)
    assert reported.facts["cpu_usage"] == 24
    assert reported.uptime == 1234.09
    assert reported.agent_version == "upstream"


def test_2025_11_06_agent_running_a_sensor_then_flushing_its_queue(admin_client, agent, device):
    running_report, queued = exchanges("agent-2025-11-06-running-a-sensor.json")
    add_sensor(admin_client, device, _staff_sensor_like(sent_sensors(running_report)[0]))

    body = verdict(replay(agent, running_report, device), device)
    assert (body["outcome"], body["inSync"]) == ("applied", True)
    assert body["sensors"]["modbus-sensor-1"]["status"] == "deployed"
    before = device_snapshot(device)

    # A report from its offline queue: no version, another sensor, older than what the server already has.
    # Refused with 400 when recorded, so the agent re-sent it for ever; now acknowledged and never applied.
    body = verdict(replay(agent, queued, device), device)
    assert body["outcome"] == "queued"
    assert body["reportedVersion"] is None
    assert (body["targetVersion"], body["appliedVersion"], body["inSync"]) == (2, 2, True)
    after = device_snapshot(device)
    assert after["sensors"] == before["sensors"]
    assert after["current"] == before["current"]
    assert after["target"] == before["target"]
    assert not DeviceSensor.objects.filter(device=device, name="opcua-1").exists()
    (event,) = events_of(device, "current_state.queued")
    assert event.data["running_sensors"] == ["opcua-1"]
    assert event.metadata["source"] == "agent"


def test_2025_11_22_agent_reports_its_health_and_its_queue_drains(admin_client, agent, device):
    first_poll, first_report, plain, queued = exchanges("agent-2025-11-22.json")

    served = replay(agent, first_poll, device).json()[str(device.uuid)]
    assert served["config"] == {"sensors": []}  # nothing else for the agent to echo back

    body = verdict(replay(agent, first_report, device), device)
    assert (body["outcome"], body["inSync"]) == ("applied", True)
    reported = fresh(device)
    assert (reported.agent_version, reported.ip_address, reported.uptime) == ("1.0.84", "192.0.2.2", 1352.84)
    # config.sensors wins over the seed note's key the agent echoes (empty here, as it was served before).
    assert DeviceCurrentState.objects.get(device=device).config["sensors"] == []
    assert "protocolAdapterDevices" not in DeviceCurrentState.objects.get(device=device).config

    before = device_snapshot(device)
    assert verdict(replay(agent, plain, device), device)["outcome"] == "unchanged"
    assert device_snapshot(device)["current"] == before["current"]

    # The first report as it was queued when refused: version stripped. Acknowledged, so the queue drains.
    events = Event.objects.count()
    body = verdict(replay(agent, queued, device), device)
    assert body["outcome"] == "queued"
    assert Event.objects.count() == events + 1
    after = device_snapshot(device)
    assert (after["current"], after["sensors"]) == (before["current"], before["sensors"])
    assert fresh(device).agent_version == "1.0.84"


def test_2025_11_22_agent_row_shape_is_read_and_the_missing_data_points_are_not_a_difference(
    admin_client, agent, device
):
    (running_report,) = exchanges("agent-2025-11-22-running-a-sensor.json")
    reported = sent_sensors(running_report)[0]
    assert "dataPoints" not in reported and reported["enabled"] == 1 and "connectionString" in reported
    add_sensor(
        admin_client,
        device,
        _staff_sensor_like(reported, connection={"host": "127.0.0.1", "port": 5020, "unitId": 1}),
    )

    body = verdict(replay(agent, running_report, device), device)

    assert (body["outcome"], body["inSync"]) == ("applied", True)
    row = rows(admin_client, device)["modbus-sensor-1"]
    assert (row["deploymentStatus"], row["running"], row["enabled"]) == ("deployed", True, True)
    assert row["connection"] == {"host": "127.0.0.1", "port": 5020, "unitId": 1}
    assert row["unreportedFields"] == ["dataPoints"]
    assert row["dataPoints"] == row["desired"]["dataPoints"]  # shown from the target, marked unreported
    assert row["metadata"] == {"slaveId": 1}
    # Matched by name: the agent's own row id is not the sensor's id.
    assert row["id"] != reported["id"]


def test_a_changed_connection_in_the_2025_11_22_shape_is_a_difference(admin_client, agent, device):
    (running_report,) = exchanges("agent-2025-11-22-running-a-sensor.json")
    add_sensor(
        admin_client,
        device,
        _staff_sensor_like(sent_sensors(running_report)[0], connection={"host": "127.0.0.1", "port": 502}),
    )

    body = verdict(replay(agent, running_report, device), device)

    assert body["inSync"] is False
    assert body["sensors"]["modbus-sensor-1"]["status"] == "failed"
    assert "connection" in body["sensors"]["modbus-sensor-1"]["error"]


@pytest.mark.parametrize("name", FILES)
def test_no_recorded_exchange_is_refused(admin_client, agent, device, name):
    """What was answered 400 when recorded (and so re-sent by the agent for ever) is a 2xx now, even replayed
    cold, in any order: the server refuses only what is really wrong."""
    for exchange in exchanges(name):
        response = replay(agent, exchange, device)
        assert response.status_code in (200, 304), (exchange["note"], response.content[:400])
        if exchange["method"] == "PATCH":
            outcome = verdict(response, device)["outcome"]
            queued = "version" not in exchange_body(exchange, device)[str(device.uuid)]
            assert outcome == "queued" if queued else outcome in ("applied", "unchanged")
    assert Device.objects.get(pk=device.pk).last_seen_at is not None


def test_partial_reports_after_the_upgrade_keep_the_sensors_stored_before_it(admin_client, agent, device):
    """A report stored before the upgrade has no part digests (the migration empties them): the 2025-11-22 agent's
    next reports leave config out, and must still find the sensors it reported before."""
    (running_report,) = exchanges("agent-2025-11-22-running-a-sensor.json")
    add_sensor(
        admin_client,
        device,
        _staff_sensor_like(
            sent_sensors(running_report)[0], connection={"host": "127.0.0.1", "port": 5020, "unitId": 1}
        ),
    )
    assert verdict(replay(agent, running_report, device), device)["inSync"] is True
    DeviceCurrentState.objects.filter(device=device).update(digest="", parts={})  # as the migration leaves it

    def partial(status: str) -> dict:
        return {
            "apps": {},
            "is_online": True,
            "version": 2,
            "endpoints_health": {"modbus-sensor-1": {"status": status, "connected": status == "online"}},
        }

    for status, outcome in (("offline", "applied"), ("online", "applied"), ("online", "unchanged")):
        body = verdict(send_body(agent, {str(device.uuid): partial(status)}, key=device.api_key), device)
        assert body["outcome"] == outcome, (status, body)
        assert body["sensors"]["modbus-sensor-1"] == {
            "status": "deployed",
            "running": True,
            "error": "",
            "health": status,
        }
