"""SEED.md's three data-flow examples, step by step, through HTTP only (staff API + agent endpoints)."""

import pytest

from devices.models import Device, DeviceCurrentState
from tests.helpers import (
    add_sensor,
    change_sensor,
    device_url,
    fresh,
    poll,
    report,
    rows,
    sensor_payload,
    target_of,
    target_sensors,
    verdict,
)

pytestmark = pytest.mark.django_db


def test_example_1_user_adds_a_sensor_agent_polls_deploys_and_reports(admin_client, agent, device):
    # 1-3. Staff add the sensor: a new target version, needs_deployment, and a pending row right away.
    assert target_of(device).version == 1
    created = add_sensor(admin_client, device, sensor_payload("modbus-sensor-1"))
    target = target_of(device)
    assert (target.version, target.needs_deployment) == (2, True)
    assert [s["name"] for s in target.config["sensors"]] == ["modbus-sensor-1"]
    assert created["deploymentStatus"] == "pending"
    row = rows(admin_client, device)["modbus-sensor-1"]
    assert row["deploymentStatus"] == "pending"
    assert row["running"] is False
    assert row["configVersion"] == 2
    assert row["syncedToConfig"] is False
    assert row["desired"]["pollInterval"] == 5000
    assert row["desired"]["id"] == row["id"]
    assert row["lastDeployedAt"] is None
    assert fresh(device).last_fetched_version is None

    # 4. The agent polls: 200 with version 2 and a strong ETag; then 304 with no body for the same ETag.
    first = poll(agent, device)
    assert first.status_code == 200, first.content
    etag = first["ETag"]
    assert etag == '"2"'
    assert not etag.startswith("W/")
    body = first.json()
    assert list(body) == [str(device.uuid)]
    state = body[str(device.uuid)]
    assert state["version"] == 2
    assert state["apps"] == {}
    assert [s["name"] for s in state["config"]["sensors"]] == ["modbus-sensor-1"]
    after_first = fresh(device)
    assert after_first.last_fetched_version == 2
    assert after_first.last_fetched_at is not None
    assert after_first.last_seen_at is not None

    second = poll(agent, device, etag=etag)
    assert second.status_code == 304
    assert second.content == b""
    assert second["ETag"] == etag
    after_second = fresh(device)
    assert after_second.last_fetched_version == 2
    assert after_second.last_seen_at > after_first.last_seen_at
    assert after_second.last_fetched_at > after_first.last_fetched_at

    # 5-6. The agent deploys what it fetched and reports it: the row becomes deployed at version 2.
    deployed = state["config"]["sensors"]
    answer = verdict(report(agent, device, 2, deployed), device)
    assert answer["outcome"] == "applied"
    assert answer["targetVersion"] == 2
    assert answer["reportedVersion"] == 2
    assert answer["appliedVersion"] == 2
    assert answer["inSync"] is True
    assert answer["sensors"] == {
        "modbus-sensor-1": {"status": "deployed", "running": True, "error": "", "health": None}
    }

    # 7. The UI reads the table: the sensor runs, deployed at version 2, in sync with the config.
    row = rows(admin_client, device)["modbus-sensor-1"]
    assert row["deploymentStatus"] == "deployed"
    assert row["running"] is True
    assert row["configVersion"] == 2
    assert row["syncedToConfig"] is True
    assert row["lastDeployedAt"] is not None
    assert row["deploymentError"] == ""
    assert row["deploymentAttempts"] == 0
    assert row["id"] == created["id"]
    target = target_of(device)
    assert target.needs_deployment is False
    assert target.last_deployed_at is not None
    assert DeviceCurrentState.objects.get(device_id=device.pk).version == 2


def test_example_2_agent_runs_two_of_three_sensors(admin_client, agent, device):
    for name, protocol in (("sensor1", "modbus"), ("sensor2", "can"), ("sensor3", "opcua")):
        add_sensor(admin_client, device, sensor_payload(name, protocol=protocol))
    assert target_of(device).version == 4
    assert poll(agent, device).status_code == 200

    running = [s for s in target_sensors(device) if s["name"] != "sensor3"]
    health = {
        "sensor1": {"healthy": True, "lastError": None},
        "sensor2": {"healthy": True, "lastError": None},
        "sensor3": {"healthy": False, "lastError": "opc.tcp://10.0.0.7:4840: connection refused"},
    }
    answer = verdict(report(agent, device, 4, running, health=health), device)

    assert answer["outcome"] == "applied"
    assert answer["inSync"] is False
    assert answer["sensors"]["sensor1"] == {"status": "deployed", "running": True, "error": "", "health": "online"}
    assert answer["sensors"]["sensor2"] == {"status": "deployed", "running": True, "error": "", "health": "online"}
    assert answer["sensors"]["sensor3"] == {
        "status": "failed",
        "running": False,
        "error": "opc.tcp://10.0.0.7:4840: connection refused",
        "health": "offline",
    }
    # The table shows reality (two run) but never hides the desired sensor that failed: it says why.
    table = rows(admin_client, device)
    assert set(table) == {"sensor1", "sensor2", "sensor3"}
    assert [table[n]["running"] for n in ("sensor1", "sensor2", "sensor3")] == [True, True, False]
    failed = table["sensor3"]
    assert failed["deploymentStatus"] == "failed"
    assert failed["deploymentError"] == "opc.tcp://10.0.0.7:4840: connection refused"
    assert failed["deploymentAttempts"] == 1
    assert failed["syncedToConfig"] is False
    assert failed["protocol"] == "opcua"
    assert failed["desired"]["name"] == "sensor3"
    # The config still has all three, and drift keeps the deployment needed.
    target = target_of(device)
    assert len(target.config["sensors"]) == 3
    assert target.needs_deployment is True
    assert admin_client.get(device_url(device.uuid)).json()["needsDeployment"] is True


def test_example_3_agent_restarts_on_an_old_version_then_converges(admin_client, agent, device):
    add_sensor(admin_client, device, sensor_payload("s1", pollInterval=1000))
    add_sensor(
        admin_client, device, sensor_payload("s2", protocol="mqtt", connection={"broker": "tcp://10.0.0.2:1883"})
    )
    assert target_of(device).version == 3
    old = target_sensors(device)
    assert verdict(report(agent, device, 3, old), device)["inSync"] is True

    # Staff move on: s1 changes (v4), s3 is added (v5). The agent has not seen either.
    change_sensor(admin_client, device, "s1", {"pollInterval": 2000})
    add_sensor(admin_client, device, sensor_payload("s3", protocol="can", connection={"interface": "can0"}))
    assert target_of(device).version == 5

    # 1-2. The agent restarts (upgraded) and reports what it runs: version 3. Its sensors, apps and version are
    # those of its last report, so only its facts are kept; the rows already reflect that reality.
    answer = verdict(report(agent, device, 3, old, uptime=5, agent_version="2.5.0"), device)
    assert answer["outcome"] == "unchanged"
    assert Device.objects.get(pk=device.pk).agent_version == "2.5.0"
    assert (answer["targetVersion"], answer["reportedVersion"], answer["inSync"]) == (5, 3, False)
    table = rows(admin_client, device)
    assert table["s1"]["deploymentStatus"] == "reconciling"
    assert table["s1"]["running"] is True
    assert table["s1"]["pollInterval"] == 1000  # what runs
    assert table["s1"]["desired"]["pollInterval"] == 2000  # what is wanted, side by side
    assert table["s1"]["configVersion"] == 3
    assert table["s2"]["deploymentStatus"] == "deployed"
    assert table["s2"]["configVersion"] == 3
    assert table["s2"]["running"] is True
    assert table["s3"]["deploymentStatus"] == "pending"
    assert table["s3"]["running"] is False
    assert table["s3"]["configVersion"] == 5
    assert target_of(device).needs_deployment is True

    # 3. The agent polls and sees version 5.
    fetched = poll(agent, device, etag='"3"')
    assert fetched.status_code == 200
    assert fetched.json()[str(device.uuid)]["version"] == 5

    # 4-6. It deploys version 5 and reports it: everything converges at version 5.
    answer = verdict(report(agent, device, 5, target_sensors(device), uptime=65, agent_version="2.5.0"), device)
    assert answer["inSync"] is True
    assert {n: s["status"] for n, s in answer["sensors"].items()} == {
        "s1": "deployed",
        "s2": "deployed",
        "s3": "deployed",
    }
    table = rows(admin_client, device)
    for name in ("s1", "s2", "s3"):
        assert table[name]["deploymentStatus"] == "deployed", name
        assert table[name]["configVersion"] == 5, name
        assert table[name]["syncedToConfig"] is True, name
        assert table[name]["running"] is True, name
    assert table["s1"]["pollInterval"] == 2000
    assert target_of(device).needs_deployment is False
    assert fresh(device).agent_version == "2.5.0"
