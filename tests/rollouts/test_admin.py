"""The operator's flow from the admin: start a rollout of a template change to a labelled group, watch its progress
per stage, see it pause itself with the reasons, abort it back; the buttons are POSTs that need the change
permission."""

import json

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from rollouts import services
from rollouts.models import Rollout
from tests.factories import UserFactory
from tests.fleetconfig.conftest import template_sensor

from .conftest import converge, fail, poll_of

pytestmark = pytest.mark.django_db

ADD = reverse("admin:rollouts_rollout_add")
LIST = reverse("admin:rollouts_rollout_changelist")


def change_url(rollout) -> str:
    return reverse("admin:rollouts_rollout_change", args=[rollout.pk])


def test_start_watch_pause_and_abort_from_the_admin(admin_browser, fleet_of, drive, django_capture_on_commit_callbacks):
    template, devices = fleet_of({"site=a": 6, "site=b": 6})
    # From the template's page: the add form comes with its latest sensors filled in.
    template_page = admin_browser.get(reverse("admin:fleetconfig_sensortemplate_change", args=[template.pk]))
    assert f'href="{ADD}?template={template.pk}"'.encode() in template_page.content
    page = admin_browser.get(f"{ADD}?template={template.pk}")
    assert page.status_code == 200 and b"&quot;pollInterval&quot;: 1000" in page.content

    form = {
        "name": "boiler-2000",
        "kind": "template",
        "template": template.pk,
        "sensors": json.dumps([template_sensor("temp", pollInterval=2000)]),
        "note": "slower polling",
        "selector": "site=a",
        "stages_text": "50%\n100%",
        "success_threshold": 100,
        "error_threshold": 30,
        "deadline_seconds": "",
    }
    refused = admin_browser.post(ADD, {**form, "stages_text": "50%\n10%"})
    assert refused.status_code == 200 and b"percentages must grow" in refused.content
    assert not Rollout.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        created = admin_browser.post(ADD, form)
    assert created.status_code == 302, created.content[:2000]
    rollout = Rollout.objects.get()

    drive()
    group = [d for d in devices if poll_of(d) == 2000]
    assert len(group) == 3
    fail(group[:1])
    converge(group[1:])
    assert drive()[0].outcome == "paused"  # 1 of 3 failed: over 30%

    page = admin_browser.get(change_url(rollout)).content.decode()
    assert 'data-status="paused"' in page and "Error threshold crossed" in page
    assert "1 of 3 online devices failed" in page and "</strong> &times; temp:" in page
    assert 'class="ss-targeted">3<' in page and 'class="ss-failed">1<' in page and "<svg" in page
    assert 'id="rollout-resume-button"' in page and 'id="rollout-abort-button"' in page
    events = admin_browser.get(f"{reverse('admin:events_event_changelist')}?aggregate_id={rollout.uuid}")
    assert events.status_code == 200 and b"rollout.paused" in events.content
    listed = admin_browser.get(LIST).content.decode()
    assert "2 of 3 deployed" in listed and "1 failed" in listed

    # Resumed as it was, it pauses again at the next pass; resumed with a higher error threshold, it goes on.
    resume = reverse("admin:rollouts_rollout_resume", args=[rollout.pk])
    refused = admin_browser.post(resume, {"success_threshold": "50", "error_threshold": "x"}, follow=True)
    assert b"hreshold: Must be an integer percentage from 0 to 100." in refused.content
    assert admin_browser.post(resume, {"success_threshold": "100", "error_threshold": "30"}).status_code == 302
    assert drive()[0].outcome == "paused"
    admin_browser.post(resume, {"success_threshold": "60", "error_threshold": "50"})
    rollout.refresh_from_db()
    assert (rollout.status, rollout.success_threshold, rollout.error_threshold) == ("running", 60, 50)
    assert drive()[0].outcome == "admitted"  # stage 2: the other three of site=a

    # The buttons: a GET does nothing; the POSTs act.
    assert admin_browser.get(reverse("admin:rollouts_rollout_abort", args=[rollout.pk])).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        done = admin_browser.post(reverse("admin:rollouts_rollout_abort", args=[rollout.pk]))
    assert done.status_code == 302
    rollout.refresh_from_db()
    assert rollout.status == "aborted" and {poll_of(d) for d in devices} == {1000}
    again = admin_browser.post(reverse("admin:rollouts_rollout_abort", args=[rollout.pk]), follow=True)
    assert b"Only a running or paused rollout can be aborted" in again.content


def test_viewers_see_it_and_cannot_act(client, fleet_of, start):
    template, _ = fleet_of({"site=a": 2})
    rollout = start(template)
    viewer = UserFactory(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_rollout"))
    client.force_login(viewer)
    page = client.get(change_url(rollout)).content.decode()
    assert "Progress" in page and "rollout-pause-button" not in page
    assert client.post(reverse("admin:rollouts_rollout_pause", args=[rollout.pk])).status_code == 403
    rollout.refresh_from_db()
    assert rollout.status == "running"


def test_the_list_costs_a_constant_number_of_queries(admin_browser, fleet_of, start, drive):
    template, devices = fleet_of({"site=a": 20})
    start(template, stages=[{"percent": 100}])
    drive()
    admin_browser.get(LIST)

    before = queries_of(admin_browser, LIST)
    converge(devices)
    services.rollout_pause(uuid=Rollout.objects.get().uuid, user=None)
    assert queries_of(admin_browser, LIST) == before


def test_the_fleet_page_shows_running_rollouts_with_their_progress(admin_browser, fleet_of, start, drive):
    template, devices = fleet_of({"site=a": 10})
    rollout = start(template, stages=[{"percent": 50}, {"percent": 100}])
    drive()
    converge(devices)
    admin_browser.get("/fleet/?refresh=0")
    page = admin_browser.get("/fleet/?refresh=0").content.decode()
    assert f'data-rollout="{rollout.uuid}"' in page and "stage 1 of 2" in page
    assert 'class="ss-targeted">5<' in page and 'class="ss-deployed">5<' in page
    # The rollouts and all their progress are three queries, whatever the number of devices they admitted.
    with_five = queries_of(admin_browser, "/fleet/?refresh=0")
    drive()  # stage 2: every device
    converge(devices)
    page = admin_browser.get("/fleet/?refresh=0").content.decode()
    assert "stage 2 of 2" in page and '<tr class="ss-total"><th>All</th><th>10</th>' in page
    assert queries_of(admin_browser, "/fleet/?refresh=0") == with_five


def queries_of(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)
