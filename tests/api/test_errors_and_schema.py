"""404s and bad requests answer JSON in the stable error shape (never HTML, never 500); the OpenAPI schema and
its docs page render."""

import uuid

import pytest

from tests.helpers import (
    API,
    assert_error,
    device_url,
    rotate_key_url,
    sensor_url,
    sensors_url,
    target_state_url,
    write_snapshot,
)

pytestmark = pytest.mark.django_db

UNKNOWN = uuid.UUID("00000000-0000-4000-8000-000000000000")


def _assert_json_404(response):
    assert response.status_code == 404, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert b"<html" not in response.content.lower()
    body = response.json()
    assert body["error"] == "not_found"
    assert isinstance(body["message"], str) and body["message"]
    assert "fields" not in body


SENSOR_BODY = {"name": "x", "protocol": "can", "connection": {}}
UNKNOWN_DEVICE = [
    pytest.param("get", device_url(UNKNOWN), None, id="device-get"),
    pytest.param("put", device_url(UNKNOWN), {"name": "x"}, id="device-put"),
    pytest.param("patch", device_url(UNKNOWN), {"name": "x"}, id="device-patch"),
    pytest.param("delete", device_url(UNKNOWN), None, id="device-delete"),
    pytest.param("post", rotate_key_url(UNKNOWN), None, id="rotate-key"),
    pytest.param("get", target_state_url(UNKNOWN), None, id="target-state-get"),
    pytest.param("put", target_state_url(UNKNOWN), {"config": {}}, id="target-state-put"),
    pytest.param("get", sensors_url(UNKNOWN), None, id="sensors-list"),
    pytest.param("post", sensors_url(UNKNOWN), SENSOR_BODY, id="sensors-create"),
    pytest.param("get", sensor_url(UNKNOWN, "temp-1"), None, id="sensor-get"),
    pytest.param("put", sensor_url(UNKNOWN, "temp-1"), SENSOR_BODY, id="sensor-put"),
    pytest.param("patch", sensor_url(UNKNOWN, "temp-1"), {"pollInterval": 200}, id="sensor-patch"),
    pytest.param("delete", sensor_url(UNKNOWN, "temp-1"), None, id="sensor-delete"),
]


@pytest.mark.parametrize(("method", "url", "body"), UNKNOWN_DEVICE)
def test_an_unknown_device_is_a_json_404_and_writes_nothing(admin_client, sensor_device, method, url, body):
    before = write_snapshot()
    kwargs = {"data": body, "format": "json"} if body is not None else {}

    response = getattr(admin_client, method)(url, **kwargs)

    _assert_json_404(response)
    assert write_snapshot() == before


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_an_unknown_sensor_name_is_a_json_404(admin_client, sensor_device, method):
    before = write_snapshot()

    response = getattr(admin_client, method)(
        sensor_url(sensor_device.uuid, "no-such-sensor"), {"protocol": "can", "connection": {}}, format="json"
    )

    _assert_json_404(response)
    assert write_snapshot() == before


INVALID_PATHS = [
    f"{API}/devices/not-a-uuid",
    f"{API}/devices/not-a-uuid/",
    f"{API}/devices/12345",
    f"{API}/devices/{UNKNOWN}x",
    f"{API}/devices/not-a-uuid/target-state",
    f"{API}/devices/not-a-uuid/rotate-key",
    f"{API}/devices/not-a-uuid/sensors",
    f"{API}/devices/not-a-uuid/sensors/temp-1",
    f"{API}/devices/{UNKNOWN}/sensors/two%20words",
    f"{API}/devices/{UNKNOWN}/sensors/a%2Fb",
    f"{API}/devices/{UNKNOWN}/sensors/" + "n" * 256,
    f"{API}/no-such-endpoint",
    f"{API}/sensors/temp-1",
]


@pytest.mark.parametrize("method", ["get", "post", "put", "patch", "delete"])
@pytest.mark.parametrize("path", INVALID_PATHS)
def test_an_invalid_path_is_a_json_404(admin_client, sensor_device, path, method):
    before = write_snapshot()

    response = getattr(admin_client, method)(path, {"name": "x"}, format="json")

    _assert_json_404(response)
    assert write_snapshot() == before


def test_an_invalid_uuid_in_the_path_is_a_json_404_for_anonymous_users_too(api_client):
    response = api_client.get(f"{API}/devices/not-a-uuid", HTTP_ACCEPT="text/html")
    _assert_json_404(response)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", lambda d: device_url(d.uuid)),
        ("delete", lambda d: f"{API}/devices"),
        ("post", lambda d: target_state_url(d.uuid)),
        ("delete", lambda d: target_state_url(d.uuid)),
        ("get", lambda d: rotate_key_url(d.uuid)),
        ("post", lambda d: sensor_url(d.uuid, "temp-1")),
        ("post", lambda d: f"{API}/sensors"),
        ("delete", lambda d: f"{API}/sensors"),
    ],
)
def test_an_unsupported_method_is_a_json_405(admin_client, sensor_device, method, url):
    before = write_snapshot()

    response = getattr(admin_client, method)(url(sensor_device))

    assert_error(response, 405, "method_not_allowed")
    assert write_snapshot() == before


def test_a_bad_pagination_parameter_is_a_400_naming_it(admin_client, sensor_device):
    for name, value in (("limit", "abc"), ("offset", "-1"), ("limit", "-5"), ("limit", "0"), ("limit", "1.5")):
        response = admin_client.get(f"{API}/devices", {name: value})
        assert_error(response, 400, "validation_error", fields=[name])
    assert admin_client.get(f"{API}/devices", {"limit": "10000000000000000000000"}).status_code == 200  # capped
    assert_error(admin_client.get(f"{API}/sensors", {"cursor": "garbage"}), 400, "validation_error", fields=["cursor"])
    assert_error(admin_client.get(f"{API}/sensors", {"limit": "x"}), 400, "validation_error", fields=["limit"])


# -- schema and docs ----------------------------------------------------------------------------------------------


def test_the_openapi_schema_renders_and_documents_the_sensor_endpoints(admin_client):
    response = admin_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    device_sensors = next(
        p for p in paths if p.startswith("/api/v1/devices/{device_uuid}/sensors") and "{name}" not in p
    )
    device_sensor = next(p for p in paths if p.startswith("/api/v1/devices/{device_uuid}/sensors/{name}"))
    fleet = next(p for p in paths if p.rstrip("/") == "/api/v1/sensors")
    assert {"get", "post"} <= set(paths[device_sensors])
    assert {"get", "put", "patch", "delete"} <= set(paths[device_sensor])
    assert "get" in paths[fleet]
    assert any(p.startswith("/api/v1/devices/{uuid}/target-state") for p in paths)
    assert any(p.startswith("/api/v1/devices/{uuid}/rotate-key") for p in paths)
    row = schema["components"]["schemas"]["DeviceSensor"]["properties"]
    assert {
        "id",
        "deviceUuid",
        "name",
        "pollInterval",
        "dataPoints",
        "deploymentStatus",
        "desired",
        "createdBy",
    } <= set(row)
    create_parameters = {p["name"] for p in paths[device_sensors]["post"].get("parameters", [])}
    assert "If-Match" in create_parameters


def test_the_schema_renders_as_yaml_by_default(admin_client):
    response = admin_client.get("/api/schema/")

    assert response.status_code == 200
    assert b"/api/v1/devices/{device_uuid}/sensors" in response.content


def test_the_docs_page_renders(admin_client):
    response = admin_client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger" in response.content.lower()
    assert b"/api/schema/" in response.content
