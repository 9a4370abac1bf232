"""Who may call the fleet configuration's endpoints: each endpoint x {anonymous, a device's key, staff without
permissions, staff with only the view permission of its model, staff with exactly the permission it needs}. A refusal
is the error shape and writes nothing; an allowed write writes."""

import json
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from fleetconfig import services
from fleetconfig.models import RenderJob
from tests.factories import UserFactory
from tests.helpers import API, agent_headers, assert_error, staff_headers, token_for, world_snapshot

from .conftest import labelled_device, make_template, template_sensor

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # formatted with the world: {t} template, {g} assignment, {o} override, {j} job, {d} device
    view: str  # the view permission of its model
    needed: str  # the permission the call needs
    success: int
    body: object = None
    writes: bool = True


TEMPLATE, ASSIGNMENT = "fleetconfig.view_sensortemplate", "fleetconfig.view_assignment"
OVERRIDE, JOB = "fleetconfig.view_sensoroverride", "fleetconfig.view_renderjob"
PROBLEM, CONFIG = "fleetconfig.view_renderproblem", "fleetconfig.view_deviceconfiguration"
NEW_SENSORS = {"sensors": [template_sensor("t1", pollInterval=1000)]}

ENDPOINTS = {
    "templates": Endpoint("GET", "sensor-templates", TEMPLATE, TEMPLATE, 200, writes=False),
    "template-create": Endpoint(
        "POST", "sensor-templates", TEMPLATE, "fleetconfig.add_sensortemplate", 201, {"name": "new", **NEW_SENSORS}
    ),
    "template": Endpoint("GET", "sensor-templates/{t}", TEMPLATE, TEMPLATE, 200, writes=False),
    "template-patch": Endpoint(
        "PATCH", "sensor-templates/{t}", TEMPLATE, "fleetconfig.change_sensortemplate", 200, NEW_SENSORS
    ),
    "template-delete": Endpoint("DELETE", "sensor-templates/{u}", TEMPLATE, "fleetconfig.delete_sensortemplate", 204),
    "template-versions": Endpoint("GET", "sensor-templates/{t}/versions", TEMPLATE, TEMPLATE, 200, writes=False),
    "template-preview": Endpoint(
        "POST", "sensor-templates/{t}/preview", TEMPLATE, TEMPLATE, 200, NEW_SENSORS, writes=False
    ),
    "assignments": Endpoint("GET", "assignments", ASSIGNMENT, ASSIGNMENT, 200, writes=False),
    "assignment-create": Endpoint(
        "POST",
        "assignments",
        ASSIGNMENT,
        "fleetconfig.add_assignment",
        201,
        {"name": "second", "template": "{t}", "selector": "plant=4"},
    ),
    "assignment": Endpoint("GET", "assignments/{g}", ASSIGNMENT, ASSIGNMENT, 200, writes=False),
    "assignment-patch": Endpoint(
        "PATCH", "assignments/{g}", ASSIGNMENT, "fleetconfig.change_assignment", 200, {"priority": 3}
    ),
    "assignment-delete": Endpoint("DELETE", "assignments/{g}", ASSIGNMENT, "fleetconfig.delete_assignment", 200),
    "assignment-preview-new": Endpoint(
        "POST",
        "assignments/preview",
        ASSIGNMENT,
        ASSIGNMENT,
        200,
        {"name": "second", "template": "{t}", "selector": ""},
        writes=False,
    ),
    "assignment-preview": Endpoint(
        "POST", "assignments/{g}/preview", ASSIGNMENT, ASSIGNMENT, 200, {"priority": 1}, writes=False
    ),
    "assignment-preview-delete": Endpoint(
        "POST", "assignments/{g}/preview-delete", ASSIGNMENT, ASSIGNMENT, 200, writes=False
    ),
    "overrides": Endpoint("GET", "sensor-overrides", OVERRIDE, OVERRIDE, 200, writes=False),
    "override-create": Endpoint(
        "POST",
        "sensor-overrides",
        OVERRIDE,
        "fleetconfig.add_sensoroverride",
        201,
        {"device": "{d}", "sensor": "t1", "field": "enabled", "value": False},
    ),
    "override": Endpoint("GET", "sensor-overrides/{o}", OVERRIDE, OVERRIDE, 200, writes=False),
    "override-patch": Endpoint(
        "PATCH", "sensor-overrides/{o}", OVERRIDE, "fleetconfig.change_sensoroverride", 200, {"value": 2000}
    ),
    "override-delete": Endpoint("DELETE", "sensor-overrides/{o}", OVERRIDE, "fleetconfig.delete_sensoroverride", 204),
    "rendering": Endpoint("GET", "devices/{d}/rendering", CONFIG, CONFIG, 200, writes=False),
    "jobs": Endpoint("GET", "render-jobs", JOB, JOB, 200, writes=False),
    "job-create": Endpoint("POST", "render-jobs", JOB, "fleetconfig.add_renderjob", 201, {"all": True}),
    "job": Endpoint("GET", "render-jobs/{j}", JOB, JOB, 200, writes=False),
    "job-retry": Endpoint("POST", "render-jobs/{j}/retry", JOB, "fleetconfig.change_renderjob", 200),
    "problems": Endpoint("GET", "render-problems", PROBLEM, PROBLEM, 200, writes=False),
}
ROLES = ("anonymous", "device-key", "staff-no-permission", "staff-view-only", "staff-needed-permission")


class World:
    def __init__(self):
        self.device = labelled_device({"plant": "3"})
        self.template = make_template("boiler-temp", template_sensor("t1"))
        self.unused = make_template("unused", template_sensor("u1"))
        self.assignment = services.assignment_create(
            user=None, name="plant-3", template=str(self.template.uuid), selector="plant=3"
        ).instance
        services.devices_render(device_ids=[self.device.pk], user=None)
        self.override = services.sensor_override_set(
            device_uuid=self.device.uuid, sensor_name="t1", field="pollInterval", value=1000, user=None
        ).override
        self.job = RenderJob.objects.latest("id")
        RenderJob.objects.filter(pk=self.job.pk).update(status="failed")

    def format(self, text: str) -> str:
        return text.format(
            t=self.template.uuid,
            u=self.unused.uuid,
            g=self.assignment.uuid,
            o=self.override.uuid,
            j=self.job.uuid,
            d=self.device.uuid,
        )

    def body(self, body):
        if isinstance(body, dict):
            return {key: self.format(value) if isinstance(value, str) else value for key, value in body.items()}
        return body


def _permission(dotted: str) -> Permission:
    app_label, codename = dotted.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def _headers(role: str, endpoint: Endpoint, world: World) -> dict:
    if role == "anonymous":
        return {}
    if role == "device-key":
        return agent_headers(world.device.api_key)
    user = UserFactory()
    if role == "staff-view-only":
        user.user_permissions.add(_permission(endpoint.view))
    elif role == "staff-needed-permission":
        user.user_permissions.add(_permission(endpoint.needed))
    return staff_headers(token_for(user))


def _expected(role: str, endpoint: Endpoint) -> int:
    if role in ("anonymous", "device-key"):
        return 401
    if role == "staff-needed-permission" or (role == "staff-view-only" and endpoint.needed == endpoint.view):
        return endpoint.success
    return 403


@pytest.mark.parametrize(("name", "role"), [(name, role) for name in ENDPOINTS for role in ROLES])
def test_fleet_configuration_endpoint(name, role):
    endpoint = ENDPOINTS[name]
    world = World()
    before = world_snapshot()
    body = world.body(endpoint.body)
    response = Client(raise_request_exception=False).generic(
        endpoint.method,
        f"{API}/{world.format(endpoint.path)}",
        data=json.dumps(body) if body is not None else "",
        content_type="application/json",
        headers=_headers(role, endpoint, world),
    )
    expected = _expected(role, endpoint)
    if expected in (401, 403):
        assert_error(response, expected, "not_authenticated" if expected == 401 else "permission_denied")
    else:
        assert response.status_code == expected, (response.status_code, response.content[:300])
    wrote = world_snapshot() != before
    assert wrote == (expected == endpoint.success and endpoint.writes), (name, role, response.status_code)
