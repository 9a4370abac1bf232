"""How staff authenticate to the management API: DRF tokens and sessions, and what a bad or missing credential gets.
Which caller may call which endpoint is the authorization matrix, ``tests/security/test_authorization_matrix.py``."""

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import UserFactory
from tests.helpers import assert_error, devices_url, sensor_url, sensors_url, write_snapshot

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("how", "status", "code"),
    [
        # Its session no longer authenticates it: no valid credentials (a token: the authorization matrix).
        ("session", 401, "not_authenticated"),
        # Authentication bypassed, the permission check still refuses: an inactive user holds no permission.
        ("forced", 403, "permission_denied"),
    ],
)
def test_an_inactive_user_is_refused_even_with_permissions(sensor_device, how, status, code):
    user = UserFactory(is_superuser=True, is_active=False)
    if how == "session":
        client = Client()
        client.force_login(user)
    else:
        client = APIClient()
        client.force_authenticate(user)

    response = client.get(sensors_url(sensor_device.uuid))

    assert_error(response, status, code)


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
