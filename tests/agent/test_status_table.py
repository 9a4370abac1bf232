"""SPEC section 6, row by row, driven only through HTTP: staff writes set the target (T, D), agent reports set
the reality (V, R), and the staff sensor API shows each row's verdict."""

import copy

import pytest

from tests.helpers import (
    add_sensor,
    change_sensor,
    delete_sensor,
    report,
    rows,
    sensor_payload,
    sensor_url,
    target_sensors,
    target_version,
    verdict,
)

pytestmark = pytest.mark.django_db

A = sensor_payload("a", pollInterval=5000)


@pytest.fixture
def deployed(admin_client, agent, device):
    """Sensor ``a`` desired at T=2 and reported running at V=2: deployed."""
    add_sensor(admin_client, device, A)
    assert verdict(report(agent, device, 2, target_sensors(device)), device)["inSync"] is True
    return device


def _verdict(row: dict) -> tuple:
    """The columns the SPEC table decides, in its order (desired is compared separately)."""
    return (
        row["deploymentStatus"],
        row["running"],
        row["configVersion"],
        row["syncedToConfig"],
        row["deploymentError"],
        row["deploymentAttempts"],
    )


def _desired_of(device, name: str) -> dict:
    return next(s for s in target_sensors(device) if s["name"] == name)


def _running_config(row: dict) -> dict:
    return {k: row[k] for k in ("protocol", "enabled", "pollInterval", "connection", "dataPoints")}


# Row 1: in D, in R, same -> deployed, running, the running config, config_version = V, synced -----------------


def test_desired_and_running_the_same_at_the_target_version_is_deployed(admin_client, agent, device):
    created = add_sensor(admin_client, device, A)
    running = target_sensors(device)
    running[0]["metadata"] = {"firmware": "4.1", "serial": "X-17"}  # the agent may enrich metadata

    answer = verdict(report(agent, device, 2, running), device)

    assert answer["sensors"]["a"] == {"status": "deployed", "running": True, "error": "", "health": None}
    row = rows(admin_client, device)["a"]
    assert row["deploymentStatus"] == "deployed"
    assert row["running"] is True
    assert row["configVersion"] == 2
    assert row["syncedToConfig"] is True
    assert row["deploymentError"] == ""
    assert row["deploymentAttempts"] == 0
    assert row["lastDeployedAt"] is not None
    assert row["metadata"] == {"firmware": "4.1", "serial": "X-17"}  # the running config
    assert row["desired"]["metadata"] == {}
    assert row["id"] == created["id"] == row["desired"]["id"]
    assert _running_config(row) == {
        k: A[k] for k in ("protocol", "enabled", "pollInterval", "connection", "dataPoints")
    }


def test_desired_and_running_the_same_at_an_older_version_is_deployed_at_that_version(admin_client, agent, deployed):
    add_sensor(admin_client, deployed, sensor_payload("b", protocol="can", connection={"interface": "can0"}))
    assert target_version(deployed) == 3

    answer = verdict(report(agent, deployed, 2, target_sensors(deployed)[:1], uptime=7200), deployed)

    assert answer["outcome"] == "unchanged"  # only the uptime moved; the rows were re-projected by the staff write
    row = rows(admin_client, deployed)["a"]
    assert (row["deploymentStatus"], row["running"], row["configVersion"], row["syncedToConfig"]) == (
        "deployed",
        True,
        2,
        True,
    )
    # And the same through a report that is not a repeat (new health), so the agent path decides it too.
    answer = verdict(
        report(agent, deployed, 2, target_sensors(deployed)[:1], health={"a": {"healthy": True}}), deployed
    )
    assert answer["outcome"] == "applied"
    assert answer["sensors"]["a"]["status"] == "deployed"
    row = rows(admin_client, deployed)["a"]
    assert _verdict(row) == ("deployed", True, 2, True, "", 0)
    assert row["desired"] == _desired_of(deployed, "a")


# Row 2: in D, in R, differs, V < T -> reconciling (update in flight), running, the running config ----------------


def test_a_changed_sensor_still_running_the_old_config_is_reconciling_until_applied(admin_client, agent, deployed):
    old = target_sensors(deployed)
    change_sensor(admin_client, deployed, "a", {"pollInterval": 1000})
    assert target_version(deployed) == 3

    # The staff write re-projects at once: the update is in flight.
    row = rows(admin_client, deployed)["a"]
    assert row["deploymentStatus"] == "reconciling"
    assert row["running"] is True
    assert row["pollInterval"] == 5000
    assert row["desired"]["pollInterval"] == 1000

    answer = verdict(report(agent, deployed, 2, old, health={"a": {"healthy": True}}), deployed)

    assert answer["sensors"]["a"] == {"status": "reconciling", "running": True, "error": "", "health": "online"}
    row = rows(admin_client, deployed)["a"]
    assert row["deploymentStatus"] == "reconciling"
    assert row["running"] is True
    assert row["pollInterval"] == 5000  # reality
    assert row["desired"]["pollInterval"] == 1000
    assert row["configVersion"] == 2
    assert row["syncedToConfig"] is False
    assert row["deploymentError"] == ""
    assert row["deploymentAttempts"] == 0
    assert row["desired"] == _desired_of(deployed, "a")


# Row 3: in D, in R, differs, V >= T -> failed (runs another config), running, the running config + error -------


def test_a_sensor_running_another_config_at_the_target_version_failed(admin_client, agent, deployed):
    old = target_sensors(deployed)
    change_sensor(admin_client, deployed, "a", {"pollInterval": 1000, "connection": {"host": "10.0.0.6", "port": 502}})

    answer = verdict(report(agent, deployed, 3, old), deployed)

    assert answer["sensors"]["a"]["status"] == "failed"
    assert answer["sensors"]["a"]["running"] is True
    row = rows(admin_client, deployed)["a"]
    assert row["deploymentStatus"] == "failed"
    assert row["running"] is True
    assert row["pollInterval"] == 5000
    assert row["connection"] == A["connection"]
    assert row["desired"] == _desired_of(deployed, "a")
    assert row["desired"]["pollInterval"] == 1000
    assert row["configVersion"] == 3
    assert row["syncedToConfig"] is False
    assert row["deploymentAttempts"] == 1
    assert "pollInterval" in row["deploymentError"] and "connection" in row["deploymentError"]
    assert "protocol" not in row["deploymentError"]  # names only what differs
    assert answer["sensors"]["a"]["error"] == row["deploymentError"]


def test_the_failed_error_of_a_differing_sensor_carries_the_agents_health_error(admin_client, agent, deployed):
    old = target_sensors(deployed)
    change_sensor(admin_client, deployed, "a", {"pollInterval": 1000})

    verdict(report(agent, deployed, 3, old, health={"a": {"healthy": False, "lastError": "restart refused"}}), deployed)

    row = rows(admin_client, deployed)["a"]
    assert row["deploymentStatus"] == "failed"
    assert "pollInterval" in row["deploymentError"]
    assert "restart refused" in row["deploymentError"]


# Row 4: in D, not in R, V < T -> pending, not running, the desired config, config_version = T --------------------


def test_a_desired_sensor_not_yet_applied_is_pending(admin_client, agent, deployed):
    add_sensor(
        admin_client, deployed, sensor_payload("b", protocol="mqtt", pollInterval=250, connection={"broker": "m"})
    )

    answer = verdict(report(agent, deployed, 2, target_sensors(deployed)[:1], health={}), deployed)

    assert answer["sensors"]["b"] == {"status": "pending", "running": False, "error": "", "health": None}
    row = rows(admin_client, deployed)["b"]
    assert row["deploymentStatus"] == "pending"
    assert row["running"] is False
    assert row["protocol"] == "mqtt"
    assert row["pollInterval"] == 250  # the desired config, since nothing runs
    assert row["connection"] == {"broker": "m"}
    assert row["configVersion"] == 3
    assert row["syncedToConfig"] is False
    assert row["deploymentError"] == ""
    assert row["deploymentAttempts"] == 0
    assert row["desired"] == _desired_of(deployed, "b")


def test_desired_sensors_of_a_device_that_never_reported_are_pending(admin_client, device_with_sensors):
    table = rows(admin_client, device_with_sensors)
    assert len(table) == 3
    for row in table.values():
        assert (row["deploymentStatus"], row["running"], row["configVersion"]) == ("pending", False, 4)


# Row 5: in D and enabled, not in R, V >= T -> failed (not running), desired config, error from health ---------


def test_an_enabled_sensor_missing_at_the_target_version_failed_with_the_agents_error(admin_client, agent, deployed):
    add_sensor(
        admin_client, deployed, sensor_payload("b", protocol="can", pollInterval=200, connection={"interface": "can1"})
    )
    health = {"b": {"healthy": False, "lastError": "can1: no such device"}}

    answer = verdict(report(agent, deployed, 3, target_sensors(deployed)[:1], health=health), deployed)

    assert answer["sensors"]["b"] == {
        "status": "failed",
        "running": False,
        "error": "can1: no such device",
        "health": "offline",
    }
    row = rows(admin_client, deployed)["b"]
    assert row["deploymentStatus"] == "failed"
    assert row["running"] is False
    assert row["deploymentError"] == "can1: no such device"
    assert row["pollInterval"] == 200
    assert row["connection"] == {"interface": "can1"}
    assert row["configVersion"] == 3
    assert row["syncedToConfig"] is False
    assert row["deploymentAttempts"] == 1
    assert row["desired"] == _desired_of(deployed, "b")


@pytest.mark.parametrize("health", [None, {}, {"b": {"healthy": True}}, {"b": {"healthy": False, "lastError": ""}}])
def test_an_enabled_sensor_missing_without_an_agent_error_gets_a_clear_default(admin_client, agent, deployed, health):
    add_sensor(admin_client, deployed, sensor_payload("b"))

    verdict(report(agent, deployed, 3, target_sensors(deployed)[:1], health=health), deployed)

    row = rows(admin_client, deployed)["b"]
    status, running, config_version, synced, error, attempts = _verdict(row)
    assert (status, running, config_version, synced, attempts) == ("failed", False, 3, False, 1)
    assert "not running" in error.lower()
    assert "3" in error
    assert row["desired"] == _desired_of(deployed, "b")


# Row 6: in D and disabled, not in R, V >= T -> deployed (correctly not running) ------------------------------


def test_a_disabled_sensor_not_running_at_the_target_version_is_deployed(admin_client, agent, deployed):
    add_sensor(admin_client, deployed, sensor_payload("b", enabled=False))
    assert rows(admin_client, deployed)["b"]["deploymentStatus"] == "pending"

    answer = verdict(report(agent, deployed, 3, target_sensors(deployed)[:1]), deployed)

    assert answer["inSync"] is True
    assert answer["sensors"]["b"] == {"status": "deployed", "running": False, "error": "", "health": None}
    row = rows(admin_client, deployed)["b"]
    assert _verdict(row) == ("deployed", False, 3, True, "", 0)
    assert row["enabled"] is False
    assert row["lastDeployedAt"] is not None
    assert row["desired"] == _desired_of(deployed, "b")


# Row 7: not in D, in R, V < T -> reconciling (removal in flight), running, the running config ----------------


def test_a_removed_sensor_still_running_before_the_new_version_is_reconciling(admin_client, agent, deployed):
    running = target_sensors(deployed)
    delete_sensor(admin_client, deployed, "a")
    assert target_version(deployed) == 3

    answer = verdict(report(agent, deployed, 2, running, health={"a": {"healthy": True}}), deployed)

    assert answer["sensors"]["a"] == {"status": "reconciling", "running": True, "error": "", "health": "online"}
    row = rows(admin_client, deployed)["a"]
    assert _verdict(row) == ("reconciling", True, 2, False, "", 0)
    assert row["desired"] is None
    assert row["pollInterval"] == 5000


def test_an_unknown_sensor_the_agent_runs_before_applying_the_target_is_reconciling(admin_client, agent, deployed):
    add_sensor(admin_client, deployed, sensor_payload("b"))
    rogue = sensor_payload("rogue", protocol="opcua", connection={"endpoint": "opc.tcp://x:4840"})

    verdict(report(agent, deployed, 2, [*target_sensors(deployed)[:1], rogue]), deployed)

    row = rows(admin_client, deployed)["rogue"]
    assert (row["deploymentStatus"], row["running"], row["desired"], row["protocol"]) == (
        "reconciling",
        True,
        None,
        "opcua",
    )


# Row 8: not in D, in R, V >= T -> failed (running though removed), running, the running config + error ------


def test_a_removed_sensor_still_running_at_the_new_version_failed(admin_client, agent, deployed):
    running = target_sensors(deployed)
    delete_sensor(admin_client, deployed, "a")

    answer = verdict(report(agent, deployed, 3, running), deployed)

    assert answer["sensors"]["a"]["status"] == "failed"
    assert answer["sensors"]["a"]["running"] is True
    row = rows(admin_client, deployed)["a"]
    assert row["deploymentStatus"] == "failed"
    assert row["running"] is True
    assert row["desired"] is None
    assert row["pollInterval"] == 5000
    assert row["configVersion"] == 3
    assert row["syncedToConfig"] is False
    assert row["deploymentAttempts"] == 1
    assert "removed" in row["deploymentError"].lower()
    assert answer["inSync"] is False


# Row 9: neither desired nor running -> the row is deleted ---------------------------------------------------------


def test_a_sensor_neither_desired_nor_running_has_no_row(admin_client, agent, deployed):
    delete_sensor(admin_client, deployed, "a")

    answer = verdict(report(agent, deployed, 3, []), deployed)

    assert answer["sensors"] == {}
    assert answer["inSync"] is True
    assert rows(admin_client, deployed) == {}
    assert admin_client.get(sensor_url(deployed.uuid, "a")).status_code == 404


# The brief's point 3: a deleted sensor shows `reconciling` until the agent stops it, then disappears -----------


def test_a_deleted_sensor_is_reconciling_until_the_agent_stops_it_then_disappears(admin_client, agent, deployed):
    add_sensor(admin_client, deployed, sensor_payload("b"))
    verdict(report(agent, deployed, 3, target_sensors(deployed)), deployed)
    both = target_sensors(deployed)
    assert {n: r["deploymentStatus"] for n, r in rows(admin_client, deployed).items()} == {
        "a": "deployed",
        "b": "deployed",
    }

    delete_sensor(admin_client, deployed, "a")
    detail = admin_client.get(sensor_url(deployed.uuid, "a"))
    assert detail.status_code == 200
    assert (detail.json()["deploymentStatus"], detail.json()["running"], detail.json()["desired"]) == (
        "reconciling",
        True,
        None,
    )

    # The agent has not polled yet and reports the same sensors again (new uptime and health): still reconciling.
    verdict(report(agent, deployed, 3, both, health={"a": {"healthy": True}}, uptime=9000), deployed)
    assert rows(admin_client, deployed)["a"]["deploymentStatus"] == "reconciling"

    # It applies version 4 and stops a: the row is gone, b stays deployed, the device converges.
    answer = verdict(report(agent, deployed, 4, [s for s in both if s["name"] == "b"]), deployed)
    assert answer["inSync"] is True
    assert set(rows(admin_client, deployed)) == {"b"}
    assert admin_client.get(sensor_url(deployed.uuid, "a")).status_code == 404


# Bookkeeping: deploymentAttempts, lastDeployedAt, statusChangedAt -------------------------------------------


def test_deployment_attempts_count_distinct_failed_versions_and_reset_on_deploy(admin_client, agent, deployed):
    add_sensor(admin_client, deployed, sensor_payload("b"))
    only_a = target_sensors(deployed)[:1]

    verdict(report(agent, deployed, 3, only_a, health={"b": {"healthy": False, "lastError": "e1"}}), deployed)
    first = rows(admin_client, deployed)["b"]
    assert (first["deploymentStatus"], first["deploymentAttempts"], first["deploymentError"]) == ("failed", 1, "e1")

    # Same applied version, another error: still one attempt; the error follows the agent; status unchanged.
    verdict(report(agent, deployed, 3, only_a, health={"b": {"healthy": False, "lastError": "e2"}}), deployed)
    second = rows(admin_client, deployed)["b"]
    assert (second["deploymentAttempts"], second["deploymentError"]) == (1, "e2")
    assert second["statusChangedAt"] == first["statusChangedAt"]

    # A new target version, applied and failing again: a second attempt.
    change_sensor(admin_client, deployed, "b", {"pollInterval": 7000})
    verdict(report(agent, deployed, 4, only_a, health={"b": {"healthy": False, "lastError": "e3"}}), deployed)
    third = rows(admin_client, deployed)["b"]
    assert (third["deploymentStatus"], third["deploymentAttempts"], third["deploymentError"]) == ("failed", 2, "e3")
    assert third["lastDeployedAt"] is None

    # Deployed at last: attempts reset, the error cleared, lastDeployedAt and statusChangedAt set.
    verdict(report(agent, deployed, 4, target_sensors(deployed)), deployed)
    done = rows(admin_client, deployed)["b"]
    assert (done["deploymentStatus"], done["deploymentAttempts"], done["deploymentError"]) == ("deployed", 0, "")
    assert done["lastDeployedAt"] is not None
    assert done["statusChangedAt"] > third["statusChangedAt"]
    assert done["configVersion"] == 4
    assert done["pollInterval"] == 7000


def test_the_sensor_id_is_kept_through_every_status(admin_client, agent, deployed):
    sensor_id = rows(admin_client, deployed)["a"]["id"]
    old = target_sensors(deployed)
    reported_without_id = [{k: v for k, v in copy.deepcopy(old[0]).items() if k != "id"}]
    change_sensor(admin_client, deployed, "a", {"pollInterval": 1000})
    assert rows(admin_client, deployed)["a"]["id"] == sensor_id
    verdict(report(agent, deployed, 2, reported_without_id), deployed)
    assert rows(admin_client, deployed)["a"]["id"] == sensor_id
    verdict(report(agent, deployed, 3, reported_without_id), deployed)
    assert rows(admin_client, deployed)["a"]["id"] == sensor_id
