"""List endpoints answer in a fixed number of queries, whatever the number of rows (no N+1).

Each count is asserted exactly, on a small and on a large data set: an N+1 would show as the count growing.
The client is force-authenticated as a superuser, so authentication and permission checks add no queries.
"""

import pytest

from reconciliation.services.targets import target_state_update
from tests.factories import DeviceFactory, SensorPayloadFactory
from tests.helpers import devices_url, fleet_sensors_url, report_running, sensors_url

pytestmark = pytest.mark.django_db

SIZES = {"small": (3, 2), "large": (30, 20)}  # devices, sensors per device


METRICS = {
    "cpu_usage": 12,
    "memory_usage": 100,
    "memory_total": 1000,
    "uptime": 12.5,
    "is_online": True,
    "top_processes": [{"pid": n, "name": f"proc-{n}", "cpu": 1.5, "mem": 0.5} for n in range(10)],
    "network_interfaces": [{"name": f"eth{n}", "ip4": f"10.0.0.{n}", "type": "wired"} for n in range(4)],
}


def _health(sensors: int) -> dict:
    """The adapters' health (``endpoints_health``): every other sensor offline, with its error."""
    return {
        f"s-{i:03}": {"status": "offline", "connected": False, "lastError": "connect ECONNREFUSED", "errorCount": 3}
        if i % 2
        else {"status": "online", "connected": True}
        for i in range(sensors)
    }


def _fleet(devices: int, sensors: int, user) -> list:
    """Sensors are written through the real write path, one target-state write per device (all of a device's
    sensors in one version); every other device has reported (with its metrics and its adapters' health, every
    other sensor offline), so rows of every kind, current states and facts exist."""
    created = []
    for n in range(devices):
        device = DeviceFactory(name=f"dev-{n:03}")
        config = {
            "sensors": [
                SensorPayloadFactory(name=f"s-{i:03}", protocol=("modbus", "can", "opcua", "mqtt")[i % 4])
                for i in range(sensors)
            ]
        }
        target_state_update(uuid=device.uuid, user=user, config=config)
        if n % 2:
            report_running(device, endpoints_health=_health(sensors), **METRICS)
        created.append(device)
    return created


# COUNT(*) + the page (devices joined with their target and current state and their draft) + their labels.
DEVICE_LIST_QUERIES = 3
# The device exists? + COUNT(*) + the page (device uuid joined in).
DEVICE_SENSOR_LIST_QUERIES = 3
# The page only: cursor pagination needs no COUNT(*).
FLEET_SENSOR_LIST_QUERIES = 1


@pytest.mark.parametrize("size", list(SIZES))
def test_device_list(admin_client, superuser, django_assert_num_queries, size):
    devices, sensors = SIZES[size]
    _fleet(devices, sensors, superuser)

    with django_assert_num_queries(DEVICE_LIST_QUERIES):
        response = admin_client.get(devices_url(), {"limit": 100})

    body = response.json()
    assert body["count"] == devices
    assert len(body["results"]) == devices
    assert {d["targetVersion"] for d in body["results"]} == {2}
    assert [d["reportedVersion"] for d in body["results"]][:2] == [None, 2]
    assert [d["facts"] for d in body["results"]][:2] == [{}, METRICS]


@pytest.mark.parametrize("size", list(SIZES))
def test_one_devices_sensor_list(admin_client, superuser, django_assert_num_queries, size):
    devices, sensors = SIZES[size]
    fleet = _fleet(devices, sensors, superuser)
    reported = fleet[1]

    with django_assert_num_queries(DEVICE_SENSOR_LIST_QUERIES):
        response = admin_client.get(sensors_url(reported.uuid), {"limit": 500})

    body = response.json()
    assert body["count"] == sensors
    assert len(body["results"]) == sensors
    assert {r["deviceUuid"] for r in body["results"]} == {str(reported.uuid)}
    assert {r["deploymentStatus"] for r in body["results"]} == {"deployed"}
    assert {r["healthStatus"] for r in body["results"]} == {"online", "offline"}


@pytest.mark.parametrize("size", list(SIZES))
def test_fleet_sensor_list(admin_client, superuser, django_assert_num_queries, size):
    devices, sensors = SIZES[size]
    fleet = _fleet(devices, sensors, superuser)

    with django_assert_num_queries(FLEET_SENSOR_LIST_QUERIES):
        response = admin_client.get(fleet_sensors_url(), {"limit": 1000})

    rows = response.json()["results"]
    assert len(rows) == devices * sensors
    assert {r["deviceUuid"] for r in rows} == {str(d.uuid) for d in fleet}


@pytest.mark.parametrize("size", list(SIZES))
def test_filtered_fleet_sensor_list(admin_client, superuser, django_assert_num_queries, size):
    devices, sensors = SIZES[size]
    _fleet(devices, sensors, superuser)

    with django_assert_num_queries(FLEET_SENSOR_LIST_QUERIES):
        response = admin_client.get(
            fleet_sensors_url(), {"limit": 1000, "protocol": "modbus", "deploymentStatus": "pending"}
        )

    rows = response.json()["results"]
    # devices 0, 2, 4, ... never reported: their modbus sensors (every fourth) are pending
    assert len(rows) == ((devices + 1) // 2) * ((sensors + 3) // 4)
    assert {(r["protocol"], r["deploymentStatus"]) for r in rows} == {("modbus", "pending")}


@pytest.mark.parametrize("size", list(SIZES))
def test_health_filtered_sensor_lists(admin_client, superuser, django_assert_num_queries, size):
    devices, sensors = SIZES[size]
    fleet = _fleet(devices, sensors, superuser)
    deployed_offline = {"limit": 1000, "healthStatus": "offline", "deploymentStatus": "deployed"}

    with django_assert_num_queries(FLEET_SENSOR_LIST_QUERIES):
        fleet_rows = admin_client.get(fleet_sensors_url(), deployed_offline).json()["results"]
    with django_assert_num_queries(DEVICE_SENSOR_LIST_QUERIES):
        device_rows = admin_client.get(sensors_url(fleet[1].uuid), deployed_offline).json()["results"]

    assert len(fleet_rows) == (devices // 2) * (sensors // 2)
    assert len(device_rows) == sensors // 2
    assert {(r["deploymentStatus"], r["healthStatus"], r["healthError"]) for r in fleet_rows} == {
        ("deployed", "offline", "connect ECONNREFUSED")
    }
