"""The authorization matrix (README, "Reliability and security"): every endpoint x every kind of caller, each
case with the exact status it must get.

Management endpoints x {anonymous, staff without permission, staff with only the view permission of the endpoint's
model, staff with every view permission, staff with exactly the needed permission, staff with every permission but
the needed one, superuser, a session without a CSRF token, an inactive superuser, and five kinds of device key};
agent endpoints x {anonymous, staff token, staff session, own key (both header styles), another device's key, an
inactive device's key, a rotated-away key}.

Management endpoints ignore device keys (401) and agent endpoints ignore staff credentials (401). Every refusal is
the error shape with its code and writes nothing; every allowed read writes nothing and every allowed write writes.
Every response is scanned (body and headers) for any device key, and every log line of the test (SQL included, at
DEBUG) and every event for the same keys.
"""

import json
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from devices.models import DeviceTargetState
from devices.services import device_key_rotate
from reconciliation.agent_protocol import report_parse
from reconciliation.services.reports import state_report_apply
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory, UserFactory
from tests.helpers import (
    API,
    REPORT_URL,
    agent_headers,
    assert_error,
    assert_error_shape,
    device_with,
    report_body,
    sensor_payload,
    snapshot_diff,
    staff_headers,
    state_url,
    target_sensors,
    token_for,
    world_snapshot,
    write_snapshot,
)
from webhooks.models import WebhookDelivery
from webhooks.services import webhook_endpoint_create

pytestmark = pytest.mark.django_db

APPS = ("devices", "sensors", "events", "reconciliation", "webhooks")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # formatted with the world's uuids: {a} is the device acted on, {w} a webhook endpoint, {d} a delivery
    view: str  # the view permission of the endpoint's model
    perm: str  # the permission the call needs
    success: int
    body: dict | None = None

    @property
    def is_read(self) -> bool:
        return self.method == "GET"


DEVICE, TARGET, SENSOR = "devices.view_device", "devices.view_devicetargetstate", "sensors.view_devicesensor"
CURRENT, EVENT, EPISODE = "devices.view_devicecurrentstate", "events.view_event", "reconciliation.view_driftepisode"
HOOK, DELIVERY = "webhooks.view_webhookendpoint", "webhooks.view_webhookdelivery"
HOOK_BODY = {"name": "pager", "url": "https://hooks.example.com/x", "eventTypes": ["device.in_sync"]}

MANAGEMENT = {
    "devices-list": Endpoint("GET", "devices", DEVICE, DEVICE, 200),
    "devices-create": Endpoint("POST", "devices", DEVICE, "devices.add_device", 201, {"name": "created"}),
    "device-get": Endpoint("GET", "devices/{a}", DEVICE, DEVICE, 200),
    "device-put": Endpoint("PUT", "devices/{a}", DEVICE, "devices.change_device", 200, {"name": "renamed"}),
    "device-patch": Endpoint("PATCH", "devices/{a}", DEVICE, "devices.change_device", 200, {"description": "hall B"}),
    "device-delete": Endpoint("DELETE", "devices/{a}", DEVICE, "devices.delete_device", 204),
    "rotate-key": Endpoint("POST", "devices/{a}/rotate-key", DEVICE, "devices.change_device", 200),
    "target-get": Endpoint("GET", "devices/{a}/target-state", TARGET, TARGET, 200),
    "target-put": Endpoint(
        "PUT", "devices/{a}/target-state", TARGET, "devices.change_devicetargetstate", 200, {"config": {"sensors": []}}
    ),
    "target-versions": Endpoint("GET", "devices/{a}/target-state/versions", TARGET, TARGET, 200),
    "target-rollback": Endpoint(
        "POST", "devices/{a}/target-state/rollback", TARGET, "devices.change_devicetargetstate", 200, {"version": 1}
    ),
    "sensors-list": Endpoint("GET", "devices/{a}/sensors", SENSOR, SENSOR, 200),
    "sensors-create": Endpoint(
        "POST", "devices/{a}/sensors", SENSOR, "sensors.add_devicesensor", 201, sensor_payload("added", protocol="can")
    ),
    "sensor-get": Endpoint("GET", "devices/{a}/sensors/s-1", SENSOR, SENSOR, 200),
    "sensor-put": Endpoint(
        "PUT",
        "devices/{a}/sensors/s-1",
        SENSOR,
        "sensors.change_devicesensor",
        200,
        {"protocol": "can", "connection": {"interface": "can0"}},
    ),
    "sensor-patch": Endpoint(
        "PATCH", "devices/{a}/sensors/s-1", SENSOR, "sensors.change_devicesensor", 200, {"pollInterval": 200}
    ),
    "sensor-delete": Endpoint("DELETE", "devices/{a}/sensors/s-1", SENSOR, "sensors.delete_devicesensor", 204),
    "fleet-sensors": Endpoint("GET", "sensors", SENSOR, SENSOR, 200),
    "current-state": Endpoint("GET", "devices/{a}/current-state", CURRENT, CURRENT, 200),
    "drift": Endpoint("GET", "devices/{a}/drift", DEVICE, DEVICE, 200),
    "reconcile": Endpoint("POST", "devices/{a}/reconcile", SENSOR, "sensors.change_devicesensor", 200),
    "device-events": Endpoint("GET", "devices/{a}/events", EVENT, EVENT, 200),
    "events": Endpoint("GET", "events", EVENT, EVENT, 200),
    "drift-episodes": Endpoint("GET", "drift-episodes", EPISODE, EPISODE, 200),
    "drift-stats": Endpoint("GET", "drift-episodes/stats", EPISODE, EPISODE, 200),
    "retry-budget-reset": Endpoint(
        "POST", "devices/{a}/retry-budget/reset", TARGET, "devices.change_devicetargetstate", 200
    ),
    "webhook-endpoints": Endpoint("GET", "webhook-endpoints", HOOK, HOOK, 200),
    "webhook-endpoints-create": Endpoint(
        "POST", "webhook-endpoints", HOOK, "webhooks.add_webhookendpoint", 201, HOOK_BODY
    ),
    "webhook-endpoint-get": Endpoint("GET", "webhook-endpoints/{w}", HOOK, HOOK, 200),
    "webhook-endpoint-put": Endpoint(
        "PUT", "webhook-endpoints/{w}", HOOK, "webhooks.change_webhookendpoint", 200, HOOK_BODY
    ),
    "webhook-endpoint-patch": Endpoint(
        "PATCH", "webhook-endpoints/{w}", HOOK, "webhooks.change_webhookendpoint", 200, {"isActive": False}
    ),
    "webhook-endpoint-delete": Endpoint(
        "DELETE", "webhook-endpoints/{w}", HOOK, "webhooks.delete_webhookendpoint", 204
    ),
    "webhook-rotate-secret": Endpoint(
        "POST", "webhook-endpoints/{w}/rotate-secret", HOOK, "webhooks.change_webhookendpoint", 200
    ),
    "webhook-event-types": Endpoint("GET", "webhook-endpoints/event-types", HOOK, HOOK, 200),
    "webhook-deliveries": Endpoint("GET", "webhook-deliveries", DELIVERY, DELIVERY, 200),
    "webhook-delivery-get": Endpoint("GET", "webhook-deliveries/{d}", DELIVERY, DELIVERY, 200),
}

STAFF_ROLES = [
    "anonymous",
    "staff-no-permission",
    "staff-model-view-only",  # writes only: for a read, the model's view permission is the needed permission
    "staff-view-everything",
    "staff-needed-permission",
    "staff-every-other-permission",
    "superuser-token",
    "session-without-csrf-token",
    "inactive-superuser-token",
]
DEVICE_ROLES = ["own-key", "own-key-bearer", "other-device-key", "inactive-device-key", "rotated-away-key"]


class World:
    """Device ``a`` (sensor s-1, reported, a failed apply counted), ``b``, an inactive one, one whose key was rotated
    away, and a webhook endpoint with a delivery (a's drift)."""

    def __init__(self):
        self.endpoint = webhook_endpoint_create(
            name="matrix", url="https://hooks.example.com/m", event_types=["device.config_drift"]
        ).endpoint
        self.a = device_with("s-1", name="a")
        self.delivery = WebhookDelivery.objects.get(endpoint=self.endpoint)
        state_report_apply(
            device=type(self.a).objects.select_related("target_state").get(pk=self.a.pk),
            report=report_parse({"version": 1, "config": {"sensors": target_sensors(self.a)}}),
        )
        # Damage a's read model (as a bug or a manual edit would), so that an allowed reconcile has a row to repair.
        DeviceSensor.objects.filter(device=self.a).update(deployment_status="failed", deployment_error="damaged")
        # ... and a failed apply counted, so that an allowed reset of its retry budget has something to clear.
        DeviceTargetState.objects.filter(device=self.a).update(failed_applies=1, failed_applies_version=2)
        self.b = DeviceFactory(name="b")
        self.inactive = DeviceFactory(name="inactive", is_active=False)
        self.rotated = DeviceFactory(name="rotated")
        self.rotated_old_key = self.rotated.api_key
        self.rotated.api_key = device_key_rotate(uuid=self.rotated.uuid, user=None).api_key
        self.keys = [self.a.api_key, self.b.api_key, self.inactive.api_key, self.rotated_old_key, self.rotated.api_key]

    def device_key(self, role: str) -> dict:
        return {
            "own-key": agent_headers(self.a.api_key),
            "own-key-bearer": {"Authorization": f"Bearer {self.a.api_key}"},
            "other-device-key": agent_headers(self.b.api_key),
            "inactive-device-key": agent_headers(self.inactive.api_key),
            "rotated-away-key": agent_headers(self.rotated_old_key),
        }[role]


@pytest.fixture
def world(secret_watch) -> World:
    world = World()
    secret_watch.extend(world.keys)
    return world


def _perms(*, only: str | None = None, verb: str | None = None, exclude: str | None = None) -> list[Permission]:
    queryset = Permission.objects.filter(content_type__app_label__in=APPS)
    if only:
        app_label, codename = only.split(".")
        queryset = queryset.filter(content_type__app_label=app_label, codename=codename)
    if verb:
        queryset = queryset.filter(codename__startswith=f"{verb}_")
    perms = list(queryset)
    if exclude:
        app_label, codename = exclude.split(".")
        perms = [p for p in perms if (p.content_type.app_label, p.codename) != (app_label, codename)]
    return perms


def _staff_client(role: str, endpoint: Endpoint | None) -> tuple[Client, dict]:
    """A client and the headers its requests carry, for a staff role."""
    if role == "anonymous":
        return Client(raise_request_exception=False), {}
    if role == "session-without-csrf-token":
        client = Client(enforce_csrf_checks=True, raise_request_exception=False)
        client.force_login(UserFactory(is_superuser=True))
        return client, {}
    user = UserFactory(
        is_superuser=role in ("superuser-token", "inactive-superuser-token"),
        is_active=role != "inactive-superuser-token",
    )
    if role == "staff-model-view-only":
        user.user_permissions.add(*_perms(only=endpoint.view))
    elif role == "staff-view-everything":
        user.user_permissions.add(*_perms(verb="view"))
    elif role == "staff-needed-permission":
        needed = _perms(only=endpoint.perm)
        assert len(needed) == 1, endpoint.perm
        user.user_permissions.add(*needed)
    elif role == "staff-every-other-permission":
        user.user_permissions.add(*_perms(exclude=endpoint.perm))
    return Client(raise_request_exception=False), staff_headers(token_for(user))


def _call(client, method: str, url: str, body, headers: dict):
    data = json.dumps(body) if body is not None else None
    return client.generic(method, url, data=data or "", content_type="application/json", headers=headers)


def _assert_no_key_in(response, world: World) -> None:
    text = response.content.decode("utf-8", "replace") + json.dumps(dict(response.items()))
    for key in world.keys:
        assert key not in text, f"a device key appears in the {response.status_code} response"


def _expected_staff(role: str, endpoint: Endpoint) -> int:
    if role in ("anonymous", "inactive-superuser-token"):
        return 401
    if role in ("staff-needed-permission", "superuser-token"):
        return endpoint.success
    if role in ("staff-model-view-only", "staff-view-everything") and endpoint.is_read:
        return endpoint.success
    if role == "session-without-csrf-token":
        return endpoint.success if endpoint.is_read else 403
    return 403


def _management_call(world: World, name: str, role: str):
    endpoint = MANAGEMENT[name]
    if role in DEVICE_ROLES:
        client, headers = Client(raise_request_exception=False), world.device_key(role)
    else:
        client, headers = _staff_client(role, endpoint)
    url = f"{API}/{endpoint.path.format(a=world.a.uuid, w=world.endpoint.uuid, d=world.delivery.uuid)}"
    response = _call(client, endpoint.method, url, endpoint.body, headers)
    _assert_no_key_in(response, world)
    return response


def _expected(role: str, endpoint: Endpoint) -> int:
    return 401 if role in DEVICE_ROLES else _expected_staff(role, endpoint)


MANAGEMENT_CASES = [
    pytest.param(name, role, id=f"{name}-{role}")
    for name, endpoint in MANAGEMENT.items()
    for role in STAFF_ROLES + DEVICE_ROLES
    if not (role == "staff-model-view-only" and endpoint.is_read)
]


@pytest.mark.parametrize(("name", "role"), MANAGEMENT_CASES)
def test_management_endpoint(world, name, role):
    endpoint = MANAGEMENT[name]
    expected = _expected(role, endpoint)
    before, written_before = world_snapshot(), write_snapshot()

    response = _management_call(world, name, role)

    if expected in (401, 403):
        assert_error(response, expected, "not_authenticated" if expected == 401 else "permission_denied")
        after = world_snapshot()
        assert after == before, f"a refused call wrote: {snapshot_diff(before, after)}"
    else:
        assert response.status_code == expected, (response.status_code, response.content[:300])
        if endpoint.is_read:
            after = world_snapshot()
            assert after == before, f"a read wrote: {snapshot_diff(before, after)}"
        else:
            assert write_snapshot() != written_before, "the allowed write wrote nothing"


def test_the_matrix_refuses_and_allows():
    """Each management endpoint is refused to some callers and allowed to others, by the table above."""
    for endpoint in MANAGEMENT.values():
        statuses = {_expected(role, endpoint) for role in STAFF_ROLES + DEVICE_ROLES}
        assert {401, 403, endpoint.success} <= statuses, (endpoint, statuses)


def test_every_permission_of_the_matrix_exists():
    for endpoint in MANAGEMENT.values():
        assert len(_perms(only=endpoint.perm)) == 1, endpoint.perm
        assert len(_perms(only=endpoint.view)) == 1, endpoint.view


AGENT_ROLES = ["anonymous", "superuser-token", "superuser-session", *DEVICE_ROLES]


def _agent_headers(world: World, role: str) -> tuple[Client, dict]:
    client = Client(enforce_csrf_checks=True, raise_request_exception=False)
    if role == "anonymous":
        return client, {}
    if role == "superuser-token":
        return client, staff_headers(token_for(UserFactory(is_superuser=True)))
    if role == "superuser-session":
        client.force_login(UserFactory(is_superuser=True))
        return client, {}
    return client, world.device_key(role)


AGENT_EXPECTED = {
    "anonymous": (401, "not_authenticated"),
    "superuser-token": (401, "not_authenticated"),
    "superuser-session": (401, "not_authenticated"),
    "own-key": (200, None),
    "own-key-bearer": (200, None),
    "other-device-key": (403, "permission_denied"),  # a key used for another device's URL or body
    "inactive-device-key": (403, "device_inactive"),
    "rotated-away-key": (401, "not_authenticated"),
}


@pytest.mark.parametrize("role", AGENT_ROLES)
@pytest.mark.parametrize("method", ["GET", "PATCH"])
def test_agent_endpoint(world, method, role):
    client, headers = _agent_headers(world, role)
    before = world_snapshot()
    if role == "inactive-device-key":
        subject = world.inactive  # an inactive device asking for its own state / reporting for itself
    elif role == "rotated-away-key":
        subject = world.rotated
    else:
        subject = world.a
    if method == "GET":
        response = client.get(state_url(subject.uuid), headers=headers)
    else:
        raw = report_body(subject, 1, [], seq=99, os_version="hijacked")
        response = client.generic("PATCH", REPORT_URL, data=raw, content_type="application/json", headers=headers)

    _assert_no_key_in(response, world)
    status, code = AGENT_EXPECTED[role]
    after = world_snapshot()
    if code is None:
        assert response.status_code == status, (response.status_code, response.content[:300])
        assert after != before  # liveness at least
    else:
        body = assert_error_shape(response, status)
        assert body["error"] == code, body
        assert after == before, f"a refused agent call wrote: {snapshot_diff(before, after)}"
        if status == 401:
            assert response.get("WWW-Authenticate", "").lower().startswith("bearer"), dict(response.items())


def test_staff_credentials_next_to_a_device_key_do_not_let_a_key_act_for_another_device(world):
    """A superuser token does not turn device b's key into a key for device a."""
    headers = {**staff_headers(token_for(UserFactory(is_superuser=True))), **agent_headers(world.b.api_key)}
    before = world_snapshot()
    raw = report_body(world.a, 1, [], seq=99)
    client = Client(raise_request_exception=False)

    polled = client.get(state_url(world.a.uuid), headers=headers)
    reported = client.generic("PATCH", REPORT_URL, data=raw, content_type="application/json", headers=headers)

    assert_error_shape(polled, 403)
    assert_error_shape(reported, 403)
    assert world_snapshot() == before
