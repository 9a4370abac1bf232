"""Labels, selectors and drafts through the management API, over real HTTP against a live server (a staff token,
as a script uses), with the agent polling over HTTP too; then the statement counts of the filtered lists."""

import json
import secrets
import urllib.error
import urllib.request
import uuid

import pytest

from devices.models import Device, DeviceLabel, DeviceTargetDraft, DeviceTargetState
from events.models import Event
from reconciliation.services.targets import target_state_update
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory, SensorPayloadFactory, UserFactory
from tests.fleet.agent import HttpAgent
from tests.helpers import (
    agent_headers,
    devices_url,
    fleet_sensors_url,
    report_running,
    sensor_payload,
    sensors_url,
    staff_headers,
    state_url,
    token_for,
)


class Staff:
    """A script with a staff token, calling the API over plain HTTP."""

    def __init__(self, base: str, user) -> None:
        self.base = base
        self.headers = staff_headers(token_for(user))

    def call(self, method: str, path: str, body=None, **headers) -> tuple[int, dict | list | None, dict]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={**self.headers, "Content-Type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, raw, response_headers = response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as error:
            status, raw, response_headers = error.code, error.read(), dict(error.headers)
        return status, json.loads(raw) if raw else None, response_headers

    def get(self, path, **query):
        from urllib.parse import urlencode

        return self.call("GET", f"{path}?{urlencode(query)}" if query else path)


@pytest.fixture
def staff(live_server, superuser) -> Staff:
    return Staff(live_server.url, superuser)


def poll_status(live_server, device, *, etag: str) -> int:
    """The agent's conditional poll over HTTP: its status (304: nothing new for it)."""
    request = urllib.request.Request(
        f"{live_server.url}{state_url(device.uuid)}", headers={**agent_headers(device.api_key), "If-None-Match": etag}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def labels_of(device) -> dict[str, str]:
    return dict(DeviceLabel.objects.filter(device=device).order_by("key").values_list("key", "value"))


def names(body) -> list[str]:
    return [item["name"] for item in body["results"]]


# -- labels on the device API -------------------------------------------------------------------------------------


def test_labels_are_written_with_the_device_and_read_back(staff):
    status, created, _ = staff.call(
        "POST", devices_url(), {"name": "boiler-7", "labels": {"plant": "3", "role": "boiler"}, "draftMode": True}
    )
    assert status == 201, created
    assert created["labels"] == {"plant": "3", "role": "boiler"}
    assert created["draftMode"] is True and created["draft"] is None

    status, changed, _ = staff.call("PATCH", f"{devices_url()}/{created['uuid']}", {"labels": {"plant": "4"}})
    assert status == 200, changed
    assert changed["labels"] == {"plant": "4"}

    status, labels, _ = staff.call(
        "POST", f"{devices_url()}/{created['uuid']}/labels", {"set": {"zone": "north", "plant": "5"}, "remove": ["x"]}
    )
    assert (status, labels) == (200, {"plant": "5", "zone": "north"})

    # PUT without labels (a client that predates them) leaves them as they are
    status, put, _ = staff.call("PUT", f"{devices_url()}/{created['uuid']}", {"name": "boiler-7b"})
    assert status == 200, put
    assert put["labels"] == {"plant": "5", "zone": "north"} and put["draftMode"] is True

    device = Device.objects.get(uuid=created["uuid"])
    events = Event.objects.filter(aggregate_id=created["uuid"], type="device.labels_changed").order_by("sequence")
    assert [e.data["after"] for e in events] == [
        {"plant": "3", "role": "boiler"},
        {"plant": "4"},
        {"plant": "5", "zone": "north"},
    ]
    assert events[0].metadata["source"] == "api"
    assert labels_of(device) == {"plant": "5", "zone": "north"}


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"labels": {"-bad": "1"}}, "labels", "The label key '-bad' is not 1 to 63 characters"),
        ({"labels": {"plant": "a b"}}, "labels", "The label value 'a b'"),
        ({"labels": ["plant=3"]}, "labels", "Must be a JSON object"),
        ({"labels": {"plant": 3}}, "labels", "A label value must be a string"),
        ({"name": "", "labels": {"plant": "4"}}, "name", "non-empty"),
        ({"draftMode": "yes"}, "draftMode", "Must be a boolean"),
    ],
)
def test_a_bad_change_is_a_400_naming_it_and_writes_nothing(staff, body, field, message):
    device = DeviceFactory(name="kept", labels={"plant": "3"})

    status, answer, _ = staff.call("PATCH", f"{devices_url()}/{device.uuid}", body)

    assert status == 400, answer
    assert answer["error"] == "validation_error"
    assert any(message in text for text in answer["fields"][field]), answer
    device.refresh_from_db()
    assert (device.name, labels_of(device), device.draft_mode) == ("kept", {"plant": "3"}, False)


# -- selectors on every list --------------------------------------------------------------------------------------


@pytest.fixture
def plant(superuser):
    """Four devices with a sensor each: two boilers in plant 3, a pump in plant 3, a boiler in plant 4."""
    devices = {
        "boiler-a": {"plant": "3", "role": "boiler"},
        "boiler-b": {"plant": "3", "role": "boiler", "spare": ""},
        "pump": {"plant": "3", "role": "pump"},
        "far-boiler": {"plant": "4", "role": "boiler"},
    }
    made = {}
    for name, labels in devices.items():
        made[name] = DeviceFactory(name=name, labels=labels)
        target_state_update(uuid=made[name].uuid, user=superuser, config={"sensors": [sensor_payload("temp")]})
    return made


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("plant=3,role=boiler", ["boiler-a", "boiler-b"]),
        ("plant==3, role != boiler", ["pump"]),
        ("role in (pump, boiler),plant notin (3)", ["far-boiler"]),
        ("spare", ["boiler-b"]),
        ("!spare,role=boiler", ["boiler-a", "far-boiler"]),
        ("", ["boiler-a", "boiler-b", "far-boiler", "pump"]),
    ],
)
def test_the_selector_filters_devices_and_both_sensor_lists(staff, plant, selector, expected):
    status, devices, _ = staff.get(devices_url(), selector=selector)
    assert status == 200, devices
    assert names(devices) == expected

    status, rows, _ = staff.get(fleet_sensors_url(), selector=selector)
    assert status == 200, rows
    assert sorted(Device.objects.get(uuid=r["deviceUuid"]).name for r in rows["results"]) == expected

    for name, device in plant.items():
        status, own, _ = staff.get(sensors_url(device.uuid), selector=selector)
        assert status == 200
        assert [r["name"] for r in own["results"]] == (["temp"] if name in expected else [])


@pytest.mark.parametrize("path", [devices_url(), fleet_sensors_url()])
def test_a_bad_selector_is_a_400_that_says_what_and_where(staff, plant, path):
    status, answer, _ = staff.get(path, selector="plant=3,role in (boiler")

    assert status == 400
    assert answer["error"] == "validation_error"
    (message,) = answer["fields"]["selector"]
    assert message == (
        "Invalid selector: expected ',' or ')' in the list of values opened at position 16, found the end "
        "(at position 23)."
    )


def test_the_selector_is_in_the_openapi_schema(staff):
    status, schema, _ = staff.call("GET", "/api/schema/?format=json")
    assert status == 200
    for path in ("/api/v1/devices/", "/api/v1/sensors/", "/api/v1/devices/{device_uuid}/sensors/"):
        parameters = {p["name"] for p in schema["paths"][path]["get"]["parameters"]}
        assert "selector" in parameters, path


# -- writes to what a selector selects ----------------------------------------------------------------------------


def test_labels_for_a_selector(staff, plant):
    status, result, _ = staff.call("POST", "/api/v1/labels?selector=plant%3D3,role%3Dboiler", {"set": {"tier": "gold"}})
    assert (status, result) == (200, {"selector": "plant=3,role=boiler", "matched": 2, "changed": 2})
    assert {name for name, d in plant.items() if labels_of(d).get("tier") == "gold"} == {"boiler-a", "boiler-b"}

    status, result, _ = staff.call("POST", "/api/v1/labels?selector=tier", {"remove": ["tier"], "set": {}})
    assert (status, result["changed"]) == (200, 2)

    status, answer, _ = staff.call("POST", "/api/v1/labels", {"set": {"a": "1"}})
    assert status == 400 and "selector" in answer["fields"]  # never the whole fleet by omission
    status, answer, _ = staff.call("POST", "/api/v1/labels?selector=!", {"set": {"a": "1"}})
    assert status == 400 and answer["fields"]["selector"] == [
        "Invalid selector: expected a label key, found the end (at position 1)."
    ]
    status, answer, _ = staff.call("POST", "/api/v1/labels?selector=", {"set": {"bad key": "1"}})
    assert status == 400 and "set" in answer["fields"]
    assert not DeviceLabel.objects.filter(key="a").exists()


# -- drafts -------------------------------------------------------------------------------------------------------


def test_staff_edits_collect_as_a_draft_the_agent_does_not_see_until_deployed(staff, live_server, superuser):
    device = DeviceFactory(name="boiler-room")
    target_state_update(uuid=device.uuid, user=superuser, config={"sensors": [sensor_payload("temp")]})
    agent = HttpAgent(live_server.url, device)
    published = agent.poll()
    report_running(device)
    path = f"{devices_url()}/{device.uuid}"

    status, _, _ = staff.call("PATCH", path, {"draftMode": True})
    assert status == 200
    status, drafted, headers = staff.call("POST", sensors_url(device.uuid), sensor_payload("flow"))
    assert status == 202, drafted
    assert drafted["draft"] is True and drafted["sensor"]["name"] == "flow"
    first_etag = headers["ETag"]
    assert first_etag == f'"{published["version"]}-draft-1"'
    status, changed, headers = staff.call(
        "PATCH", f"{sensors_url(device.uuid)}/temp", {"pollInterval": 750}, **{"If-Match": first_etag}
    )
    assert status == 202, changed
    assert headers["ETag"] == f'"{published["version"]}-draft-2"'

    # The agent still gets what was published: same version, same document (304 on its ETag).
    assert agent.poll()["version"] == published["version"]
    assert poll_status(live_server, device, etag=f'"{published["version"]}"') == 304
    # The read model shows the draft apart from what is published.
    status, shown, _ = staff.call("GET", path)
    assert shown["draft"]["baseVersion"] == published["version"]
    assert shown["draft"]["change"] == {"added": ["flow"], "updated": ["temp"]}
    status, rows, _ = staff.get(sensors_url(device.uuid))
    (temp,) = rows["results"]
    assert (temp["deploymentStatus"], temp["pollInterval"]) == ("deployed", 5000)
    assert temp["draft"]["change"] == "updated" and temp["draft"]["sensor"]["pollInterval"] == 750
    status, target, headers = staff.call("GET", f"{path}/target-state")
    assert target["version"] == published["version"]
    assert [s["name"] for s in target["config"]["sensors"]] == ["temp"]
    assert [s["name"] for s in target["draft"]["config"]["sensors"]] == ["temp", "flow"]
    assert headers["ETag"] == target["draft"]["etag"] == f'"{published["version"]}-draft-2"'

    # A stale If-Match is refused; leaving draft mode with the draft pending too.
    status, answer, _ = staff.call("POST", f"{path}/deploy", **{"If-Match": first_etag})
    assert status == 412, answer
    status, answer, _ = staff.call("PATCH", path, {"draftMode": False})
    assert (status, answer["error"]) == (409, "draft_pending")

    status, deployed, _ = staff.call("POST", f"{path}/deploy")
    assert status == 200, deployed
    assert deployed["version"] == published["version"] + 1 and deployed["draft"] is None
    state = agent.poll()
    assert state["version"] == published["version"] + 1
    assert {s["name"]: s["pollInterval"] for s in state["config"]["sensors"]} == {"temp": 750, "flow": 5000}
    assert DeviceSensor.objects.get(device=device, name="flow").deployment_status == "pending"
    types = list(
        Event.objects.filter(aggregate_id=str(device.uuid), type__startswith="target_state.")
        .order_by("sequence")
        .values_list("type", flat=True)
    )
    assert types[-4:] == [
        "target_state.draft_saved",
        "target_state.draft_saved",
        "target_state.updated",
        "target_state.draft_deployed",
    ]

    # Nothing left to deploy or discard.
    status, answer, _ = staff.call("POST", f"{path}/deploy")
    assert (status, answer["error"]) == (409, "no_draft")
    status, answer, _ = staff.call("POST", f"{path}/deploy/cancel")
    assert (status, answer["error"]) == (409, "no_draft")


def test_a_discarded_draft_leaves_the_published_target_as_it_was(staff, superuser):
    device = DeviceFactory(name="pump-1")
    target_state_update(uuid=device.uuid, user=superuser, config={"sensors": [sensor_payload("temp")]})
    staff.call("PATCH", f"{devices_url()}/{device.uuid}", {"draftMode": True})
    staff.call("DELETE", f"{sensors_url(device.uuid)}/temp")
    version = DeviceTargetState.objects.get(device=device).version

    status, body, _ = staff.call("POST", f"{devices_url()}/{device.uuid}/deploy/cancel")

    assert status == 200, body
    assert body["version"] == version and body["draft"] is None
    assert not DeviceTargetDraft.objects.filter(device=device).exists()
    assert DeviceSensor.objects.get(device=device, name="temp").desired is not None
    assert Event.objects.filter(aggregate_id=str(device.uuid), type="target_state.draft_discarded").count() == 1


def test_drafts_for_a_selector(staff, plant):
    status, result, _ = staff.call("POST", "/api/v1/draft-mode?selector=role%3Dboiler", {"enabled": True})
    assert (status, result["matched"], result["changed"]) == (200, 3, 3)
    for name in ("boiler-a", "boiler-b", "far-boiler"):
        status, _, _ = staff.call("POST", sensors_url(plant[name].uuid), sensor_payload("flow"))
        assert status == 202
    versions = {name: DeviceTargetState.objects.get(device=d).version for name, d in plant.items()}
    assert names(staff.get(devices_url(), hasDraft="true")[1]) == ["boiler-a", "boiler-b", "far-boiler"]
    assert names(staff.get(devices_url(), hasDraft="false")[1]) == ["pump"]
    assert names(staff.get(devices_url(), draftMode="true", selector="plant=3")[1]) == ["boiler-a", "boiler-b"]

    status, result, _ = staff.call("POST", "/api/v1/deploy?selector=plant%3D3")
    assert (status, result) == (200, {"selector": "plant=3", "matched": 2, "done": 2, "refused": {}})
    after = {name: DeviceTargetState.objects.get(device=d).version for name, d in plant.items()}
    assert after == {**versions, "boiler-a": versions["boiler-a"] + 1, "boiler-b": versions["boiler-b"] + 1}

    status, answer, _ = staff.call("POST", "/api/v1/draft-mode?selector=role%3Dboiler", {"enabled": False})
    assert (status, answer["error"]) == (409, "draft_pending") and "far-boiler" in answer["message"]
    status, result, _ = staff.call("POST", "/api/v1/deploy/cancel?selector=role%3Dboiler")
    assert (status, result["matched"], result["done"]) == (200, 1, 1)
    status, result, _ = staff.call("POST", "/api/v1/draft-mode?selector=role%3Dboiler", {"enabled": False})
    assert (status, result["changed"]) == (200, 3)
    assert DeviceTargetState.objects.get(device=plant["far-boiler"]).version == versions["far-boiler"]

    status, answer, _ = staff.call("POST", "/api/v1/deploy")
    assert status == 400 and "selector" in answer["fields"]


def test_deploying_needs_the_target_change_permission(live_server, device):
    viewer = UserFactory(permissions=["devices.view_device", "devices.change_device", "devices.view_devicetargetstate"])
    script = Staff(live_server.url, viewer)
    status, _, _ = script.call("PATCH", f"{devices_url()}/{device.uuid}", {"draftMode": True})
    assert status == 200

    for path in (f"{devices_url()}/{device.uuid}/deploy", "/api/v1/deploy?selector="):
        status, answer, _ = script.call("POST", path)
        assert (status, answer["error"]) == (403, "permission_denied"), path


# -- provisioning keys give registering devices their labels ------------------------------------------------------


def test_a_provisioning_keys_default_labels_are_the_registered_devices_labels(staff, live_server):
    status, key, _ = staff.call(
        "POST", "/api/v1/provisioning-keys", {"name": "plant 3", "defaultLabels": {"plant": "3", "site": "north"}}
    )
    assert status == 201, key
    assert key["defaultLabels"] == {"plant": "3", "site": "north"}
    device_uuid = str(uuid.uuid4())
    request = urllib.request.Request(
        f"{live_server.url}/api/v1/device/register",
        data=json.dumps({"uuid": device_uuid, "deviceName": "edge-1", "deviceApiKey": secrets.token_hex(32)}).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key['key']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201

    status, device, _ = staff.call("GET", f"{devices_url()}/{device_uuid}")
    assert device["labels"] == {"plant": "3", "site": "north"}
    (event,) = Event.objects.filter(aggregate_id=device_uuid, type="device.labels_changed")
    assert event.data == {"before": {}, "after": {"plant": "3", "site": "north"}}
    assert event.metadata["actor"] == f"provisioning_key:{key['uuid']}"

    status, answer, _ = staff.call("POST", "/api/v1/provisioning-keys", {"name": "bad", "defaultLabels": {"a": "b c"}})
    assert status == 400 and "defaultLabels" in answer["fields"]


# -- statement counts ---------------------------------------------------------------------------------------------

SIZES = {"small": 3, "large": 30}


@pytest.mark.parametrize("size", list(SIZES))
def test_filtered_lists_answer_in_a_fixed_number_of_statements(
    admin_client, superuser, django_assert_num_queries, size
):
    for n in range(SIZES[size]):
        device = DeviceFactory(name=f"dev-{n:03}", labels={"plant": str(n % 2), "role": "boiler"})
        target_state_update(
            uuid=device.uuid,
            user=superuser,
            config={"sensors": [SensorPayloadFactory(name=f"s-{i}") for i in range(3)]},
        )
        if n % 3 == 0:
            admin_client.patch(f"{devices_url()}/{device.uuid}", {"draftMode": True}, format="json")
            admin_client.post(sensors_url(device.uuid), sensor_payload("drafted"), format="json")
    one = Device.objects.filter(labels__key="plant", labels__value="0").first()

    # COUNT(*), the page (with the drafts joined), the page's labels
    with django_assert_num_queries(3):
        devices = admin_client.get(devices_url(), {"selector": "plant=0,role=boiler", "limit": 100}).json()
    # the page (the device's uuid and draft joined): cursor pagination counts nothing
    with django_assert_num_queries(1):
        rows = admin_client.get(fleet_sensors_url(), {"selector": "plant=0", "limit": 1000}).json()
    # the device exists? + COUNT(*) + the page
    with django_assert_num_queries(3):
        own = admin_client.get(sensors_url(one.uuid), {"selector": "plant=0"}).json()

    assert devices["count"] == (SIZES[size] + 1) // 2
    assert len(rows["results"]) == 3 * devices["count"]
    assert own["count"] == 3
    assert any(d["draft"] for d in devices["results"]) and any(r["draft"] is None for r in rows["results"])
