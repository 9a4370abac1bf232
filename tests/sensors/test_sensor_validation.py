"""SPEC section 3: every validation rule of a sensor write, one case each. Each invalid input is a 400 in the
error shape naming the wire field, and nothing is written (target, history, rows, events)."""

import uuid

import pytest

from tests.factories import DeviceFactory, SensorPayloadFactory
from tests.helpers import assert_error, sensor_url, sensors_url, target_of, write_snapshot

pytestmark = pytest.mark.django_db


def _without(key: str) -> dict:
    return {k: v for k, v in SensorPayloadFactory().items() if k != key}


def _with(**fields) -> dict:
    return {**SensorPayloadFactory(), **fields}


INVALID_SENSORS = [
    # name: 1-255 chars of [A-Za-z0-9._-]
    pytest.param(_without("name"), "name", id="name-missing"),
    pytest.param(_with(name=""), "name", id="name-0-chars"),
    pytest.param(_with(name="n" * 256), "name", id="name-256-chars"),
    pytest.param(_with(name="two words"), "name", id="name-space"),
    pytest.param(_with(name=" lead"), "name", id="name-leading-space"),
    pytest.param(_with(name="a/b"), "name", id="name-slash"),
    pytest.param(_with(name="temp\u00e9rature"), "name", id="name-unicode-letter"),
    pytest.param(_with(name="\u6e29\u5ea6"), "name", id="name-cjk"),
    pytest.param(_with(name="a:b"), "name", id="name-colon"),
    pytest.param(_with(name="a\nb"), "name", id="name-newline"),
    pytest.param(_with(name="ok\n"), "name", id="name-trailing-newline"),
    pytest.param(_with(name=5), "name", id="name-number"),
    pytest.param(_with(name=None), "name", id="name-null"),
    # protocol: one of modbus, can, opcua, mqtt
    pytest.param(_without("protocol"), "protocol", id="protocol-missing"),
    pytest.param(_with(protocol="http"), "protocol", id="protocol-unknown"),
    pytest.param(_with(protocol="MODBUS"), "protocol", id="protocol-wrong-case"),
    pytest.param(_with(protocol=""), "protocol", id="protocol-empty"),
    pytest.param(_with(protocol=None), "protocol", id="protocol-null"),
    pytest.param(_with(protocol=["modbus"]), "protocol", id="protocol-list"),
    # enabled: a boolean
    pytest.param(_with(enabled="true"), "enabled", id="enabled-string-true"),
    pytest.param(_with(enabled=1), "enabled", id="enabled-1"),
    pytest.param(_with(enabled=0), "enabled", id="enabled-0"),
    pytest.param(_with(enabled=None), "enabled", id="enabled-null"),
    # pollInterval: integer ms, 100..86_400_000
    pytest.param(_with(pollInterval=5000.0), "pollInterval", id="poll-float-whole"),
    pytest.param(_with(pollInterval=5000.5), "pollInterval", id="poll-float"),
    pytest.param(_with(pollInterval="5000"), "pollInterval", id="poll-string"),
    pytest.param(_with(pollInterval=True), "pollInterval", id="poll-true"),
    pytest.param(_with(pollInterval=None), "pollInterval", id="poll-null"),
    pytest.param(_with(pollInterval=99), "pollInterval", id="poll-99"),
    pytest.param(_with(pollInterval=86_400_001), "pollInterval", id="poll-86400001"),
    pytest.param(_with(pollInterval=0), "pollInterval", id="poll-0"),
    pytest.param(_with(pollInterval=-5000), "pollInterval", id="poll-negative"),
    pytest.param(_with(pollInterval=2**63), "pollInterval", id="poll-huge"),
    # connection: a JSON object, required
    pytest.param(_without("connection"), "connection", id="connection-missing"),
    pytest.param(_with(connection=None), "connection", id="connection-null"),
    pytest.param(_with(connection=[]), "connection", id="connection-list"),
    pytest.param(_with(connection="10.0.0.5:502"), "connection", id="connection-string"),
    pytest.param(_with(connection=502), "connection", id="connection-number"),
    # dataPoints: a list of objects each with a name unique within the sensor
    pytest.param(_with(dataPoints={"name": "t"}), "dataPoints", id="points-object"),
    pytest.param(_with(dataPoints="temperature"), "dataPoints", id="points-string"),
    pytest.param(_with(dataPoints=None), "dataPoints", id="points-null"),
    pytest.param(_with(dataPoints=["temperature"]), "dataPoints[0]", id="points-item-string"),
    pytest.param(_with(dataPoints=[{"name": "t"}, 7]), "dataPoints[1]", id="points-item-number"),
    pytest.param(_with(dataPoints=[{"address": 40001}]), "dataPoints[0].name", id="points-name-missing"),
    pytest.param(_with(dataPoints=[{"name": ""}]), "dataPoints[0].name", id="points-name-empty"),
    pytest.param(_with(dataPoints=[{"name": 4}]), "dataPoints[0].name", id="points-name-number"),
    pytest.param(
        _with(dataPoints=[{"name": "t"}, {"name": "h"}, {"name": "t"}]),
        "dataPoints[2].name",
        id="points-name-duplicate",
    ),
    # metadata: an object
    pytest.param(_with(metadata=[]), "metadata", id="metadata-list"),
    pytest.param(_with(metadata="room B2"), "metadata", id="metadata-string"),
    pytest.param(_with(metadata=None), "metadata", id="metadata-null"),
    # unknown fields are rejected; id is assigned by the server
    pytest.param(_with(colour="red"), "colour", id="unknown-field"),
    pytest.param(_with(poll_interval=5000), "poll_interval", id="unknown-snake-case"),
    pytest.param(_with(deploymentStatus="deployed"), "deploymentStatus", id="unknown-read-only-field"),
    pytest.param(_with(id=str(uuid.uuid4())), "id", id="id-on-create"),
    pytest.param(_with(id="not-a-uuid"), "id", id="id-on-create-invalid"),
]

VALID_SENSORS = [
    pytest.param(_with(name="a"), id="name-1-char"),
    pytest.param(_with(name="n" * 255), id="name-255-chars"),
    pytest.param(_with(name="A-z_0.9"), id="name-all-classes"),
    pytest.param(_with(name="..."), id="name-dots"),
    pytest.param(_with(protocol="can"), id="protocol-can"),
    pytest.param(_with(protocol="opcua"), id="protocol-opcua"),
    pytest.param(_with(protocol="mqtt"), id="protocol-mqtt"),
    pytest.param(_with(enabled=False), id="enabled-false"),
    pytest.param(_with(pollInterval=100), id="poll-100"),
    pytest.param(_with(pollInterval=86_400_000), id="poll-86400000"),
    pytest.param(_with(connection={}), id="connection-empty"),
    pytest.param(_with(dataPoints=[]), id="points-empty"),
    pytest.param(_with(dataPoints=[{"name": "t"}, {"name": "T"}]), id="points-names-differ-by-case"),
    pytest.param(_with(metadata={"nested": {"a": [1, 2]}}), id="metadata-nested"),
]


@pytest.fixture
def busy_device(db, superuser):
    """A device with history: two sensors (target version 3), so 'nothing written' compares real content."""
    device = DeviceFactory()
    from reconciliation.services.sensors import sensor_create

    for name in ("existing", "other"):
        sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name=name), user=superuser)
    return device


@pytest.mark.parametrize(("payload", "field"), INVALID_SENSORS)
def test_create_rejects(admin_client, busy_device, payload, field):
    before = write_snapshot()

    response = admin_client.post(sensors_url(busy_device.uuid), payload, format="json")

    assert_error(response, 400, "validation_error", fields=[field])
    assert write_snapshot() == before


@pytest.mark.parametrize("payload", VALID_SENSORS)
def test_create_accepts(admin_client, busy_device, payload):
    response = admin_client.post(sensors_url(busy_device.uuid), payload, format="json")

    assert response.status_code == 201, response.content
    stored = next(s for s in target_of(busy_device).config["sensors"] if s["name"] == payload["name"])
    assert {k: v for k, v in stored.items() if k != "id"} == payload
    assert target_of(busy_device).version == 4


def test_create_rejects_a_duplicate_name_on_the_same_device(admin_client, busy_device):
    before = write_snapshot()

    response = admin_client.post(sensors_url(busy_device.uuid), _with(name="existing", protocol="can"), format="json")

    assert_error(response, 400, "validation_error", fields=["name"])
    assert write_snapshot() == before


def test_names_are_case_sensitive(admin_client, busy_device):
    response = admin_client.post(sensors_url(busy_device.uuid), _with(name="EXISTING"), format="json")
    assert response.status_code == 201


def test_every_invalid_field_is_named_at_once(admin_client, busy_device):
    payload = {"name": "a b", "protocol": "http", "enabled": "yes", "pollInterval": 1, "connection": 1, "x": 1}

    body = assert_error(
        admin_client.post(sensors_url(busy_device.uuid), payload, format="json"),
        400,
        "validation_error",
        fields=["name", "protocol", "enabled", "pollInterval", "connection", "x"],
    )
    assert "name" in body["message"]


@pytest.mark.parametrize("raw", ["[]", '[{"name": "x"}]', "5000", '"sensor"', "null", "true"])
def test_create_rejects_a_body_that_is_not_an_object(admin_client, busy_device, raw):
    before = write_snapshot()

    response = admin_client.post(sensors_url(busy_device.uuid), raw, content_type="application/json")

    assert_error(response, 400, "validation_error", fields=[])
    assert write_snapshot() == before


@pytest.mark.parametrize("raw", ['{"name": "x"', "{'name': 'x'}", "", '{"name": "x"} trailing', "\x00"])
def test_create_rejects_malformed_json(admin_client, busy_device, raw):
    before = write_snapshot()

    response = admin_client.post(sensors_url(busy_device.uuid), raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["error"] in {"malformed_request", "validation_error"}
    assert write_snapshot() == before


def test_a_form_encoded_body_is_refused_not_500(admin_client, busy_device):
    before = write_snapshot()

    response = admin_client.post(
        sensors_url(busy_device.uuid), "name=x&protocol=can", content_type="application/x-www-form-urlencoded"
    )

    assert_error(response, 415, "unsupported_media_type")
    assert write_snapshot() == before


# -- the same rules on update -------------------------------------------------------------------------------------

INVALID_PATCHES = [
    pytest.param({"name": ""}, "name", id="name-empty"),
    pytest.param({"name": "a/b"}, "name", id="name-slash"),
    pytest.param({"name": "n" * 256}, "name", id="name-256"),
    pytest.param({"name": "other"}, "name", id="rename-onto-existing"),
    pytest.param({"protocol": "zigbee"}, "protocol", id="protocol"),
    pytest.param({"enabled": "false"}, "enabled", id="enabled-string"),
    pytest.param({"pollInterval": 5000.0}, "pollInterval", id="poll-float"),
    pytest.param({"pollInterval": "5000"}, "pollInterval", id="poll-string"),
    pytest.param({"pollInterval": False}, "pollInterval", id="poll-bool"),
    pytest.param({"pollInterval": 99}, "pollInterval", id="poll-too-small"),
    pytest.param({"pollInterval": 86_400_001}, "pollInterval", id="poll-too-large"),
    pytest.param({"connection": None}, "connection", id="connection-null"),
    pytest.param({"dataPoints": [{"name": "t"}, {"name": "t"}]}, "dataPoints[1].name", id="points-duplicate"),
    pytest.param({"metadata": []}, "metadata", id="metadata-list"),
    pytest.param({"colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"id": str(uuid.uuid4())}, "id", id="another-id"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_PATCHES)
def test_patch_rejects(admin_client, busy_device, body, field):
    before = write_snapshot()

    response = admin_client.patch(sensor_url(busy_device.uuid, "existing"), body, format="json")

    assert_error(response, 400, "validation_error", fields=[field])
    assert write_snapshot() == before


INVALID_PUTS = [
    pytest.param({"protocol": "can"}, "connection", id="connection-missing"),
    pytest.param({"connection": {}}, "protocol", id="protocol-missing"),
    pytest.param({"protocol": "can", "connection": {}, "pollInterval": 50}, "pollInterval", id="poll-too-small"),
    pytest.param({"protocol": "can", "connection": {}, "enabled": 1}, "enabled", id="enabled-int"),
    pytest.param({"protocol": "can", "connection": {}, "name": "other"}, "name", id="rename-onto-existing"),
    pytest.param({"protocol": "can", "connection": {}, "id": str(uuid.uuid4())}, "id", id="another-id"),
    pytest.param({"protocol": "can", "connection": {}, "extra": True}, "extra", id="unknown-field"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_PUTS)
def test_put_rejects(admin_client, busy_device, body, field):
    before = write_snapshot()

    response = admin_client.put(sensor_url(busy_device.uuid, "existing"), body, format="json")

    assert_error(response, 400, "validation_error", fields=[field])
    assert write_snapshot() == before


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize("raw", ["[]", "42", "null", '"x"', '{"pollInterval": '])
def test_update_rejects_non_object_or_malformed_bodies(admin_client, busy_device, method, raw):
    before = write_snapshot()

    response = getattr(admin_client, method)(
        sensor_url(busy_device.uuid, "existing"), raw, content_type="application/json"
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"] in {"validation_error", "malformed_request"}
    assert write_snapshot() == before
