"""/api/v1/rollouts/: create, list and retrieve with progress, pause / resume / abort, and every refusal a clear 4xx
naming the problem, with nothing written."""

import pytest
from django.contrib.auth.models import Permission

from fleetconfig.models import AssignmentHold
from rollouts.models import Rollout
from tests.factories import UserFactory
from tests.fleetconfig.conftest import template_sensor
from tests.helpers import assert_error

from .conftest import converge, poll_of

pytestmark = pytest.mark.django_db

ROLLOUTS = "/api/v1/rollouts/"


def body(template, **changes) -> dict:
    return {
        "name": "boiler-2000",
        "kind": "template",
        "template": str(template.uuid),
        "sensors": [template_sensor("temp", pollInterval=2000)],
        "stages": [{"percent": 50}, {"percent": 100}],
        "successThreshold": 100,
        "errorThreshold": 25,
        "deadlineSeconds": 600,
        **changes,
    }


def test_a_rollout_through_the_api(admin_client, fleet_of, drive, django_capture_on_commit_callbacks):
    template, devices = fleet_of({"site=a": 4, "site=b": 4})
    with django_capture_on_commit_callbacks(execute=True):
        created = admin_client.post(ROLLOUTS, body(template, selector="site=a"), format="json")
    assert created.status_code == 201, created.content
    shown = created.json()
    assert created["Location"] == f"/api/v1/rollouts/{shown['uuid']}"
    assert (shown["status"], shown["fromVersion"], shown["toVersion"], shown["selector"]) == ("running", 1, 2, "site=a")
    assert shown["progress"]["targeted"] == 0 and [s["title"] for s in shown["stageProgress"]] == [
        "50%",
        "100%",
        "the rest of the fleet",
    ]

    drive()
    detail = admin_client.get(f"{ROLLOUTS}{shown['uuid']}").json()
    assert [s["targeted"] for s in detail["stageProgress"]] == [2, 0, 0]  # half of the four site=a devices
    converge(devices)
    drive()
    detail = admin_client.get(f"{ROLLOUTS}{shown['uuid']}").json()
    assert detail["currentStage"] == 1 and detail["progress"]["targeted"] == 4
    assert detail["stageProgress"][0]["deployed"] == 2

    paused = admin_client.post(f"{ROLLOUTS}{shown['uuid']}/pause")
    assert paused.status_code == 200 and paused.json()["pauseReason"] == "staff"
    assert_error(admin_client.post(f"{ROLLOUTS}{shown['uuid']}/pause"), 400, "validation_error", fields=["status"])
    assert_error(
        admin_client.post(f"{ROLLOUTS}{shown['uuid']}/resume", {"errorThreshold": 101}, format="json"),
        400,
        "validation_error",
        fields=["errorThreshold"],
    )
    resumed = admin_client.post(f"{ROLLOUTS}{shown['uuid']}/resume", {"errorThreshold": 40}, format="json")
    assert resumed.status_code == 200 and resumed.json()["errorThreshold"] == 40
    with django_capture_on_commit_callbacks(execute=True):
        aborted = admin_client.post(f"{ROLLOUTS}{shown['uuid']}/abort")
    assert aborted.status_code == 200 and aborted.json()["status"] == "aborted"
    assert {poll_of(d) for d in devices} == {1000}


def test_refusals_name_the_problem_and_write_nothing(admin_client, api_client, fleet_of):
    template, _ = fleet_of({"site=a": 2})
    cases = [
        (body(template, stages=[{"percent": 0}]), ["stages[0].percent"]),
        (body(template, stages="10,100"), ["stages"]),
        (body(template, successThreshold="all"), ["successThreshold"]),
        (body(template, selector="site in ("), ["selector"]),
        (body(template, kind="fleet"), ["kind"]),
        ({**body(template), "template": "7e0d3b38-4a4c-4f57-a5e1-0dd2fb1c3a55"}, ["template"]),
        (body(template, sensors=[{"name": "temp"}]), ["sensors[0].protocol"]),
        (body(template, colour="red"), ["colour"]),
        ({"kind": "template"}, ["name"]),
        (body(template, kind="assignment", assignment="nope", templateVersion=2), ["assignment"]),
    ]
    for sent, fields in cases:
        assert_error(admin_client.post(ROLLOUTS, sent, format="json"), 400, "validation_error", fields=fields)
    assert_error(admin_client.post(ROLLOUTS, [1, 2], format="json"), 400, "validation_error", fields=["body"])
    assert not Rollout.objects.exists() and not AssignmentHold.objects.exists() and template.versions.count() == 1
    missing = "3b0e1a55-4c1d-4e2a-9f0e-6d7c8b9a0f11"
    assert_error(admin_client.get(f"{ROLLOUTS}{missing}"), 404, "not_found")
    assert_error(admin_client.post(f"{ROLLOUTS}{missing}/abort"), 404, "not_found")
    api_client.force_authenticate(None)
    assert_error(api_client.get(ROLLOUTS), 401, "not_authenticated")
    assert_error(api_client.post(ROLLOUTS, body(template), format="json"), 401, "not_authenticated")
    assert not Rollout.objects.exists()


def test_permissions_view_add_and_change(api_client, fleet_of):
    template, _ = fleet_of({"site=a": 2})
    viewer = UserFactory()
    viewer.user_permissions.add(Permission.objects.get(codename="view_rollout"))
    api_client.force_authenticate(viewer)
    assert api_client.get(ROLLOUTS).status_code == 200
    assert_error(api_client.post(ROLLOUTS, body(template), format="json"), 403, "permission_denied")
    assert not Rollout.objects.exists()
    adder = UserFactory()
    adder.user_permissions.add(Permission.objects.get(codename="add_rollout"))
    api_client.force_authenticate(adder)
    created = api_client.post(ROLLOUTS, body(template), format="json")
    assert created.status_code == 201
    assert_error(api_client.post(f"{ROLLOUTS}{created.json()['uuid']}/abort"), 403, "permission_denied")
    assert Rollout.objects.get().status == "running"


def test_the_list_and_a_rollout_cost_a_constant_number_of_queries(
    admin_client, fleet_of, start, drive, django_assert_num_queries
):
    template, devices = fleet_of({"site=a": 30})
    rollout = start(template, stages=[{"percent": 100}])
    drive()
    converge(devices[:20])
    admin_client.get(ROLLOUTS)  # the session's first request reads the permissions
    # The page, its assignments, and every rollout's progress (two queries for all their devices).
    with django_assert_num_queries(4):
        listed = admin_client.get(ROLLOUTS)
    assert listed.json()["results"][0]["progress"]["deployed"] == 20
    with django_assert_num_queries(4):
        detail = admin_client.get(f"{ROLLOUTS}{rollout.uuid}")
    assert detail.json()["stageProgress"][0]["targeted"] == 30
