"""Adapter health and device facts in the management API: the sensor rows' health columns, the ``healthStatus``
filter, the device's ``facts``, and the drift endpoint's health and deployed-but-offline sensors. Reports arrive
through the agent endpoint (``PATCH /api/v1/device/state`` with the device's key), as the 2025-11-22 agent sends
them."""

import json

import pytest
from django.test import Client
from django.utils.dateparse import parse_datetime

from reconciliation.services.sensors import sensor_create
from tests.factories import DeviceFactory, SensorPayloadFactory
from tests.helpers import (
    REPORT_URL,
    SENSOR_ROW_KEYS,
    agent_headers,
    assert_error,
    device_url,
    devices_url,
    fleet_sensors_url,
    sensor_url,
    sensors_url,
    state_url,
)

pytestmark = pytest.mark.django_db

REFUSED = "connect ECONNREFUSED 10.0.0.5:502"
LAST_SEEN = "2026-12-04T09:58:00+00:00"
INTERFACES = [
    {
        "name": "eth0",
        "ip4": "192.0.2.2",
        "ip6": "fd00::2",
        "mac": "02:fc:00:00:00:01",
        "type": "wired",
        "default": True,
        "virtual": False,
        "operstate": "up",
    }
]
PROCESSES = [{"pid": 812, "name": "agent", "cpu": 3.1, "mem": 1.2}]
METRICS = {
    "cpu_usage": 12,
    "memory_usage": 100,
    "memory_total": 1000,
    "storage_usage": 2000,
    "storage_total": 8000,
    "temperature": 51.5,
    "uptime": 12.5,
    "is_online": True,
    "network_interfaces": INTERFACES,
    "top_processes": PROCESSES,
}


def agent_poll(device) -> dict:
    response = Client().get(state_url(device.uuid), headers=agent_headers(device.api_key))
    assert response.status_code == 200, response.content
    return response.json()[str(device.uuid)]


def agent_report(device, report: dict) -> dict:
    response = Client().generic(
        "PATCH",
        REPORT_URL,
        json.dumps({str(device.uuid): report}),
        content_type="application/json",
        headers=agent_headers(device.api_key),
    )
    assert response.status_code == 200, response.content
    return response.json()[str(device.uuid)]


def offline(error: str | None = REFUSED, count: int = 3, last_seen: str | None = None) -> dict:
    return {
        "status": "offline",
        "connected": False,
        "lastError": error,
        "communicationQuality": "offline",
        "errorCount": count,
        "lastSeen": last_seen,
    }


ONLINE = {
    "status": "online",
    "connected": True,
    "lastError": None,
    "communicationQuality": "good",
    "errorCount": 0,
    "lastSeen": LAST_SEEN,
}


@pytest.fixture
def plant(superuser):
    """One device running its three sensors as desired: plc-1 online, plc-2 offline (deployed but offline),
    plc-3 without health; the agent (2025-11-22) reports no dataPoints, and its metrics."""
    device = DeviceFactory(name="plant")
    for name in ("plc-1", "plc-2", "plc-3"):
        sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name=name), user=superuser)
    state = agent_poll(device)
    running = [{k: v for k, v in s.items() if k != "dataPoints"} for s in state["config"]["sensors"]]
    answer = agent_report(
        device,
        {
            "version": state["version"],
            "config": {"sensors": running},
            "endpoints_health": {"plc-1": ONLINE, "plc-2": offline(last_seen=LAST_SEEN)},
            **METRICS,
        },
    )
    assert answer["inSync"] is True, answer
    return device


@pytest.fixture
def other(superuser):
    """Another device: o-1 failed (enabled, not running) with its adapter offline."""
    device = DeviceFactory(name="other")
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="o-1"), user=superuser)
    state = agent_poll(device)
    agent_report(
        device,
        {"version": state["version"], "config": {"sensors": []}, "endpoints_health": {"o-1": offline("timeout")}},
    )
    return device


@pytest.fixture
def silo(superuser):
    """A device that never reported: s-1 pending."""
    device = DeviceFactory(name="silo")
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="s-1"), user=superuser)
    return device


# --- sensor rows ---


def test_a_deployed_but_offline_row_serializes_its_health(admin_client, plant):
    row = admin_client.get(sensor_url(plant.uuid, "plc-2")).json()

    assert list(row) == SENSOR_ROW_KEYS
    assert (row["deploymentStatus"], row["running"], row["deploymentError"]) == ("deployed", True, "")
    assert row["healthStatus"] == "offline"
    assert row["connected"] is False
    assert row["communicationQuality"] == "offline"
    assert row["healthError"] == REFUSED
    assert row["healthErrorCount"] == 3
    assert parse_datetime(row["healthLastSeen"]) == parse_datetime(LAST_SEEN)
    assert row["healthLastSeen"].endswith("Z")
    assert parse_datetime(row["healthChangedAt"]) is not None
    assert row["unreportedFields"] == ["dataPoints"]


def test_rows_without_health_or_never_reported(admin_client, plant, silo):
    plc3 = admin_client.get(sensor_url(plant.uuid, "plc-3")).json()
    pending = admin_client.get(sensor_url(silo.uuid, "s-1")).json()

    for row in (plc3, pending):
        assert (row["healthStatus"], row["connected"], row["communicationQuality"], row["healthError"]) == (
            "",
            None,
            "",
            "",
        )
        assert (row["healthErrorCount"], row["healthLastSeen"], row["healthChangedAt"]) == (None, None, None)
    assert plc3["unreportedFields"] == ["dataPoints"]
    assert pending["unreportedFields"] == []  # not running: nothing reported, nothing missing


def test_a_failed_row_keeps_the_adapters_error(admin_client, other):
    row = admin_client.get(sensor_url(other.uuid, "o-1")).json()

    assert (row["deploymentStatus"], row["running"]) == ("failed", False)
    assert (row["healthStatus"], row["healthError"], row["deploymentError"]) == ("offline", "timeout", "timeout")


def test_a_later_report_without_health_keeps_it(admin_client, plant):
    """``endpoints_health`` left out: health as before (the agent sends it when it changed)."""
    state = agent_poll(plant)
    agent_report(plant, {"version": state["version"], "cpu_usage": 99})

    row = admin_client.get(sensor_url(plant.uuid, "plc-2")).json()
    assert (row["healthStatus"], row["healthError"]) == ("offline", REFUSED)


HEALTH_FILTERS = [
    ({"healthStatus": "online"}, ["plc-1"]),
    ({"healthStatus": "offline"}, ["plc-2"]),
    ({"healthStatus": "unknown"}, ["plc-3"]),
    ({"healthStatus": "disabled"}, []),
    ({"healthStatus": "offline", "deploymentStatus": "deployed"}, ["plc-2"]),
    ({"healthStatus": "offline", "deploymentStatus": "failed"}, []),
]


@pytest.mark.parametrize(("params", "expected"), HEALTH_FILTERS)
def test_device_list_filters_by_health(admin_client, plant, other, silo, params, expected):
    body = admin_client.get(sensors_url(plant.uuid), params).json()
    assert [r["name"] for r in body["results"]] == expected
    assert body["count"] == len(expected)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"healthStatus": "offline"}, ["o-1", "plc-2"]),
        ({"healthStatus": "unknown"}, ["plc-3", "s-1"]),
        ({"healthStatus": "offline", "deploymentStatus": "deployed"}, ["plc-2"]),
        ({"healthStatus": "offline", "deploymentStatus": "failed"}, ["o-1"]),
        ({"healthStatus": "unknown", "device": "<silo>"}, ["s-1"]),
    ],
)
def test_fleet_list_filters_by_health(admin_client, plant, other, silo, params, expected):
    params = {k: (str(silo.uuid) if v == "<silo>" else v) for k, v in params.items()}
    body = admin_client.get(fleet_sensors_url(), params).json()
    assert sorted(r["name"] for r in body["results"]) == expected


def test_an_invalid_health_filter_is_a_400(admin_client, plant):
    for url in (sensors_url(plant.uuid), fleet_sensors_url()):
        assert_error(admin_client.get(url, {"healthStatus": "sick"}), 400, "validation_error", fields=["healthStatus"])


# --- device facts ---


def test_the_device_serializes_its_latest_facts(admin_client, plant):
    body = admin_client.get(device_url(plant.uuid)).json()

    assert body["facts"] == METRICS
    assert parse_datetime(body["factsReportedAt"]) is not None
    assert body["uptime"] == 12.5
    listed = admin_client.get(devices_url()).json()["results"]
    assert [d["facts"] for d in listed] == [METRICS]


def test_a_device_that_never_sent_metrics_has_empty_facts(admin_client, device):
    body = admin_client.get(device_url(device.uuid)).json()
    assert (body["facts"], body["factsReportedAt"]) == ({}, None)


def test_facts_are_read_only(admin_client, plant):
    response = admin_client.patch(device_url(plant.uuid), {"facts": {"cpu_usage": 1}}, format="json")
    assert_error(response, 400, "validation_error", fields=["facts"])  # written by the agent's reports only
    assert admin_client.get(device_url(plant.uuid)).json()["facts"] == METRICS


def test_a_metrics_report_replaces_the_facts_whole(admin_client, plant):
    state = agent_poll(plant)
    agent_report(plant, {"version": state["version"], "cpu_usage": 99, "uptime": 30.25})

    body = admin_client.get(device_url(plant.uuid)).json()
    assert body["facts"] == {"cpu_usage": 99, "uptime": 30.25}


# --- drift ---


def test_drift_lists_deployed_but_offline_sensors_apart(admin_client, plant):
    body = admin_client.get(f"{devices_url()}/{plant.uuid}/drift").json()

    assert (body["inSync"], body["sensors"]) == (True, [])
    [entry] = body["deployedOfflineSensors"]
    assert (entry["name"], entry["deploymentStatus"], entry["running"]) == ("plc-2", "deployed", True)
    assert (entry["healthStatus"], entry["healthError"], entry["healthErrorCount"]) == ("offline", REFUSED, 3)
    assert parse_datetime(entry["healthLastSeen"]) == parse_datetime(LAST_SEEN)


def test_drift_sensors_carry_their_health(admin_client, other, silo):
    failing = admin_client.get(f"{devices_url()}/{other.uuid}/drift").json()
    pending = admin_client.get(f"{devices_url()}/{silo.uuid}/drift").json()

    assert failing["deployedOfflineSensors"] == pending["deployedOfflineSensors"] == []
    [o1] = failing["sensors"]
    assert (o1["name"], o1["deploymentStatus"], o1["healthStatus"], o1["healthError"]) == (
        "o-1",
        "failed",
        "offline",
        "timeout",
    )
    [s1] = pending["sensors"]
    assert (s1["name"], s1["healthStatus"], s1["healthError"], s1["healthLastSeen"]) == ("s-1", "", "", None)


def test_the_schema_documents_health_and_facts(admin_client):
    response = admin_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    schema = response.json()
    components = schema["components"]["schemas"]
    assert set(SENSOR_ROW_KEYS) <= set(components["DeviceSensor"]["properties"])
    assert components["Device"]["properties"]["facts"]["properties"]["network_interfaces"]["type"] == "array"
    assert "deployedOfflineSensors" in components["Drift"]["properties"]
    assert {"healthStatus", "healthError"} <= set(components["DriftSensor"]["properties"])
    for path in ("/api/v1/devices/{device_uuid}/sensors", "/api/v1/sensors"):
        operation = next(ops for p, ops in schema["paths"].items() if p.rstrip("/") == path)["get"]
        [health] = [p for p in operation["parameters"] if p["name"] == "healthStatus"]
        assert health["schema"]["enum"] == ["disabled", "offline", "online", "unknown"]
