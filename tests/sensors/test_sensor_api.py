"""devices/<uuid>/sensors and the fleet-wide sensors/ list: happy paths, row shape and write-path semantics."""

import uuid

import pytest
from rest_framework.test import APIClient

from devices.models import DeviceTargetStateVersion
from events.models import Event
from reconciliation.services.sensors import sensor_create, sensor_update
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory, SensorPayloadFactory, UserFactory
from tests.helpers import (
    SENSOR_ROW_KEYS,
    assert_error,
    events_since,
    fleet_sensors_url,
    report_running,
    sensor_payload,
    sensor_url,
    sensors_url,
    target_of,
    write_snapshot,
)

pytestmark = pytest.mark.django_db


def _target_sensor(device, name: str) -> dict:
    return next(s for s in target_of(device).config["sensors"] if s["name"] == name)


def _assert_iso_datetime(value):
    from django.utils.dateparse import parse_datetime

    assert isinstance(value, str) and parse_datetime(value) is not None, value


# -- shape --------------------------------------------------------------------------------------------------------


def test_a_pending_row_has_exactly_the_spec_fields(admin_client, device):
    payload = sensor_payload("boiler.temp_1", pollInterval=2500, metadata={"room": "B2"})
    created = admin_client.post(sensors_url(device.uuid), payload, format="json")
    assert created.status_code == 201, created.content

    row = admin_client.get(sensor_url(device.uuid, "boiler.temp_1")).json()

    assert list(row) == SENSOR_ROW_KEYS
    sensor_id = _target_sensor(device, "boiler.temp_1")["id"]
    assert row["id"] == sensor_id
    assert row["deviceUuid"] == str(device.uuid)
    assert row["name"] == "boiler.temp_1"
    assert row["protocol"] == "modbus"
    assert row["enabled"] is True
    assert row["pollInterval"] == 2500
    assert row["connection"] == payload["connection"]
    assert row["dataPoints"] == payload["dataPoints"]
    assert row["metadata"] == {"room": "B2"}
    assert row["configVersion"] == 2
    assert row["syncedToConfig"] is False
    assert row["deploymentStatus"] == "pending"
    assert row["running"] is False
    assert row["lastDeployedAt"] is None
    assert row["deploymentError"] == ""
    assert row["deploymentAttempts"] == 0
    assert row["desired"] == {"id": sensor_id, **payload}
    for key in ("statusChangedAt", "createdAt", "updatedAt"):
        _assert_iso_datetime(row[key])
    assert row["createdBy"] == row["updatedBy"] == "admin"
    assert created.json() == row


def test_a_deployed_row_shows_what_runs(admin_client, sensor_device):
    report_running(sensor_device)

    row = admin_client.get(sensor_url(sensor_device.uuid, "temp-1")).json()

    assert list(row) == SENSOR_ROW_KEYS
    assert (row["deploymentStatus"], row["running"], row["syncedToConfig"]) == ("deployed", True, True)
    assert row["configVersion"] == 2
    _assert_iso_datetime(row["lastDeployedAt"])
    assert row["id"] == _target_sensor(sensor_device, "temp-1")["id"]


# -- list -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_device_list_is_paginated_and_ordered_by_name(admin_client, device_with_sensors, slash):
    other = DeviceFactory()
    sensor_create(device_uuid=other.uuid, data=SensorPayloadFactory(name="elsewhere"), user=None)

    response = admin_client.get(sensors_url(device_with_sensors.uuid) + slash, {"limit": 2})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    names = sorted(DeviceSensor.objects.filter(device=device_with_sensors).values_list("name", flat=True))
    assert [r["name"] for r in body["results"]] == names[:2]
    assert all(list(r) == SENSOR_ROW_KEYS for r in body["results"])
    assert all(r["deviceUuid"] == str(device_with_sensors.uuid) for r in body["results"])
    rest = admin_client.get(body["next"]).json()
    assert [r["name"] for r in rest["results"]] == names[2:]


def test_device_list_of_a_device_without_sensors_is_empty(admin_client, device):
    body = admin_client.get(sensors_url(device.uuid)).json()
    assert body == {"count": 0, "next": None, "previous": None, "results": []}


@pytest.fixture
def mixed_device(db, superuser):
    """Applied its target (V == T): a (modbus) runs as desired -> deployed; b (can, disabled) is correctly not
    running -> deployed; c (opcua, enabled) is not running -> failed."""
    device = DeviceFactory()
    for name, protocol, enabled in (("a", "modbus", True), ("b", "can", False), ("c", "opcua", True)):
        sensor_create(
            device_uuid=device.uuid,
            data=SensorPayloadFactory(name=name, protocol=protocol, enabled=enabled),
            user=superuser,
        )
    report_running(device, sensors=[_target_sensor(device, "a")])
    statuses = dict(DeviceSensor.objects.filter(device=device).values_list("name", "deployment_status"))
    assert statuses == {"a": "deployed", "b": "deployed", "c": "failed"}
    return device


@pytest.fixture
def inflight_device(db, superuser):
    """A change is in flight (V < T): p (mqtt) was added -> pending; r (modbus) runs but was changed ->
    reconciling."""
    device = DeviceFactory()
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="r", protocol="modbus"), user=superuser)
    report_running(device)
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="p", protocol="mqtt"), user=superuser)
    sensor_update(device_uuid=device.uuid, name="r", data={"pollInterval": 900}, partial=True, user=superuser)
    statuses = dict(DeviceSensor.objects.filter(device=device).values_list("name", "deployment_status"))
    assert statuses == {"p": "pending", "r": "reconciling"}
    return device


DEVICE_FILTERS = [
    ({"protocol": "can"}, ["b"]),
    ({"protocol": "mqtt"}, []),
    ({"enabled": "false"}, ["b"]),
    ({"enabled": "true"}, ["a", "c"]),
    ({"deploymentStatus": "failed"}, ["c"]),
    ({"deploymentStatus": "deployed"}, ["a", "b"]),
    ({"deploymentStatus": "pending"}, []),
    ({"running": "true"}, ["a"]),
    ({"running": "false"}, ["b", "c"]),
    ({"syncedToConfig": "true"}, ["a", "b"]),
    ({"syncedToConfig": "false"}, ["c"]),
    ({"protocol": "opcua", "deploymentStatus": "failed"}, ["c"]),
    ({"protocol": "opcua", "deploymentStatus": "deployed"}, []),
    ({"healthStatus": "unknown"}, ["a", "b", "c"]),  # the report carried no health map
    ({"healthStatus": "offline"}, []),
]


@pytest.mark.parametrize(("params", "expected"), DEVICE_FILTERS)
def test_device_list_filters(admin_client, mixed_device, inflight_device, params, expected):
    body = admin_client.get(sensors_url(mixed_device.uuid), params).json()
    assert [r["name"] for r in body["results"]] == expected
    assert body["count"] == len(expected)


FLEET_FILTERS = [
    ({}, ["a", "b", "c", "p", "r"]),
    ({"protocol": "modbus"}, ["a", "r"]),
    ({"protocol": "mqtt"}, ["p"]),
    ({"enabled": "false"}, ["b"]),
    ({"deploymentStatus": "failed"}, ["c"]),
    ({"deploymentStatus": "deployed"}, ["a", "b"]),
    ({"deploymentStatus": "pending"}, ["p"]),
    ({"deploymentStatus": "reconciling"}, ["r"]),
    ({"running": "true"}, ["a", "r"]),
    ({"running": "false"}, ["b", "c", "p"]),
    ({"syncedToConfig": "true"}, ["a", "b"]),
    ({"syncedToConfig": "false"}, ["c", "p", "r"]),
    ({"protocol": "modbus", "running": "true", "deploymentStatus": "reconciling"}, ["r"]),
]


@pytest.mark.parametrize(("params", "expected"), FLEET_FILTERS)
def test_fleet_list_filters(admin_client, mixed_device, inflight_device, params, expected):
    DeviceFactory()  # a device without sensors changes nothing

    body = admin_client.get(fleet_sensors_url(), params).json()

    assert sorted(r["name"] for r in body["results"]) == expected
    owners = {r["name"]: r["deviceUuid"] for r in body["results"]}
    for name, owner in owners.items():
        assert owner == str((mixed_device if name in "abc" else inflight_device).uuid)


def test_fleet_list_filter_combines_with_device(admin_client, mixed_device, inflight_device):
    body = admin_client.get(fleet_sensors_url(), {"device": str(inflight_device.uuid), "running": "true"}).json()
    assert [r["name"] for r in body["results"]] == ["r"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"protocol": "http"}, "protocol", id="protocol"),
        pytest.param({"deploymentStatus": "broken"}, "deploymentStatus", id="deploymentStatus"),
        pytest.param({"enabled": "maybe"}, "enabled", id="enabled"),
        pytest.param({"running": "sometimes"}, "running", id="running"),
        pytest.param({"syncedToConfig": "perhaps"}, "syncedToConfig", id="syncedToConfig"),
        pytest.param({"healthStatus": "sick"}, "healthStatus", id="healthStatus"),
    ],
)
def test_an_invalid_filter_value_is_a_400_not_an_unfiltered_list(admin_client, mixed_device, params, field):
    assert_error(admin_client.get(sensors_url(mixed_device.uuid), params), 400, "validation_error", fields=[field])
    assert_error(admin_client.get(fleet_sensors_url(), params), 400, "validation_error", fields=[field])


@pytest.mark.parametrize("slash", ["", "/"])
def test_fleet_list_spans_devices_with_cursor_pagination(admin_client, slash):
    devices = [DeviceFactory() for _ in range(3)]
    for device in devices:
        for n in range(2):
            sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name=f"s{n}"), user=None)

    first = admin_client.get(fleet_sensors_url() + slash, {"limit": 4})

    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"next", "previous", "results"}  # a cursor page: no COUNT(*)
    assert body["previous"] is None
    assert "cursor=" in body["next"]
    assert all(list(r) == SENSOR_ROW_KEYS for r in body["results"])
    second = admin_client.get(body["next"]).json()
    assert second["next"] is None
    rows = body["results"] + second["results"]
    assert len(rows) == 6
    assert len({r["id"] for r in rows}) == 6
    by_device = {}
    for row in rows:
        by_device.setdefault(row["deviceUuid"], []).append(row["name"])
    assert {k: sorted(v) for k, v in by_device.items()} == {str(d.uuid): ["s0", "s1"] for d in devices}


def test_fleet_list_filters_by_device(admin_client, device_with_sensors):
    other = DeviceFactory()
    sensor_create(device_uuid=other.uuid, data=SensorPayloadFactory(name="only-here"), user=None)

    body = admin_client.get(fleet_sensors_url(), {"device": str(other.uuid)}).json()

    assert [(r["name"], r["deviceUuid"]) for r in body["results"]] == [("only-here", str(other.uuid))]


def test_fleet_list_rejects_an_invalid_device_filter(admin_client, device_with_sensors):
    assert_error(admin_client.get(fleet_sensors_url(), {"device": "nope"}), 400, "validation_error", fields=["device"])


# -- create -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_create_writes_the_target_first_and_projects_a_pending_row(admin_client, superuser, device, slash):
    report_running(device)  # the device is in sync at version 1
    assert target_of(device).needs_deployment is False
    last = write_snapshot().last_event_id
    payload = SensorPayloadFactory(name="temp-1")

    response = admin_client.post(sensors_url(device.uuid) + slash, payload, format="json")

    assert response.status_code == 201, response.content
    assert response["ETag"] == '"2"'
    row = response.json()
    target = target_of(device)
    assert target.version == 2  # exactly one bump
    assert target.needs_deployment is True
    desired = target.config["sensors"]
    assert len(desired) == 1
    assert desired[0] == {"id": desired[0]["id"], **payload}
    assert str(uuid.UUID(desired[0]["id"])) == desired[0]["id"] == row["id"]
    history = DeviceTargetStateVersion.objects.get(device=device, version=2)
    assert history.config == target.config
    assert history.created_by == superuser
    assert history.change == {"added": ["temp-1"]}

    db_row = DeviceSensor.objects.get(device=device)
    assert (db_row.name, str(db_row.sensor_id), db_row.deployment_status, db_row.config_version) == (
        "temp-1",
        row["id"],
        "pending",
        2,
    )
    assert (row["deploymentStatus"], row["configVersion"], row["running"]) == ("pending", 2, False)

    events = list(events_since(last))
    types = [e.type for e in events]
    assert types[:2] == ["sensor.added", "target_state.updated"]
    assert set(types) <= {"sensor.added", "target_state.updated", "device.config_drift"}
    assert len({e.correlation_id for e in events}) == 1
    previous = Event.objects.filter(id__lte=last).order_by("-id").first()
    assert previous.correlation_id != events[0].correlation_id
    assert [e.sequence for e in events] == list(range(previous.sequence + 1, previous.sequence + 1 + len(events)))
    assert all(e.aggregate_id == str(device.uuid) for e in events)
    assert all(e.metadata["actor"] == "admin" and e.metadata["source"] == "api" for e in events)
    assert events[0].data["id"] == row["id"] and events[0].data["version"] == 2


def test_create_fills_in_defaults(admin_client, device):
    response = admin_client.post(
        sensors_url(device.uuid), {"name": "minimal", "protocol": "can", "connection": {}}, format="json"
    )

    assert response.status_code == 201, response.content
    row = response.json()
    assert (row["enabled"], row["pollInterval"], row["dataPoints"], row["metadata"]) == (True, 5000, [], {})
    stored = _target_sensor(device, "minimal")
    assert {k: stored[k] for k in ("enabled", "pollInterval", "dataPoints", "metadata")} == {
        "enabled": True,
        "pollInterval": 5000,
        "dataPoints": [],
        "metadata": {},
    }


def test_the_same_name_on_two_devices_is_fine(admin_client, device):
    other = DeviceFactory()
    payload = SensorPayloadFactory(name="shared")

    first = admin_client.post(sensors_url(device.uuid), payload, format="json")
    second = admin_client.post(sensors_url(other.uuid), payload, format="json")

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["id"] != second.json()["id"]


def test_create_on_an_unknown_device_is_404_and_writes_nothing(admin_client, device):
    before = write_snapshot()
    response = admin_client.post(sensors_url(uuid.uuid4()), SensorPayloadFactory(), format="json")
    assert_error(response, 404, "not_found")
    assert write_snapshot() == before


# -- retrieve -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_retrieve(admin_client, sensor_device, slash):
    response = admin_client.get(sensor_url(sensor_device.uuid, "temp-1") + slash)

    assert response.status_code == 200
    assert response.json()["name"] == "temp-1"
    assert response.json()["deviceUuid"] == str(sensor_device.uuid)


def test_a_255_character_name_is_addressable(admin_client, device):
    name = "n" * 255
    assert (
        admin_client.post(sensors_url(device.uuid), SensorPayloadFactory(name=name), format="json").status_code == 201
    )

    response = admin_client.get(sensor_url(device.uuid, name))

    assert response.status_code == 200
    assert response.json()["name"] == name


def test_retrieve_is_scoped_to_the_device(admin_client, sensor_device):
    other = DeviceFactory()
    assert_error(admin_client.get(sensor_url(other.uuid, "temp-1")), 404, "not_found")


# -- update -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_patch_changes_only_the_fields_sent(admin_client, superuser, slash):
    device = DeviceFactory()
    original = SensorPayloadFactory(name="temp-1", enabled=False, pollInterval=1000, metadata={"room": "B2"})
    sensor_create(device_uuid=device.uuid, data=original, user=superuser)
    sensor_id = _target_sensor(device, "temp-1")["id"]
    last = write_snapshot().last_event_id

    response = admin_client.patch(sensor_url(device.uuid, "temp-1") + slash, {"pollInterval": 750}, format="json")

    assert response.status_code == 200, response.content
    assert response["ETag"] == '"3"'
    assert _target_sensor(device, "temp-1") == {"id": sensor_id, **original, "pollInterval": 750}
    row = response.json()
    assert (row["id"], row["pollInterval"], row["enabled"], row["metadata"]) == (sensor_id, 750, False, {"room": "B2"})
    assert (row["configVersion"], row["deploymentStatus"]) == (3, "pending")
    target = target_of(device)
    assert target.version == 3 and target.needs_deployment is True
    assert DeviceTargetStateVersion.objects.get(device=device, version=3).change == {"updated": ["temp-1"]}
    events = list(events_since(last))
    assert {"target_state.updated", "sensor.updated"} <= {e.type for e in events}
    assert len({e.correlation_id for e in events}) == 1
    updated = next(e for e in events if e.type == "sensor.updated")
    assert updated.data["changed_fields"] == ["pollInterval"]
    assert updated.data["id"] == sensor_id


@pytest.mark.parametrize("slash", ["", "/"])
def test_put_replaces_and_omitted_optional_fields_take_their_defaults(admin_client, superuser, slash):
    device = DeviceFactory()
    sensor_create(
        device_uuid=device.uuid,
        data=SensorPayloadFactory(name="temp-1", enabled=False, pollInterval=1000, metadata={"room": "B2"}),
        user=superuser,
    )
    sensor_id = _target_sensor(device, "temp-1")["id"]

    response = admin_client.put(
        sensor_url(device.uuid, "temp-1") + slash,
        {"protocol": "opcua", "connection": {"url": "opc.tcp://x"}},
        format="json",
    )

    assert response.status_code == 200, response.content
    assert _target_sensor(device, "temp-1") == {
        "id": sensor_id,
        "name": "temp-1",
        "protocol": "opcua",
        "enabled": True,
        "pollInterval": 5000,
        "connection": {"url": "opc.tcp://x"},
        "dataPoints": [],
        "metadata": {},
    }
    row = response.json()
    assert (row["id"], row["protocol"], row["enabled"], row["pollInterval"], row["dataPoints"]) == (
        sensor_id,
        "opcua",
        True,
        5000,
        [],
    )
    assert target_of(device).version == 3


@pytest.mark.parametrize("method", ["put", "patch"])
def test_rename_keeps_the_id(admin_client, sensor_device, method):
    sensor_id = _target_sensor(sensor_device, "temp-1")["id"]
    body = {"name": "temp-renamed"}
    if method == "put":
        body |= {"protocol": "modbus", "connection": sensor_payload("temp-renamed")["connection"]}

    response = getattr(admin_client, method)(sensor_url(sensor_device.uuid, "temp-1"), body, format="json")

    assert response.status_code == 200, response.content
    assert response.json()["name"] == "temp-renamed"
    assert response.json()["id"] == sensor_id
    assert [s["name"] for s in target_of(sensor_device).config["sensors"]] == ["temp-renamed"]
    assert _target_sensor(sensor_device, "temp-renamed")["id"] == sensor_id
    rows = list(DeviceSensor.objects.filter(device=sensor_device).values_list("name", "sensor_id"))
    assert [(n, str(i)) for n, i in rows] == [("temp-renamed", sensor_id)]
    assert_error(admin_client.get(sensor_url(sensor_device.uuid, "temp-1")), 404, "not_found")
    assert admin_client.get(sensor_url(sensor_device.uuid, "temp-renamed")).json()["id"] == sensor_id
    change = DeviceTargetStateVersion.objects.get(device=sensor_device, version=3).change
    assert change["renamed"] == {"temp-1": "temp-renamed"}


def test_the_id_is_kept_for_the_sensors_life(admin_client, sensor_device):
    sensor_id = _target_sensor(sensor_device, "temp-1")["id"]
    url = sensor_url(sensor_device.uuid, "temp-1")
    steps = [
        ("patch", url, {"pollInterval": 200}),
        ("put", url, {"protocol": "can", "connection": {"bus": "can0"}}),
        ("patch", url, {"name": "t2"}),
        ("patch", sensor_url(sensor_device.uuid, "t2"), {"enabled": False}),
    ]
    for method, step_url, body in steps:
        response = getattr(admin_client, method)(step_url, body, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["id"] == sensor_id
    report_running(sensor_device)
    assert admin_client.get(sensor_url(sensor_device.uuid, "t2")).json()["id"] == sensor_id
    assert target_of(sensor_device).version == 6


@pytest.mark.parametrize("method", ["put", "patch"])
def test_sending_back_the_sensors_own_id_is_accepted(admin_client, sensor_device, method):
    current = admin_client.get(sensor_url(sensor_device.uuid, "temp-1")).json()["desired"]

    response = getattr(admin_client, method)(
        sensor_url(sensor_device.uuid, "temp-1"), {**current, "pollInterval": 300}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["id"] == current["id"]
    assert _target_sensor(sensor_device, "temp-1")["pollInterval"] == 300


@pytest.mark.parametrize("method", ["put", "patch"])
def test_an_update_that_changes_nothing_makes_no_new_version(admin_client, sensor_device, method):
    current = admin_client.get(sensor_url(sensor_device.uuid, "temp-1")).json()["desired"]
    body = {k: v for k, v in current.items() if k != "id"}
    before = write_snapshot()

    response = getattr(admin_client, method)(sensor_url(sensor_device.uuid, "temp-1"), body, format="json")

    assert response.status_code == 200
    assert response["ETag"] == '"2"'
    assert write_snapshot() == before


def test_updating_a_running_sensor_shows_it_reconciling(admin_client, sensor_device):
    report_running(sensor_device)

    response = admin_client.patch(sensor_url(sensor_device.uuid, "temp-1"), {"pollInterval": 1234}, format="json")

    assert response.status_code == 200
    row = response.json()
    # The row shows reality (what runs, at the applied version) and the wanted change side by side.
    assert (row["deploymentStatus"], row["running"], row["pollInterval"], row["configVersion"]) == (
        "reconciling",
        True,
        5000,
        2,
    )
    assert row["desired"]["pollInterval"] == 1234


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_writes_to_an_unknown_sensor_are_404_and_write_nothing(admin_client, sensor_device, method):
    before = write_snapshot()
    kwargs = {} if method == "delete" else {"data": {"protocol": "can", "connection": {}}, "format": "json"}

    response = getattr(admin_client, method)(sensor_url(sensor_device.uuid, "nope"), **kwargs)

    assert_error(response, 404, "not_found")
    assert write_snapshot() == before


# -- delete -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_delete_of_a_never_reported_sensor_removes_its_row(admin_client, device_with_sensors, slash):
    name = DeviceSensor.objects.filter(device=device_with_sensors).order_by("name").first().name
    removed_id = _target_sensor(device_with_sensors, name)["id"]
    last = write_snapshot().last_event_id

    response = admin_client.delete(sensor_url(device_with_sensors.uuid, name) + slash)

    assert response.status_code == 204
    assert response.content == b""
    target = target_of(device_with_sensors)
    assert target.version == 5
    assert name not in [s["name"] for s in target.config["sensors"]]
    assert len(target.config["sensors"]) == 2
    assert not DeviceSensor.objects.filter(device=device_with_sensors, name=name).exists()
    assert DeviceSensor.objects.filter(device=device_with_sensors).count() == 2
    assert DeviceTargetStateVersion.objects.get(device=device_with_sensors, version=5).change == {"removed": [name]}
    events = list(events_since(last))
    assert [e.type for e in events][:2] == ["sensor.removed", "target_state.updated"]
    assert events[0].data == {"name": name, "id": removed_id, "version": 5}
    assert len({e.correlation_id for e in events}) == 1
    assert_error(admin_client.get(sensor_url(device_with_sensors.uuid, name)), 404, "not_found")


def test_delete_of_a_running_sensor_keeps_its_row_reconciling(admin_client, sensor_device):
    report_running(sensor_device)

    response = admin_client.delete(sensor_url(sensor_device.uuid, "temp-1"))

    assert response.status_code == 204
    assert target_of(sensor_device).config["sensors"] == []
    row = admin_client.get(sensor_url(sensor_device.uuid, "temp-1")).json()
    assert (row["deploymentStatus"], row["running"], row["desired"]) == ("reconciling", True, None)
    assert target_of(sensor_device).needs_deployment is True


# -- audit --------------------------------------------------------------------------------------------------------


def test_rows_and_events_record_who_and_which_request(admin_client, sensor_device):
    editor = UserFactory(username="editor", permissions=["sensors.change_devicesensor"])
    client = APIClient()
    client.force_authenticate(editor)
    last = write_snapshot().last_event_id

    response = client.patch(
        sensor_url(sensor_device.uuid, "temp-1"), {"enabled": False}, format="json", HTTP_X_REQUEST_ID="req-42"
    )

    assert response.status_code == 200
    row = response.json()
    assert (row["createdBy"], row["updatedBy"]) == ("admin", "editor")
    assert response["X-Request-ID"] == "req-42"
    events = list(events_since(last))
    assert events
    assert {e.metadata["request_id"] for e in events} == {"req-42"}
    assert {e.metadata["actor"] for e in events} == {"editor"}
    history = DeviceTargetStateVersion.objects.get(device=sensor_device, version=3)
    assert history.created_by == editor


def test_every_version_stays_in_the_history(admin_client, sensor_device):
    url = sensor_url(sensor_device.uuid, "temp-1")
    for interval in (200, 300, 400):
        assert admin_client.patch(url, {"pollInterval": interval}, format="json").status_code == 200
    assert admin_client.delete(url).status_code == 204

    history = DeviceTargetStateVersion.objects.filter(device=sensor_device).order_by("version")
    assert [h.version for h in history] == [1, 2, 3, 4, 5, 6]
    assert [h.config["sensors"][0]["pollInterval"] for h in history[2:5]] == [200, 300, 400]
    assert history[5].config["sensors"] == []
