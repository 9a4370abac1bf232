"""GET/PUT devices/<uuid>/target-state: ETag, If-Match, validation, history and the re-projected read model."""

import copy
import uuid

import pytest

from devices.models import DeviceTargetStateVersion
from sensors.models import DeviceSensor
from tests.factories import SensorPayloadFactory
from tests.helpers import assert_error, events_since, report_running, target_of, target_state_url, write_snapshot

pytestmark = pytest.mark.django_db

TARGET_KEYS = {
    "deviceUuid",
    "version",
    "config",
    "apps",
    "needsDeployment",
    "updatedAt",
    "updatedBy",
    "lastDeployedAt",
    "etag",
    "draft",
}


@pytest.mark.parametrize("slash", ["", "/"])
def test_get_returns_the_document_with_a_strong_etag(admin_client, device_with_sensors, slash):
    response = admin_client.get(target_state_url(device_with_sensors.uuid) + slash)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == TARGET_KEYS
    assert body["deviceUuid"] == str(device_with_sensors.uuid)
    assert body["version"] == 4
    assert response["ETag"] == '"4"' == body["etag"]
    assert not response["ETag"].startswith("W/")
    assert body["needsDeployment"] is True
    assert body["updatedBy"] == "admin"
    sensors = body["config"]["sensors"]
    assert [s["protocol"] for s in sensors] == ["modbus", "can", "opcua"]
    assert all(str(uuid.UUID(s["id"])) == s["id"] for s in sensors)


def test_get_of_an_unknown_device_is_404(admin_client):
    assert_error(admin_client.get(target_state_url(uuid.uuid4())), 404, "not_found")


def test_put_stores_a_new_version_keeps_ids_and_projects_the_rows(admin_client, superuser, device_with_sensors):
    uuid_ = device_with_sensors.uuid
    current = admin_client.get(target_state_url(uuid_)).json()
    kept, changed, removed = current["config"]["sensors"]
    changed_without_id = {k: v for k, v in changed.items() if k != "id"} | {"pollInterval": 1000}
    new = SensorPayloadFactory(name="brand-new", protocol="mqtt")
    config = {"sensors": [kept, changed_without_id, new], "logLevel": "debug"}
    last = write_snapshot().last_event_id

    response = admin_client.put(
        target_state_url(uuid_), {"config": config, "apps": {"agent": {"image": "x:1"}}}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == 5
    assert response["ETag"] == '"5"' == body["etag"]
    assert body["apps"] == {"agent": {"image": "x:1"}}
    assert body["config"]["logLevel"] == "debug"  # agent keys pass through
    stored = {s["name"]: s for s in body["config"]["sensors"]}
    assert list(stored) == [kept["name"], changed["name"], "brand-new"]
    assert stored[kept["name"]]["id"] == kept["id"]
    assert stored[changed["name"]]["id"] == changed["id"]  # same name, no id sent: the id is kept
    assert stored["brand-new"]["id"] not in {kept["id"], changed["id"], removed["id"]}
    uuid.UUID(stored["brand-new"]["id"])

    target = target_of(device_with_sensors)
    assert (target.version, target.needs_deployment) == (5, True)
    history = DeviceTargetStateVersion.objects.get(device=device_with_sensors, version=5)
    assert history.config == target.config and history.apps == target.apps
    assert history.created_by == superuser
    assert history.change == {
        "added": ["brand-new"],
        "updated": [changed["name"]],
        "removed": [removed["name"]],
        "apps": True,
    }

    rows = {r.name: r for r in DeviceSensor.objects.filter(device=device_with_sensors)}
    assert set(rows) == {kept["name"], changed["name"], "brand-new"}  # never reported: removed row is gone
    assert rows[changed["name"]].poll_interval == 1000
    assert rows[changed["name"]].config_version == 5
    assert rows["brand-new"].deployment_status == "pending"
    assert str(rows["brand-new"].sensor_id) == stored["brand-new"]["id"]

    events = list(events_since(last))
    assert "target_state.updated" in [e.type for e in events]
    assert len({e.correlation_id for e in events}) == 1
    sequences = [e.sequence for e in events]
    assert sequences == list(range(sequences[0], sequences[0] + len(events)))


def test_put_without_apps_keeps_the_apps(admin_client, device):
    admin_client.put(target_state_url(device.uuid), {"config": {}, "apps": {"a": 1}}, format="json")

    response = admin_client.put(
        target_state_url(device.uuid), {"config": {"sensors": [SensorPayloadFactory()]}}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["apps"] == {"a": 1}


def test_put_with_the_seed_notes_key_is_converted_to_config_sensors(admin_client, device_with_sensors):
    """A script written for protocolAdapterDevices keeps working; the agent only ever reads config.sensors."""
    current = admin_client.get(target_state_url(device_with_sensors.uuid)).json()
    sensors = [*current["config"]["sensors"], SensorPayloadFactory(name="added-by-old-script")]

    response = admin_client.put(
        target_state_url(device_with_sensors.uuid),
        {"config": {"protocolAdapterDevices": sensors, "logLevel": "debug"}},
        format="json",
    )

    assert response.status_code == 200, response.content
    config = response.json()["config"]
    assert set(config) == {"sensors", "logLevel"}
    assert [s["name"] for s in config["sensors"]] == [s["name"] for s in sensors]
    assert config["sensors"][0]["id"] == current["config"]["sensors"][0]["id"]  # ids kept across the rename
    assert DeviceSensor.objects.filter(device=device_with_sensors, name="added-by-old-script").exists()
    stored = DeviceTargetStateVersion.objects.get(device=device_with_sensors, version=response.json()["version"])
    assert "protocolAdapterDevices" not in stored.config


def test_put_of_the_identical_document_makes_no_new_version(admin_client, device_with_sensors):
    current = admin_client.get(target_state_url(device_with_sensors.uuid)).json()
    before = write_snapshot()

    response = admin_client.put(
        target_state_url(device_with_sensors.uuid),
        {"config": current["config"], "apps": current["apps"]},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["version"] == 4
    assert response["ETag"] == '"4"'
    assert write_snapshot() == before


def test_put_of_the_same_sensors_without_ids_makes_no_new_version(admin_client, device_with_sensors):
    current = admin_client.get(target_state_url(device_with_sensors.uuid)).json()
    config = copy.deepcopy(current["config"])
    for sensor in config["sensors"]:
        del sensor["id"]
    before = write_snapshot()

    response = admin_client.put(target_state_url(device_with_sensors.uuid), {"config": config}, format="json")

    assert response.status_code == 200
    assert response.json()["version"] == 4
    assert write_snapshot() == before


def test_put_that_removes_a_running_sensor_leaves_it_reconciling(admin_client, sensor_device):
    report_running(sensor_device)  # the agent runs temp-1 at version 2
    row = DeviceSensor.objects.get(device=sensor_device, name="temp-1")
    assert (row.deployment_status, row.running) == ("deployed", True)

    response = admin_client.put(target_state_url(sensor_device.uuid), {"config": {"sensors": []}}, format="json")

    assert response.status_code == 200
    row = DeviceSensor.objects.get(device=sensor_device, name="temp-1")
    assert (row.deployment_status, row.running, row.desired) == ("reconciling", True, None)
    assert target_of(sensor_device).needs_deployment is True


# -- If-Match ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("if_match", ['"2"', "*", '"1", "2"', ' "9" , "2" '])
def test_put_with_a_matching_if_match_succeeds(admin_client, sensor_device, if_match):
    response = admin_client.put(
        target_state_url(sensor_device.uuid), {"config": {}}, format="json", HTTP_IF_MATCH=if_match
    )

    assert response.status_code == 200, response.content
    assert response["ETag"] == '"3"'


@pytest.mark.parametrize("if_match", ['"1"', '"3"', "2", 'W/"2"', '"x"', ""])
def test_put_with_a_stale_if_match_is_412_and_writes_nothing(admin_client, sensor_device, if_match):
    before = write_snapshot()

    response = admin_client.put(
        target_state_url(sensor_device.uuid), {"config": {}}, format="json", HTTP_IF_MATCH=if_match
    )

    assert_error(response, 412, "precondition_failed")
    assert response["ETag"] == '"2"'
    assert write_snapshot() == before


def test_the_etag_of_one_put_is_the_if_match_of_the_next(admin_client, device):
    etag = admin_client.get(target_state_url(device.uuid))["ETag"]
    for n in range(3):
        config = {"sensors": [SensorPayloadFactory(name=f"s{n}")]}
        response = admin_client.put(
            target_state_url(device.uuid), {"config": config}, format="json", HTTP_IF_MATCH=etag
        )
        assert response.status_code == 200
        etag = response["ETag"]
    assert etag == '"4"'
    # and the first ETag is now stale
    stale = admin_client.put(target_state_url(device.uuid), {"config": {}}, format="json", HTTP_IF_MATCH='"1"')
    assert stale.status_code == 412


# -- validation ----------------------------------------------------------------------------------------------------


def _sensors(*sensors):
    return {"config": {"sensors": list(sensors)}}


INVALID_TARGET_BODIES = [
    pytest.param({}, ["config"], id="missing-config"),
    pytest.param({"config": []}, ["config"], id="config-list"),
    pytest.param({"config": "x"}, ["config"], id="config-string"),
    pytest.param({"config": 3}, ["config"], id="config-number"),
    pytest.param({"config": None}, ["config"], id="config-null"),
    pytest.param({"config": {}, "apps": []}, ["apps"], id="apps-list"),
    pytest.param({"config": {}, "apps": "x"}, ["apps"], id="apps-string"),
    pytest.param({"config": {}, "apps": 1}, ["apps"], id="apps-number"),
    pytest.param({"config": {}, "apps": None}, ["apps"], id="apps-null"),
    pytest.param({"config": {}, "version": 9}, ["version"], id="unknown-top-level-field"),
    pytest.param({"config": {"sensors": {"a": 1}}}, ["config.sensors"], id="sensors-not-a-list"),
    pytest.param(
        {"config": {"sensors": [], "protocolAdapterDevices": []}},
        ["config.protocolAdapterDevices"],
        id="both-sensor-keys",
    ),
    pytest.param(
        {"config": {"protocolAdapterDevices": [SensorPayloadFactory(pollInterval=1)]}},
        ["config.protocolAdapterDevices[0].pollInterval"],
        id="old-key-names-its-own-field",
    ),
    pytest.param(
        _sensors(SensorPayloadFactory(pollInterval=5000.0)),
        ["config.sensors[0].pollInterval"],
        id="sensor-float-poll",
    ),
    pytest.param(
        _sensors(SensorPayloadFactory(), SensorPayloadFactory(pollInterval=99)),
        ["config.sensors[1].pollInterval"],
        id="second-sensor-poll-too-small",
    ),
    pytest.param(
        _sensors(SensorPayloadFactory(name="dup"), SensorPayloadFactory(name="dup")),
        ["config.sensors[1].name"],
        id="duplicate-names",
    ),
    pytest.param(_sensors(SensorPayloadFactory(name="a b")), ["config.sensors[0].name"], id="sensor-bad-name"),
    pytest.param(
        _sensors(SensorPayloadFactory(protocol="http")),
        ["config.sensors[0].protocol"],
        id="sensor-bad-protocol",
    ),
    pytest.param(
        _sensors({k: v for k, v in SensorPayloadFactory().items() if k != "connection"}),
        ["config.sensors[0].connection"],
        id="sensor-missing-connection",
    ),
    pytest.param(
        _sensors(SensorPayloadFactory(enabled="true")),
        ["config.sensors[0].enabled"],
        id="sensor-enabled-string",
    ),
    pytest.param(
        _sensors(SensorPayloadFactory(dataPoints=[{"name": "t"}, {"name": "t"}])),
        ["config.sensors[0].dataPoints[1].name"],
        id="sensor-duplicate-data-point",
    ),
    pytest.param(
        _sensors(SensorPayloadFactory(colour="red")),
        ["config.sensors[0].colour"],
        id="sensor-unknown-field",
    ),
    pytest.param(_sensors(SensorPayloadFactory(id="not-a-uuid")), ["config.sensors[0].id"], id="sensor-bad-id"),
    pytest.param(
        _sensors(
            SensorPayloadFactory(name="a", id="6f1c0b7e-0000-4000-8000-000000000001"),
            SensorPayloadFactory(name="b", id="6f1c0b7e-0000-4000-8000-000000000001"),
        ),
        ["config.sensors[1].id"],
        id="sensor-duplicate-id",
    ),
    pytest.param(_sensors("modbus"), ["config.sensors[0]"], id="sensor-not-an-object"),
]


@pytest.mark.parametrize(("body", "fields"), INVALID_TARGET_BODIES)
def test_put_rejects_invalid_documents_and_writes_nothing(admin_client, device_with_sensors, body, fields):
    before = write_snapshot()

    response = admin_client.put(target_state_url(device_with_sensors.uuid), body, format="json")

    assert_error(response, 400, "validation_error", fields=fields)
    assert write_snapshot() == before


@pytest.mark.parametrize("raw", ["[]", "1", "null", '"config"', '{"config": {', "{config: {}}"])
def test_put_rejects_non_object_or_malformed_bodies(admin_client, device_with_sensors, raw):
    before = write_snapshot()

    response = admin_client.put(target_state_url(device_with_sensors.uuid), raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["error"] in {"validation_error", "malformed_request"}
    assert write_snapshot() == before


def test_put_on_an_unknown_device_is_404_and_writes_nothing(admin_client, device):
    before = write_snapshot()
    assert_error(admin_client.put(target_state_url(uuid.uuid4()), {"config": {}}, format="json"), 404, "not_found")
    assert write_snapshot() == before
