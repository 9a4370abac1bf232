"""The fleet configuration's API through HTTP (DRF's client against the real views, permissions and error shape):
templates, assignments, overrides, a device's rendering, previews, render jobs and problems; query counts of the
lists."""

import pytest

from devices.models import DeviceTargetStateVersion
from fleetconfig import services
from fleetconfig.choices import RenderJobStatusChoices as JobStatus
from fleetconfig.models import Assignment, RenderJob, SensorOverride, SensorTemplate
from reconciliation.services.sensors import sensor_create
from tests.factories import SensorPayloadFactory, UserFactory
from tests.helpers import API, assert_error, sensor_url

from .conftest import desired_sensors, labelled_device, make_template, target_version, template_sensor

# Transactional: each request commits as in production, so the re-render a change starts runs before its answer.
pytestmark = pytest.mark.django_db(transaction=True)

TEMPLATES, ASSIGNMENTS, OVERRIDES = f"{API}/sensor-templates", f"{API}/assignments", f"{API}/sensor-overrides"
JOBS, PROBLEMS = f"{API}/render-jobs", f"{API}/render-problems"


def rendering_url(device) -> str:
    return f"{API}/devices/{device.uuid}/rendering"


@pytest.fixture
def plant(db):
    """Two boilers and a chiller in plant 3, a boiler in plant 4."""
    return {
        "boiler-a": labelled_device({"plant": "3", "role": "boiler"}, name="boiler-a"),
        "boiler-b": labelled_device({"plant": "3", "role": "boiler"}, name="boiler-b"),
        "chiller": labelled_device({"plant": "3", "role": "chiller"}, name="chiller"),
        "boiler-4": labelled_device({"plant": "4", "role": "boiler"}, name="boiler-4"),
    }


def test_the_operator_flow_through_the_api(admin_client, committed, plant):
    # A template.
    created = admin_client.post(
        TEMPLATES,
        {"name": "boiler-temp", "sensors": [template_sensor("supply-temp")], "description": "Boiler supply"},
        format="json",
    )
    assert created.status_code == 201, created.content
    template = created.json()
    assert created["ETag"] == '"1"' and created["Location"] == f"/api/v1/sensor-templates/{template['uuid']}"
    assert (template["version"], template["assignmentCount"]) == (1, 0)
    assert template["sensors"] == [template_sensor("supply-temp")]

    # What assigning it to the boilers of plant 3 would do, before doing it.
    body = {"name": "plant-3-boilers", "template": template["uuid"], "selector": "plant=3,role=boiler", "priority": 5}
    preview = admin_client.post(f"{ASSIGNMENTS}/preview", body, format="json")
    assert preview.status_code == 200, preview.content
    shown = preview.json()
    assert (shown["devices"], shown["changed"], shown["unchanged"], shown["truncated"]) == (2, 2, 0, False)
    assert {c["deviceName"] for c in shown["changes"]} == {"boiler-a", "boiler-b"}
    assert shown["changes"][0]["diff"] == {"added": ["supply-temp"], "removed": [], "updated": {}}
    assert not Assignment.objects.exists() and target_version(plant["boiler-a"]) == 1

    # Apply it.
    with committed():
        applied = admin_client.post(ASSIGNMENTS, body, format="json")
    assert applied.status_code == 201, applied.content
    job = applied.json()["renderJob"]
    assert (job["status"], job["total"], job["changed"], job["progress"]) == ("done", 2, 2, 100)
    assert set(desired_sensors(plant["boiler-a"])) == {"supply-temp"}
    assert desired_sensors(plant["chiller"]) == {} and desired_sensors(plant["boiler-4"]) == {}

    # Override one field on one device.
    with committed():
        override = admin_client.post(
            OVERRIDES,
            {"device": str(plant["boiler-b"].uuid), "sensor": "supply-temp", "field": "pollInterval", "value": 1000},
            format="json",
        )
    assert override.status_code == 201, override.content
    assert (override.json()["rendered"], override.json()["applied"]) == (True, True)
    assert desired_sensors(plant["boiler-b"])["supply-temp"]["pollInterval"] == 1000
    assert desired_sensors(plant["boiler-a"])["supply-temp"]["pollInterval"] == 5000

    # Where every field came from.
    rendering = admin_client.get(rendering_url(plant["boiler-b"]))
    assert rendering.status_code == 200
    data = rendering.json()
    assert data["upToDate"] is True and data["labels"] == {"plant": "3", "role": "boiler"}
    assert [a["name"] for a in data["assignments"]] == ["plant-3-boilers"]
    (sensor,) = data["sensors"]
    assert sensor["origin"] == "template" and sensor["sensor"]["pollInterval"] == 1000
    assert sensor["sources"]["pollInterval"] == {"kind": "override", "override": override.json()["uuid"]}
    source = sensor["sources"]["connection"]
    assert (source["kind"], source["template"], source["version"], source["assignment"], source["priority"]) == (
        "template",
        "boiler-temp",
        1,
        "plant-3-boilers",
        5,
    )
    assert data["overrides"][0]["applied"] is True

    # A new version of the template: previewed, then applied to the devices that follow it.
    new_sensors = [template_sensor("supply-temp", pollInterval=2000), template_sensor("return-temp")]
    preview = admin_client.post(f"{TEMPLATES}/{template['uuid']}/preview", {"sensors": new_sensors}, format="json")
    changes = {c["deviceName"]: c["diff"] for c in preview.json()["changes"]}
    assert changes["boiler-a"]["updated"] == {"supply-temp": {"pollInterval": {"before": 5000, "after": 2000}}}
    assert changes["boiler-b"] == {"added": ["return-temp"], "removed": [], "updated": {}}  # its override still wins
    with committed():
        updated = admin_client.patch(
            f"{TEMPLATES}/{template['uuid']}", {"sensors": new_sensors, "note": "return too"}, format="json"
        )
    assert updated.status_code == 200, updated.content
    assert updated["ETag"] == '"2"' and updated.json()["renderJob"]["changed"] == 2
    versions = admin_client.get(f"{TEMPLATES}/{template['uuid']}/versions").json()
    assert [(v["version"], v["note"]) for v in versions["results"]] == [(2, "return too"), (1, "")]

    # Deleting the assignment takes away exactly what it rendered.
    assignment_uuid = applied.json()["uuid"]
    removal = admin_client.post(f"{ASSIGNMENTS}/{assignment_uuid}/preview-delete").json()
    assert removal["changed"] == 2
    with committed():
        deleted = admin_client.delete(f"{ASSIGNMENTS}/{assignment_uuid}")
    assert deleted.status_code == 200 and deleted.json()["renderJob"]["changed"] == 2
    assert desired_sensors(plant["boiler-a"]) == {} and desired_sensors(plant["boiler-b"]) == {}
    history = DeviceTargetStateVersion.objects.filter(device=plant["boiler-a"]).values_list("version", flat=True)
    assert sorted(history) == [1, 2, 3, 4]


def test_a_template_write_refuses_bad_input_and_stale_versions(admin_client):
    assert_error(
        admin_client.post(TEMPLATES, {"name": "x"}, format="json"), 400, "validation_error", fields=["sensors"]
    )
    assert_error(
        admin_client.post(TEMPLATES, {"name": "x", "sensors": [], "colour": 1}, format="json"),
        400,
        "validation_error",
        fields=["colour"],
    )
    bad = admin_client.post(TEMPLATES, {"name": "x", "sensors": [{"name": "t1", "protocol": "zigbee"}]}, format="json")
    assert_error(bad, 400, "validation_error", fields=["sensors[0].protocol", "sensors[0].connection"])
    template = make_template("boiler-temp")
    stale = admin_client.put(
        f"{TEMPLATES}/{template.uuid}",
        {"name": "boiler-temp", "sensors": [template_sensor("x")]},
        format="json",
        HTTP_IF_MATCH='"7"',
    )
    assert_error(stale, 412, "precondition_failed")
    assert stale["ETag"] == '"1"'
    assert SensorTemplate.objects.get().version == 1
    detail = admin_client.get(f"{TEMPLATES}/{template.uuid}")
    assert detail["ETag"] == '"1"' and detail.json()["sensors"][0]["name"] == "supply-temp"
    assert_error(admin_client.get(f"{TEMPLATES}/0b0f2f4e-9a43-4c55-9d0b-2f3e7a9c1d44"), 404, "not_found")


def test_a_used_template_is_not_deleted_and_an_unused_one_is(admin_client):
    used = make_template("used")
    services.assignment_create(user=None, name="a", template=str(used.uuid), selector="plant=9")
    assert_error(admin_client.delete(f"{TEMPLATES}/{used.uuid}"), 400, "validation_error", fields=["template"])
    unused = make_template("unused")
    assert admin_client.delete(f"{TEMPLATES}/{unused.uuid}").status_code == 204
    assert list(SensorTemplate.objects.values_list("name", flat=True)) == ["used"]


def test_an_assignment_write_names_every_bad_field(admin_client):
    response = admin_client.post(
        ASSIGNMENTS, {"name": "a b", "template": "nope", "selector": "plant in (3", "priority": "high"}, format="json"
    )
    body = assert_error(response, 400, "validation_error", fields=["name", "template", "selector", "priority"])
    assert "position" in body["fields"]["selector"][0]
    response = admin_client.post(f"{ASSIGNMENTS}/preview", {"name": "a"}, format="json")
    assert_error(response, 400, "validation_error", fields=["template", "selector"])
    assert not Assignment.objects.exists()


def test_a_conflict_shows_on_the_assignment_the_device_and_the_problem_list(admin_client, committed, plant):
    slow = make_template("slow", template_sensor("t1", pollInterval=5000))
    fast = make_template("fast", template_sensor("t1", pollInterval=1000))
    with committed():
        services.assignment_create(user=None, name="by-plant", template=str(slow.uuid), selector="plant=3")
        second = services.assignment_create(user=None, name="by-role", template=str(fast.uuid), selector="role=boiler")
    assignment = admin_client.get(f"{ASSIGNMENTS}/{second.instance.uuid}").json()
    assert assignment["devicesWithProblems"] == 2
    assert assignment["counts"] == {"targeted": 3, "converged": 0, "withProblems": 2}
    assert {p["deviceName"] for p in assignment["problems"]} == {"boiler-a", "boiler-b"}
    assert all(p["kind"] == "conflict" for p in assignment["problems"])

    problems = admin_client.get(PROBLEMS, {"device": str(plant["boiler-a"].uuid)}).json()["results"]
    assert {p["assignment"] for p in problems} == {str(a.uuid) for a in Assignment.objects.all()}
    rendering = admin_client.get(rendering_url(plant["boiler-a"])).json()
    assert [p["kind"] for p in rendering["problems"]] == ["conflict"]
    assert rendering["sensors"][0]["origin"] == "held"

    fix = admin_client.post(f"{ASSIGNMENTS}/{second.instance.uuid}/preview", {"priority": 1}, format="json").json()
    assert (fix["changed"], fix["withProblems"]) == (2, 0)
    with committed():
        response = admin_client.patch(f"{ASSIGNMENTS}/{second.instance.uuid}", {"priority": 1}, format="json")
    assert response.json()["renderJob"]["withProblems"] == 0
    assert desired_sensors(plant["boiler-a"])["t1"]["pollInterval"] == 1000
    assert admin_client.get(PROBLEMS).json()["results"] == []


def test_a_rendered_sensor_is_refused_on_the_sensor_api_with_a_pointer_to_overrides(admin_client, committed, plant):
    device = plant["boiler-a"]
    with committed():
        services.assignment_create(
            user=None,
            name="boilers",
            template=str(make_template("t", template_sensor("t1")).uuid),
            selector="role=boiler",
        )
    version = target_version(device)
    response = admin_client.patch(sensor_url(device.uuid, "t1"), {"pollInterval": 200}, format="json")
    body = assert_error(response, 400, "validation_error", fields=["name"])
    assert "override" in body["fields"]["name"][0] and "assignment 'boilers'" in body["fields"]["name"][0]
    assert_error(admin_client.delete(sensor_url(device.uuid, "t1")), 400, "validation_error", fields=["name"])
    assert target_version(device) == version


def test_an_override_refuses_bad_input_and_can_be_changed_and_removed(admin_client, committed, plant):
    device = plant["boiler-a"]
    with committed():
        services.assignment_create(
            user=None,
            name="boilers",
            template=str(make_template("t", template_sensor("t1")).uuid),
            selector="role=boiler",
        )
    bad = {"device": str(device.uuid), "sensor": "t1", "field": "pollInterval", "value": 5}
    assert_error(admin_client.post(OVERRIDES, bad, format="json"), 400, "validation_error", fields=["value"])
    bad_field = {**bad, "field": "name", "value": "x"}
    assert_error(admin_client.post(OVERRIDES, bad_field, format="json"), 400, "validation_error", fields=["field"])
    response = admin_client.post(OVERRIDES, {**bad, "device": "nope"}, format="json")
    assert_error(response, 400, "validation_error", fields=["device"])
    missing = {**bad, "device": "0b0f2f4e-9a43-4c55-9d0b-2f3e7a9c1d44", "value": 1000}
    assert_error(admin_client.post(OVERRIDES, missing, format="json"), 404, "not_found")
    assert not SensorOverride.objects.exists()

    created = admin_client.post(OVERRIDES, {**bad, "value": 1000}, format="json").json()
    changed = admin_client.patch(f"{OVERRIDES}/{created['uuid']}", {"value": 2000}, format="json")
    assert changed.status_code == 200 and changed.json()["value"] == 2000
    assert desired_sensors(device)["t1"]["pollInterval"] == 2000
    listed = admin_client.get(OVERRIDES, {"device": str(device.uuid)}).json()["results"]
    assert [(o["sensor"], o["field"], o["value"]) for o in listed] == [("t1", "pollInterval", 2000)]
    assert admin_client.delete(f"{OVERRIDES}/{created['uuid']}").status_code == 204
    assert desired_sensors(device)["t1"]["pollInterval"] == 5000
    assert_error(admin_client.delete(f"{OVERRIDES}/{created['uuid']}"), 404, "not_found")


def test_render_jobs_can_be_asked_for_listed_and_retried(admin_client, committed, plant, settings):
    with committed():
        response = admin_client.post(JOBS, {"selector": "plant=3"}, format="json")
    assert response.status_code == 201, response.content
    assert (response.json()["status"], response.json()["total"]) == ("done", 3)
    settings.SENSORSYNC_RENDER_INLINE_MAX_DEVICES = 0
    with committed():
        queued = admin_client.post(JOBS, {"all": True}, format="json").json()
    assert queued["status"] == "queued" and queued["progress"] == 0
    listed = admin_client.get(JOBS, {"status": "queued"}).json()["results"]
    assert [j["uuid"] for j in listed] == [queued["uuid"]]
    assert_error(admin_client.post(f"{JOBS}/{queued['uuid']}/retry"), 400, "validation_error", fields=["status"])
    RenderJob.objects.filter(uuid=queued["uuid"]).update(status=JobStatus.FAILED)
    assert admin_client.post(f"{JOBS}/{queued['uuid']}/retry").json()["status"] == "queued"
    for body, field in (
        ({}, "body"),
        ({"selector": "plant in ("}, "selector"),
        ({"devices": ["nope"]}, "devices"),
        ({"all": True, "selector": "x"}, "body"),
        ([1], "body"),
    ):
        assert_error(admin_client.post(JOBS, body, format="json"), 400, "validation_error", fields=[field])


def test_permissions_follow_the_models(api_client, committed, plant):
    template = make_template("t", template_sensor("t1"))
    assert_error(api_client.get(TEMPLATES), 401, "not_authenticated")
    viewer = UserFactory(
        permissions=[
            "fleetconfig.view_sensortemplate",
            "fleetconfig.view_assignment",
            "fleetconfig.view_deviceconfiguration",
        ]
    )
    api_client.force_authenticate(viewer)
    assert api_client.get(TEMPLATES).status_code == 200
    assert api_client.get(rendering_url(plant["boiler-a"])).status_code == 200
    body = {"name": "a", "template": str(template.uuid), "selector": ""}
    assert api_client.post(f"{ASSIGNMENTS}/preview", body, format="json").status_code == 200
    assert_error(api_client.post(ASSIGNMENTS, body, format="json"), 403, "permission_denied")
    assert_error(api_client.get(OVERRIDES), 403, "permission_denied")
    assert_error(api_client.get(JOBS), 403, "permission_denied")
    assert not Assignment.objects.exists()


def test_the_lists_cost_a_constant_number_of_queries(admin_client, committed, django_assert_num_queries):
    for index in range(6):
        template = make_template(f"t{index}", template_sensor("t1"))
        services.assignment_create(user=None, name=f"a{index}", template=str(template.uuid), selector=f"i={index}")
    devices = [labelled_device({"i": str(index)}) for index in range(6)]
    with committed():
        services.render_request(scope={"all": True}, reason="test", user=None)
    for device in devices:
        services.sensor_override_set(device_uuid=device.uuid, sensor_name="t1", field="enabled", value=False, user=None)
    sensor_create(device_uuid=devices[0].uuid, data=SensorPayloadFactory(name="t1-own"), user=None)
    admin_client.get(TEMPLATES)  # the session's first request reads the permissions
    for url, queries in ((TEMPLATES, 2), (ASSIGNMENTS, 2), (OVERRIDES, 1), (JOBS, 1), (PROBLEMS, 1)):
        with django_assert_num_queries(queries):
            response = admin_client.get(url)
        assert response.status_code == 200
    # One device's rendering: the device, its desired state, labels, overrides, assignments and their versions, the
    # overrides shown, and its stored problems.
    with django_assert_num_queries(8):
        assert admin_client.get(rendering_url(devices[0])).status_code == 200
