"""Devices endpoints: list / create / retrieve / update / delete / rotate-key, filters and body validation."""

import hashlib
import json
import uuid

import pytest

from devices.models import Device, DeviceTargetState, DeviceTargetStateVersion
from events.models import Event
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory
from tests.helpers import (
    assert_error,
    device_url,
    devices_url,
    events_since,
    report_running,
    rotate_key_url,
    write_snapshot,
)

pytestmark = pytest.mark.django_db

DEVICE_KEYS = {
    "uuid",
    "name",
    "description",
    "isActive",
    "labels",
    "draftMode",
    "draft",
    "lastSeenAt",
    "osVersion",
    "agentVersion",
    "facts",
    "factsReportedAt",
    "deviceType",
    "macAddress",
    "registeredBy",
    "ipAddress",
    "uptime",
    "lastFetchedVersion",
    "lastFetchedAt",
    "targetVersion",
    "reportedVersion",
    "needsDeployment",
    "retryBudget",
    "createdAt",
    "updatedAt",
}


# -- list ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_list_is_limit_offset_paginated_and_ordered_by_name(admin_client, slash):
    for name in ("charlie", "alpha", "bravo"):
        DeviceFactory(name=name)

    response = admin_client.get(devices_url() + slash, {"limit": 2})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] == 3
    assert body["previous"] is None
    assert "offset=2" in body["next"] and "limit=2" in body["next"]
    assert [d["name"] for d in body["results"]] == ["alpha", "bravo"]
    assert set(body["results"][0]) == DEVICE_KEYS
    assert "apiKey" not in body["results"][0]

    second = admin_client.get(body["next"]).json()
    assert [d["name"] for d in second["results"]] == ["charlie"]
    assert second["next"] is None and second["previous"] is not None


def test_list_filters_by_name_substring_case_insensitively(admin_client):
    DeviceFactory(name="Pump-North")
    DeviceFactory(name="pump-south")
    DeviceFactory(name="boiler")

    body = admin_client.get(devices_url(), {"name": "PUMP"}).json()

    assert body["count"] == 2
    assert sorted(d["name"] for d in body["results"]) == ["Pump-North", "pump-south"]


@pytest.mark.parametrize(("value", "expected"), [("true", ["on"]), ("false", ["off"])])
def test_list_filters_by_is_active(admin_client, value, expected):
    DeviceFactory(name="on")
    DeviceFactory(name="off", is_active=False)

    body = admin_client.get(devices_url(), {"isActive": value}).json()

    assert [d["name"] for d in body["results"]] == expected


@pytest.mark.parametrize(("value", "expected"), [("true", ["drifting"]), ("false", ["converged"])])
def test_list_filters_by_needs_deployment(admin_client, value, expected):
    DeviceFactory(name="drifting")
    converged = DeviceFactory(name="converged")
    report_running(converged)  # applied its (empty) target: in sync
    assert DeviceTargetState.objects.get(device=converged).needs_deployment is False

    body = admin_client.get(devices_url(), {"needsDeployment": value}).json()

    assert [d["name"] for d in body["results"]] == expected


def test_list_rejects_an_invalid_filter_value(admin_client):
    DeviceFactory()
    assert_error(admin_client.get(devices_url(), {"isActive": "maybe"}), 400, "validation_error", fields=["isActive"])


# -- create -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_create_returns_the_key_once_and_stores_only_its_digest(admin_client, superuser, slash):
    response = admin_client.post(
        devices_url() + slash, {"name": "press-7", "description": "hall B", "isActive": False}, format="json"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == DEVICE_KEYS | {"apiKey"}
    assert body["name"] == "press-7"
    assert body["description"] == "hall B"
    assert body["isActive"] is False
    assert body["targetVersion"] == 1
    assert body["reportedVersion"] is None
    assert body["needsDeployment"] is True
    api_key = body["apiKey"]
    assert isinstance(api_key, str) and len(api_key) >= 43  # 32 random bytes, url-safe base64
    assert response["Location"].rstrip("/").endswith(f"/api/v1/devices/{body['uuid']}")

    device = Device.objects.get(uuid=body["uuid"])
    assert device.api_key_digest == hashlib.sha256(api_key.encode()).hexdigest()
    stored = json.dumps(list(Device.objects.values()), default=str)
    assert api_key not in stored
    target = DeviceTargetState.objects.get(device=device)
    assert (target.version, target.config, target.apps) == (1, {"sensors": []}, {})
    history = DeviceTargetStateVersion.objects.get(device=device)
    assert (history.version, history.created_by, history.source) == (1, superuser, "api")
    events = list(Event.objects.filter(aggregate_id=str(device.uuid)).order_by("sequence"))
    assert [e.type for e in events] == ["device.registered", "target_state.updated"]
    assert [e.sequence for e in events] == [1, 2]
    assert len({e.correlation_id for e in events}) == 1
    assert events[0].metadata["actor"] == "admin" and events[0].metadata["source"] == "api"

    again = admin_client.get(device_url(body["uuid"])).json()
    assert "apiKey" not in again


def test_two_creates_get_different_keys_and_uuids(admin_client):
    first = admin_client.post(devices_url(), {"name": "a"}, format="json").json()
    second = admin_client.post(devices_url(), {"name": "a"}, format="json").json()

    assert first["uuid"] != second["uuid"]
    assert first["apiKey"] != second["apiKey"]
    assert first["isActive"] is True  # default


def test_create_accepts_a_255_character_name(admin_client):
    response = admin_client.post(devices_url(), {"name": "d" * 255}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "d" * 255


INVALID_CREATE_BODIES = [
    pytest.param({}, ["name"], id="missing-name"),
    pytest.param({"name": ""}, ["name"], id="empty-name"),
    pytest.param({"name": "   "}, ["name"], id="blank-name"),
    pytest.param({"name": "d" * 256}, ["name"], id="name-256"),
    pytest.param({"name": 5}, ["name"], id="name-number"),
    pytest.param({"name": None}, ["name"], id="name-null"),
    pytest.param({"name": "ok", "isActive": "true"}, ["isActive"], id="isActive-string"),
    pytest.param({"name": "ok", "isActive": 1}, ["isActive"], id="isActive-int"),
    pytest.param({"name": "ok", "isActive": None}, ["isActive"], id="isActive-null"),
    pytest.param({"name": "ok", "description": 5}, ["description"], id="description-number"),
    pytest.param({"name": "ok", "apiKey": "mine"}, ["apiKey"], id="unknown-apiKey"),
    pytest.param({"name": "ok", "uuid": str(uuid.uuid4())}, ["uuid"], id="unknown-uuid"),
    pytest.param({"name": "ok", "is_active": False}, ["is_active"], id="unknown-snake-case"),
]


@pytest.mark.parametrize(("body", "fields"), INVALID_CREATE_BODIES)
def test_create_rejects_invalid_bodies_and_writes_nothing(admin_client, body, fields):
    DeviceFactory()
    before = write_snapshot()

    response = admin_client.post(devices_url(), body, format="json")

    assert_error(response, 400, "validation_error", fields=fields)
    assert write_snapshot() == before


@pytest.mark.parametrize("raw", ["[]", '[{"name": "x"}]', "5", '"press"', "null", "true"])
def test_create_rejects_a_body_that_is_not_an_object(admin_client, raw):
    before = write_snapshot()

    response = admin_client.post(devices_url(), raw, content_type="application/json")

    assert_error(response, 400, "validation_error", fields=["body"])
    assert write_snapshot() == before


@pytest.mark.parametrize("raw", ['{"name": ', "{'name': 'x'}", "name=x", '{"name": "x",}'])
def test_create_rejects_malformed_json(admin_client, raw):
    before = write_snapshot()

    response = admin_client.post(devices_url(), raw, content_type="application/json")

    assert_error(response, 400, "malformed_request")
    assert write_snapshot() == before


# -- retrieve / update / delete -------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_retrieve(admin_client, device_with_sensors, slash):
    response = admin_client.get(device_url(device_with_sensors.uuid) + slash)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == DEVICE_KEYS
    assert body["uuid"] == str(device_with_sensors.uuid)
    assert body["name"] == device_with_sensors.name
    assert body["targetVersion"] == 4
    assert body["reportedVersion"] is None


def test_retrieve_shows_the_reported_version(admin_client, sensor_device):
    report_running(sensor_device, version=1)

    body = admin_client.get(device_url(sensor_device.uuid)).json()

    assert (body["targetVersion"], body["reportedVersion"], body["needsDeployment"]) == (2, 1, True)


def test_put_replaces_name_description_and_flag(admin_client, device):
    last = write_snapshot().last_event_id

    response = admin_client.put(
        device_url(device.uuid), {"name": "renamed", "description": "new", "isActive": False}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["name"], body["description"], body["isActive"]) == ("renamed", "new", False)
    device.refresh_from_db()
    assert (device.name, device.description, device.is_active) == ("renamed", "new", False)
    events = list(events_since(last))
    assert [e.type for e in events] == ["device.updated"]
    assert events[0].data["changes"] == {"name": "renamed", "description": "new", "is_active": False}


def test_patch_changes_only_the_fields_sent(admin_client):
    device = DeviceFactory(name="keep-me", description="keep this too")

    response = admin_client.patch(device_url(device.uuid), {"isActive": False}, format="json")

    assert response.status_code == 200, response.content
    device.refresh_from_db()
    assert (device.name, device.description, device.is_active) == ("keep-me", "keep this too", False)


def test_patch_with_unchanged_values_appends_no_event(admin_client, device):
    before = write_snapshot()

    response = admin_client.patch(device_url(device.uuid), {"name": device.name}, format="json")

    assert response.status_code == 200
    assert write_snapshot().events == before.events


INVALID_UPDATES = [
    pytest.param("put", {}, ["name"], id="put-missing-name"),
    pytest.param("put", {"name": ""}, ["name"], id="put-empty-name"),
    pytest.param("put", {"name": "x", "colour": "red"}, ["colour"], id="put-unknown"),
    pytest.param("patch", {"name": ""}, ["name"], id="patch-empty-name"),
    pytest.param("patch", {"name": "d" * 256}, ["name"], id="patch-name-256"),
    pytest.param("patch", {"name": None}, ["name"], id="patch-name-null"),
    pytest.param("patch", {"isActive": "false"}, ["isActive"], id="patch-isActive-string"),
    pytest.param("patch", {"isActive": 0}, ["isActive"], id="patch-isActive-int"),
    pytest.param("patch", {"isActive": None}, ["isActive"], id="patch-isActive-null"),
    pytest.param("patch", {"targetVersion": 9}, ["targetVersion"], id="patch-read-only-field"),
    pytest.param("patch", {"uuid": str(uuid.uuid4())}, ["uuid"], id="patch-uuid"),
]


@pytest.mark.parametrize(("method", "body", "fields"), INVALID_UPDATES)
def test_update_rejects_invalid_bodies_and_writes_nothing(admin_client, device, method, body, fields):
    before = write_snapshot()

    response = getattr(admin_client, method)(device_url(device.uuid), body, format="json")

    assert_error(response, 400, "validation_error", fields=fields)
    assert write_snapshot() == before


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize("raw", ["[]", "7", "null", '{"name": "x"'])
def test_update_rejects_non_object_or_malformed_bodies(admin_client, device, method, raw):
    before = write_snapshot()

    response = getattr(admin_client, method)(device_url(device.uuid), raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["error"] in {"validation_error", "malformed_request"}
    assert write_snapshot() == before


def test_delete_removes_the_device_its_states_and_rows_but_keeps_its_events(admin_client, device_with_sensors):
    uuid_ = device_with_sensors.uuid
    events_before = Event.objects.filter(aggregate_id=str(uuid_)).count()

    response = admin_client.delete(device_url(uuid_))

    assert response.status_code == 204
    assert response.content == b""
    assert not Device.objects.filter(uuid=uuid_).exists()
    assert not DeviceTargetState.objects.filter(device_id=device_with_sensors.pk).exists()
    assert not DeviceTargetStateVersion.objects.filter(device_id=device_with_sensors.pk).exists()
    assert not DeviceSensor.objects.filter(device_id=device_with_sensors.pk).exists()
    events = Event.objects.filter(aggregate_id=str(uuid_)).order_by("sequence")
    assert events.count() == events_before + 1
    assert events.last().type == "device.deleted"
    assert_error(admin_client.get(device_url(uuid_)), 404, "not_found")


def test_delete_leaves_other_devices_alone(admin_client, device_with_sensors):
    other = DeviceFactory()
    rows = DeviceSensor.objects.filter(device=device_with_sensors).count()

    assert admin_client.delete(device_url(other.uuid)).status_code == 204

    assert DeviceSensor.objects.filter(device=device_with_sensors).count() == rows == 3


# -- rotate-key -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("slash", ["", "/"])
def test_rotate_key_replaces_the_digest_and_shows_the_new_key_once(admin_client, device, slash):
    old_key = device.api_key
    last = write_snapshot().last_event_id

    response = admin_client.post(rotate_key_url(device.uuid) + slash)

    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == DEVICE_KEYS | {"apiKey"}
    new_key = body["apiKey"]
    assert new_key != old_key and len(new_key) >= 43
    device.refresh_from_db()
    assert device.api_key_digest == hashlib.sha256(new_key.encode()).hexdigest()
    assert not Device.objects.filter(api_key_digest=hashlib.sha256(old_key.encode()).hexdigest()).exists()
    assert [e.type for e in events_since(last)] == ["device.key_rotated"]
    assert "apiKey" not in admin_client.get(device_url(device.uuid)).json()


def test_rotate_key_does_not_touch_the_target_state(admin_client, device_with_sensors):
    before = write_snapshot()

    admin_client.post(rotate_key_url(device_with_sensors.uuid))

    after = write_snapshot()
    assert (after.targets, after.history, after.sensors) == (before.targets, before.history, before.sensors)


def test_rotate_key_of_an_unknown_device_is_404(admin_client):
    before = write_snapshot()
    assert_error(admin_client.post(rotate_key_url(uuid.uuid4())), 404, "not_found")
    assert write_snapshot() == before


def test_put_replaces_the_device_so_omitted_fields_take_their_defaults(admin_client, device):
    admin_client.patch(device_url(device.uuid), {"description": "north hall", "isActive": False}, format="json")
    response = admin_client.put(device_url(device.uuid), {"name": "renamed"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["name"], response.json()["description"], response.json()["isActive"]) == (
        "renamed",
        "",
        True,
    )
