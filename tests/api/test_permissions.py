"""Who may do what: every management endpoint x {anonymous, no permission, view only, the right permission,
every other permission, superuser}, plus DRF token and session authentication."""

from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.api.helpers import (
    assert_error,
    device_url,
    devices_url,
    fleet_sensors_url,
    rotate_key_url,
    sensor_url,
    sensors_url,
    target_state_url,
    write_snapshot,
)
from tests.factories import SensorPayloadFactory, UserFactory

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Endpoint:
    method: str
    url: object  # device -> url
    view_perm: str
    needed_perm: str
    success: int
    body: dict | None = None

    @property
    def is_read(self) -> bool:
        return self.method == "get"


ENDPOINTS = {
    "devices-list": Endpoint("get", lambda d: devices_url(), "devices.view_device", "devices.view_device", 200),
    "devices-create": Endpoint(
        "post", lambda d: devices_url(), "devices.view_device", "devices.add_device", 201, {"name": "new"}
    ),
    "device-retrieve": Endpoint("get", lambda d: device_url(d.uuid), "devices.view_device", "devices.view_device", 200),
    "device-put": Endpoint(
        "put", lambda d: device_url(d.uuid), "devices.view_device", "devices.change_device", 200, {"name": "renamed"}
    ),
    "device-patch": Endpoint(
        "patch", lambda d: device_url(d.uuid), "devices.view_device", "devices.change_device", 200, {"isActive": False}
    ),
    "device-delete": Endpoint(
        "delete", lambda d: device_url(d.uuid), "devices.view_device", "devices.delete_device", 204
    ),
    "device-rotate-key": Endpoint(
        "post", lambda d: rotate_key_url(d.uuid), "devices.view_device", "devices.change_device", 200
    ),
    "target-state-get": Endpoint(
        "get",
        lambda d: target_state_url(d.uuid),
        "devices.view_devicetargetstate",
        "devices.view_devicetargetstate",
        200,
    ),
    "target-state-put": Endpoint(
        "put",
        lambda d: target_state_url(d.uuid),
        "devices.view_devicetargetstate",
        "devices.change_devicetargetstate",
        200,
        {"config": {"sensors": []}},
    ),
    "sensors-list": Endpoint(
        "get", lambda d: sensors_url(d.uuid), "sensors.view_devicesensor", "sensors.view_devicesensor", 200
    ),
    "sensors-create": Endpoint(
        "post",
        lambda d: sensors_url(d.uuid),
        "sensors.view_devicesensor",
        "sensors.add_devicesensor",
        201,
        SensorPayloadFactory.build(name="added"),
    ),
    "sensor-retrieve": Endpoint(
        "get", lambda d: sensor_url(d.uuid, "temp-1"), "sensors.view_devicesensor", "sensors.view_devicesensor", 200
    ),
    "sensor-put": Endpoint(
        "put",
        lambda d: sensor_url(d.uuid, "temp-1"),
        "sensors.view_devicesensor",
        "sensors.change_devicesensor",
        200,
        {"protocol": "can", "connection": {}},
    ),
    "sensor-patch": Endpoint(
        "patch",
        lambda d: sensor_url(d.uuid, "temp-1"),
        "sensors.view_devicesensor",
        "sensors.change_devicesensor",
        200,
        {"pollInterval": 200},
    ),
    "sensor-delete": Endpoint(
        "delete",
        lambda d: sensor_url(d.uuid, "temp-1"),
        "sensors.view_devicesensor",
        "sensors.delete_devicesensor",
        204,
    ),
    "fleet-sensors-list": Endpoint(
        "get", lambda d: fleet_sensors_url(), "sensors.view_devicesensor", "sensors.view_devicesensor", 200
    ),
}

ALL_PERMS = [
    f"{app}.{verb}_{model}"
    for app, model in (("devices", "device"), ("devices", "devicetargetstate"), ("sensors", "devicesensor"))
    for verb in ("view", "add", "change", "delete")
]

ROLES = ["anonymous", "no-permission", "view-only", "every-other-permission", "right-permission", "superuser"]


def _client_for(role: str, endpoint: Endpoint) -> APIClient:
    client = APIClient()
    if role == "anonymous":
        return client
    if role == "superuser":
        user = UserFactory(is_superuser=True)
    elif role == "no-permission":
        user = UserFactory()
    elif role == "view-only":
        user = UserFactory(permissions=[endpoint.view_perm])
    elif role == "every-other-permission":
        user = UserFactory(permissions=[p for p in ALL_PERMS if p != endpoint.needed_perm])
    else:
        user = UserFactory(permissions=[endpoint.needed_perm])
    client.force_authenticate(user)
    return client


def _send(client, endpoint: Endpoint, device, **extra):
    kwargs = {"data": endpoint.body, "format": "json"} if endpoint.body is not None else {}
    return getattr(client, endpoint.method)(endpoint.url(device), **kwargs, **extra)


def _expected(role: str, endpoint: Endpoint) -> int:
    if role == "anonymous":
        return 401
    if role in ("right-permission", "superuser"):
        return endpoint.success
    if role == "view-only" and endpoint.is_read:
        return endpoint.success
    return 403


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", list(ENDPOINTS))
def test_permission_matrix(sensor_device, name, role):
    endpoint = ENDPOINTS[name]
    client = _client_for(role, endpoint)
    before = write_snapshot()

    response = _send(client, endpoint, sensor_device)

    expected = _expected(role, endpoint)
    if expected == 401:
        assert_error(response, 401, "not_authenticated")
    elif expected == 403:
        assert_error(response, 403, "permission_denied")
    else:
        assert response.status_code == expected, response.content
    after = write_snapshot()
    if expected in (401, 403) or endpoint.is_read:
        assert after == before
    else:
        assert after != before  # the allowed write really happened


def test_every_permission_of_the_matrix_exists():
    for dotted in {p for e in ENDPOINTS.values() for p in (e.view_perm, e.needed_perm)}:
        app_label, codename = dotted.split(".")
        assert Permission.objects.filter(content_type__app_label=app_label, codename=codename).exists(), dotted


def test_an_inactive_user_is_refused_even_with_permissions(sensor_device):
    user = UserFactory(is_superuser=True, is_active=False)
    client = APIClient()
    client.force_authenticate(user)

    response = client.get(sensors_url(sensor_device.uuid))

    assert response.status_code in (401, 403)


# -- token and session authentication ----------------------------------------------------------------------------


def test_a_real_drf_token_authenticates(sensor_device):
    user = UserFactory(permissions=["sensors.view_devicesensor", "sensors.change_devicesensor"])
    token = Token.objects.create(user=user)
    client = APIClient()

    read = client.get(sensors_url(sensor_device.uuid), HTTP_AUTHORIZATION=f"Token {token.key}")
    write = client.patch(
        sensor_url(sensor_device.uuid, "temp-1"),
        {"pollInterval": 300},
        format="json",
        HTTP_AUTHORIZATION=f"Token {token.key}",
    )

    assert read.status_code == 200
    assert read.json()["count"] == 1
    assert write.status_code == 200, write.content
    assert write.json()["updatedBy"] == user.username


def test_a_token_without_the_permission_is_403(sensor_device):
    token = Token.objects.create(user=UserFactory(permissions=["sensors.view_devicesensor"]))

    response = APIClient().delete(sensor_url(sensor_device.uuid, "temp-1"), HTTP_AUTHORIZATION=f"Token {token.key}")

    assert_error(response, 403, "permission_denied")


@pytest.mark.parametrize(
    "header",
    ["Token bogus", "Token " + "0" * 40, "Token", "Token a b", "Bearer whatever"],
)
def test_a_bogus_token_is_401(sensor_device, header):
    before = write_snapshot()

    response = APIClient().get(sensors_url(sensor_device.uuid), HTTP_AUTHORIZATION=header)

    assert_error(response, 401, "not_authenticated")
    assert "Token" in response.get("WWW-Authenticate", "")
    assert write_snapshot() == before


def test_a_token_of_a_deleted_user_is_401(sensor_device):
    user = UserFactory(is_superuser=True)
    token = Token.objects.create(user=user)
    key = token.key
    user.delete()

    response = APIClient().get(sensors_url(sensor_device.uuid), HTTP_AUTHORIZATION=f"Token {key}")

    assert_error(response, 401, "not_authenticated")


def test_anonymous_gets_401_with_a_challenge(sensor_device):
    response = APIClient().get(devices_url())

    assert_error(response, 401, "not_authenticated")
    assert response.get("WWW-Authenticate")


def test_a_session_authenticates(sensor_device):
    client = Client()
    client.force_login(UserFactory(permissions=["sensors.view_devicesensor"]))

    response = client.get(sensors_url(sensor_device.uuid), HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert response.json()["results"][0]["name"] == "temp-1"


def test_a_session_write_needs_the_csrf_token(sensor_device):
    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory(is_superuser=True))
    before = write_snapshot()

    response = client.patch(
        sensor_url(sensor_device.uuid, "temp-1"), {"pollInterval": 300}, content_type="application/json"
    )

    assert_error(response, 403, "permission_denied")
    assert write_snapshot() == before
