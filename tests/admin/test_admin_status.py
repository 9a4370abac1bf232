"""What the admin shows of the loop, and its loop actions: status badges, the drift column and filter, versions side
by side, the device page's sensors and "why not converged" panel, "reconcile now", rollback, key rotation from the
device page, and the JSON editor. Agents report through the real agent endpoints, with their keys."""

from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.test import Client
from django.utils import timezone

from devices.models import Device, DeviceTargetState, DeviceTargetStateVersion
from events.choices import EventTypeChoices
from events.models import Event
from reconciliation.services.sensors import sensor_create, sensor_update
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from tests.factories import SensorPayloadFactory, UserFactory
from tests.fleet.agent import Agent
from tests.helpers import device_with

from .test_admin import DEVICES, EVENTS, SENSORS, messages_of, shown_keys, text_of

ERROR = "connection refused by 10.0.0.5:502"


def agent_for(device) -> Agent:
    return Agent(Client(), device)


def seen_long_ago(device, seconds: int = 3600) -> None:
    """Time passes without the agent: its liveness is as old as that (test set-up, not a product write)."""
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(seconds=seconds))


def change_url(device) -> str:
    return f"{DEVICES}{device.pk}/change/"


@pytest.fixture
def fleet(superuser):
    """One device in each state: in sync, drifting (a sensor failed), never reported, in sync but offline."""
    in_sync = device_with("temp-1", "temp-2", name="a-in-sync", user=superuser)
    agent_for(in_sync).deploy_all()
    drifting = device_with("temp-1", "temp-2", name="b-drifting", user=superuser)
    agent_for(drifting).deploy_failing("temp-2", ERROR)
    never = device_with("temp-1", name="c-never-reported", user=superuser)
    offline = device_with("temp-1", name="d-offline", user=superuser)
    agent_for(offline).deploy_all()
    seen_long_ago(offline)
    return {"in_sync": in_sync, "drifting": drifting, "never_reported": never, "offline": offline}


# --- the device list: drift column, versions side by side, the drift filter ---


def listed(client, query: str) -> set[str]:
    response = client.get(DEVICES + query)
    assert response.status_code == 200
    return {device.name for device in response.context["cl"].result_list}


def test_drift_filter(admin_browser, fleet, settings):
    settings.SENSORSYNC_OFFLINE_AFTER_SECONDS = 300

    assert listed(admin_browser, "?drift=in_sync") == {"a-in-sync", "d-offline"}
    assert listed(admin_browser, "?drift=drifting") == {"b-drifting"}
    assert listed(admin_browser, "?drift=never_reported") == {"c-never-reported"}
    # Offline: not seen for longer than the threshold, or never seen at all.
    assert listed(admin_browser, "?drift=offline") == {"c-never-reported", "d-offline"}
    assert listed(admin_browser, "") == {"a-in-sync", "b-drifting", "c-never-reported", "d-offline"}


def test_offline_threshold_is_a_setting(admin_browser, fleet, settings):
    seen_long_ago(fleet["in_sync"], seconds=120)

    settings.SENSORSYNC_OFFLINE_AFTER_SECONDS = 60
    assert listed(admin_browser, "?drift=offline") == {"a-in-sync", "c-never-reported", "d-offline"}
    settings.SENSORSYNC_OFFLINE_AFTER_SECONDS = 7200
    assert listed(admin_browser, "?drift=offline") == {"c-never-reported"}


def test_device_list_shows_drift_and_versions_side_by_side(admin_browser, fleet, superuser):
    # The drifting device's target moves on; its agent has neither fetched nor applied that version.
    sensor_update(
        device_uuid=fleet["drifting"].uuid, name="temp-1", data={"pollInterval": 750}, partial=True, user=superuser
    )

    response = admin_browser.get(DEVICES)

    content = response.content.decode()
    rows = {device.name: device for device in response.context["cl"].result_list}
    admin = response.context["cl"].model_admin
    assert [text_of(admin.drift(rows[name])) for name in sorted(rows)] == [
        "in sync",
        "drifting · 2 sensors",
        "never reported",
        "in sync",
    ]
    drifting = rows["b-drifting"]
    assert [
        text_of(admin.target(drifting)),
        text_of(admin.fetched_version(drifting)),
        text_of(admin.reported_version(drifting)),
    ] == ["v4", "v3", "v3"]
    assert "ss-ver--behind" in admin.fetched_version(drifting) and "ss-ver--behind" in admin.reported_version(drifting)
    assert "ss-ver--behind" not in admin.reported_version(rows["a-in-sync"])
    assert "never" in text_of(admin.last_seen(rows["c-never-reported"]))
    assert "offline" in text_of(admin.last_seen(rows["d-offline"]))
    assert "ss-dot--offline" not in admin.last_seen(rows["a-in-sync"])
    for column in ("column-drift", "column-target", "column-fetched_version", "column-reported_version"):
        assert column in content
    assert "sensorsync/sensorsync.css" in content


# Session, user, the count, the page of rows (with their sensor counts and drafts), their labels, the filter's own
# "all" count, and the provisioning keys that registered a device (the "registered by" filter).
DEVICE_CHANGELIST_FILTERED_QUERIES = 7


@pytest.mark.parametrize("state", ["in_sync", "drifting", "never_reported", "offline"])
def test_filtered_device_list_query_count_does_not_grow(admin_browser, superuser, django_assert_num_queries, state):
    for index in range(30):
        device = device_with("temp-1", "temp-2", name=f"device-{index:02d}", user=superuser)
        if index % 3 == 0:
            agent_for(device).deploy_all()
        elif index % 3 == 1:
            agent_for(device).deploy_failing("temp-2", ERROR)

    with django_assert_num_queries(DEVICE_CHANGELIST_FILTERED_QUERIES):
        response = admin_browser.get(f"{DEVICES}?drift={state}")

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) >= 10


# --- status badges wherever a sensor's status shows ---


def test_sensor_list_shows_status_badges_versions_and_errors(admin_browser, superuser):
    boiler = device_with("deployed-1", "failed-1", name="boiler", user=superuser)
    agent_for(boiler).deploy_failing("failed-1", ERROR)
    press = device_with("changed-1", name="press", user=superuser)
    agent_for(press).deploy_all()
    sensor_update(device_uuid=press.uuid, name="changed-1", data={"pollInterval": 750}, partial=True, user=superuser)
    sensor_create(device_uuid=press.uuid, data=SensorPayloadFactory(name="new-1"), user=superuser)

    response = admin_browser.get(SENSORS)

    content = response.content.decode()
    admin = response.context["cl"].model_admin
    rows = {row.name: row for row in response.context["cl"].result_list}
    assert {name: text_of(admin.status(row)) for name, row in rows.items()} == {
        "changed-1": "reconciling",
        "deployed-1": "deployed",
        "failed-1": "failed",
        "new-1": "pending",
    }
    for status in Status.values:
        assert f'class="ss-badge ss-badge--{status}"' in content
    assert text_of(admin.error(rows["failed-1"])) == ERROR
    assert text_of(admin.version(rows["changed-1"])) == "v2 / v4"  # runs v2, target is v4
    assert text_of(admin.version(rows["new-1"])) == "v4 / v4"
    assert text_of(admin.version(rows["failed-1"])) == "v3 / v3"
    assert f'href="{change_url(boiler)}"' in content  # the device column links to the device page


def test_sensor_page_shows_its_status_as_a_badge_and_its_error(admin_browser, superuser):
    device = device_with("temp-1", user=superuser)
    agent_for(device).deploy_failing("temp-1", ERROR)
    row = DeviceSensor.objects.get(device=device)

    content = admin_browser.get(f"{SENSORS}{row.pk}/change/").content.decode()

    assert '<span class="ss-badge ss-badge--failed">failed</span>' in content
    assert f'<span class="ss-error" title="{ERROR}">{ERROR}</span>' in content


# --- the device page: its sensors with their errors, and why it is not converged ---


def test_device_page_lists_its_sensors_with_errors_and_says_why_not_converged(admin_browser, superuser):
    device = device_with("temp-1", "temp-2", name="boiler", user=superuser)
    agent_for(device).deploy_failing("temp-2", ERROR)

    response = admin_browser.get(change_url(device))

    content = response.content.decode()
    panel = response.context["convergence"]
    assert (panel["stage"], panel["inSync"], panel["label"]) == ("sensors_failed", False, "Sensors failing")
    assert panel["reason"] == "The agent applied version 3, but some sensors do not run as desired."
    assert [(s["name"], s["deploymentStatus"], s["deploymentError"]) for s in panel["sensors"]] == [
        ("temp-2", Status.FAILED, ERROR)
    ]
    assert [(step["label"], step["value"]) for step in panel["steps"]] == [
        ("Target", "v3"),
        ("Fetched by the agent", "v3"),
        ("Applied (reported)", "v3"),
        ("Sensors deployed", "1 of 2"),
    ]
    panel_html = content[content.index('id="convergence"') : content.index('id="device-sensors"')]
    assert "Why not converged" in panel_html and ERROR in panel_html
    sensors_html = content[content.index('id="device-sensors"') :]
    assert '<span class="ss-badge ss-badge--failed">failed</span>' in sensors_html
    assert '<span class="ss-badge ss-badge--deployed">deployed</span>' in sensors_html
    assert f'<span class="ss-error">{ERROR}</span>' in sensors_html


@pytest.mark.parametrize(
    ("setup", "stage", "reason"),
    [
        ("nothing", "never_fetched", "The agent has never fetched its target state."),
        ("poll", "never_reported", "The agent fetched version 2 but has never reported what it runs."),
        ("deploy", "in_sync", "The agent runs target version 2 exactly."),
        ("deploy_then_edit", "not_fetched", "The agent last fetched version 2; target version 3 is waiting"),
    ],
)
def test_device_page_panel_follows_the_loop(admin_browser, superuser, setup, stage, reason):
    device = device_with("temp-1", user=superuser)
    agent = agent_for(device)
    if setup == "poll":
        agent.poll()
    elif setup.startswith("deploy"):
        agent.deploy_all()
    if setup == "deploy_then_edit":
        sensor_update(device_uuid=device.uuid, name="temp-1", data={"enabled": False}, partial=True, user=superuser)

    response = admin_browser.get(change_url(device))

    panel = response.context["convergence"]
    assert panel["stage"] == stage
    assert panel["reason"].startswith(reason)
    heading = "Converged" if stage == "in_sync" else "Why not converged"
    assert f'<h2 id="convergence-heading">\n    {heading}' in response.content.decode()


# Session, user, the device (with its states, its draft, the target's author and its sensor counts), its labels (the
# inline), its sensor rows, the drifting rows (drift_explain), the open drift episode, the target history and the
# history's authors, its log's latest warnings and errors: a constant number, whatever the number of sensors, versions
# and log lines.
DEVICE_PAGE_QUERIES = 9


def test_device_page_query_count_does_not_grow_with_sensors_or_versions(
    admin_browser, superuser, django_assert_num_queries
):
    small = device_with("temp-1", "temp-2", user=superuser)
    agent_for(small).deploy_failing("temp-2", ERROR)
    big = device_with(*(f"temp-{n}" for n in range(40)), user=superuser)
    agent_for(big).deploy_failing("temp-3", ERROR)
    for n in range(5):
        sensor_update(device_uuid=big.uuid, name=f"temp-{n}", data={"pollInterval": 700 + n}, partial=True, user=None)
    assert DeviceTargetStateVersion.objects.filter(device=big).count() > 40
    admin_browser.get(change_url(small))  # warms the content-type cache the admin's log entries use

    with django_assert_num_queries(DEVICE_PAGE_QUERIES):
        assert admin_browser.get(change_url(small)).status_code == 200
    with django_assert_num_queries(DEVICE_PAGE_QUERIES):
        response = admin_browser.get(change_url(big))
    assert len(response.context["sensors"]) == 40
    # The 5 updates in flight (the failed temp-3 among them, pending again at the new version).
    assert len(response.context["convergence"]["sensors"]) == 5


# --- reconcile now ---


def test_reconcile_now_reprojects_the_rows_and_says_what_it_found(admin_browser, superuser):
    device = device_with("temp-1", "temp-2", name="boiler", user=superuser)
    agent_for(device).deploy_failing("temp-2", ERROR)
    # The read model was damaged behind the service's back (what "reconcile now" is there to repair).
    DeviceSensor.objects.filter(device=device).update(deployment_status=Status.PENDING, deployment_error="")
    page = admin_browser.get(change_url(device)).content.decode()
    assert 'id="reconcile-now"' in page

    response = admin_browser.post(f"{DEVICES}{device.pk}/reconcile/", follow=True)

    assert response.redirect_chain == [(change_url(device), 302)]
    assert dict(DeviceSensor.objects.filter(device=device).values_list("name", "deployment_status")) == {
        "temp-1": Status.DEPLOYED,
        "temp-2": Status.FAILED,
    }
    assert DeviceSensor.objects.get(device=device, name="temp-2").deployment_error == ERROR
    [message] = messages_of(response)
    assert message.startswith("Reconciled “boiler”: not in sync (target v3, reported v3; not deployed: temp-2)")
    assert "2 sensor row(s) changed" in message


def test_reconcile_now_is_post_only_csrf_protected_and_needs_the_change_permission(superuser):
    device = device_with("temp-1", user=superuser)
    url = f"{DEVICES}{device.pk}/reconcile/"
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(superuser)
    assert csrf_client.get(url).status_code == 405
    assert csrf_client.post(url).status_code == 403  # no CSRF token

    viewer = Client()
    viewer.force_login(UserFactory(permissions=["devices.view_device"]))
    assert viewer.post(url).status_code == 403
    assert viewer.get(change_url(device)).status_code == 200
    assert 'id="reconcile-now"' not in viewer.get(change_url(device)).content.decode()


def test_reconcile_action_on_selected_devices(admin_browser, fleet):
    selection = {"action": "reconcile_now", "_selected_action": [d.pk for d in fleet.values()]}

    response = admin_browser.post(DEVICES, selection, follow=True)

    shown = messages_of(response)
    assert len(shown) == 4
    assert sum("in sync at target version" in message for message in shown) == 2
    assert any("“b-drifting”: not in sync" in message for message in shown)


# --- roll back to a version ---


def rollback_url(device, version: int) -> str:
    return f"{DEVICES}{device.pk}/rollback/{version}/"


def test_target_history_has_a_rollback_button_per_earlier_version(admin_browser, superuser):
    device = device_with("temp-1", "temp-2", user=superuser)

    content = admin_browser.get(change_url(device)).content.decode()

    assert f'href="{rollback_url(device, 2)}"' in content
    assert f'href="{rollback_url(device, 1)}"' in content
    assert f'href="{rollback_url(device, 3)}"' not in content  # the current version
    assert "added temp-2" in content and "device created" in content


def test_rollback_asks_first_and_writes_nothing_until_confirmed(admin_browser, superuser):
    device = device_with("temp-1", "temp-2", user=superuser)
    before = (DeviceTargetState.objects.get(device=device).version, Event.objects.count())

    response = admin_browser.get(rollback_url(device, 2))

    assert response.status_code == 200
    content = response.content.decode()
    assert "Roll back" in content and "v4" in content  # the new version it will write
    assert response.context["removed"] == ["temp-2"]
    assert 'id="confirm-rollback"' in content and 'name="target_version" value="3"' in content
    assert (DeviceTargetState.objects.get(device=device).version, Event.objects.count()) == before


def test_rollback_writes_a_new_version_with_the_old_content(admin_browser, superuser):
    device = device_with("temp-1", "temp-2", name="boiler", user=superuser)
    old = DeviceTargetStateVersion.objects.get(device=device, version=2)

    response = admin_browser.post(rollback_url(device, 2), {"post": "yes", "target_version": "3"}, follow=True)

    assert response.redirect_chain == [(change_url(device), 302)]
    target = DeviceTargetState.objects.get(device=device)
    assert (target.version, target.config) == (4, old.config)
    history = DeviceTargetStateVersion.objects.get(device=device, version=4)
    assert history.change == {"removed": ["temp-2"], "rollback_to": 2}
    assert history.source == "admin" and history.created_by == superuser
    assert list(DeviceSensor.objects.filter(device=device).values_list("name", flat=True)) == ["temp-1"]
    assert messages_of(response) == [
        "Rolled “boiler” back to the content of version 2: the target is now version 4; the agent applies it on "
        "its next poll."
    ]


def test_rollback_is_refused_when_the_target_changed_since_the_confirmation(admin_browser, superuser):
    device = device_with("temp-1", "temp-2", user=superuser)
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="temp-3"), user=superuser)  # now v4

    response = admin_browser.post(rollback_url(device, 2), {"post": "yes", "target_version": "3"}, follow=True)

    assert response.redirect_chain == [(rollback_url(device, 2), 302)]
    assert DeviceTargetState.objects.get(device=device).version == 4
    [message] = messages_of(response)
    assert "changed since the confirmation was shown (it is now version 4)" in message
    assert response.context["removed"] == ["temp-2", "temp-3"]  # the page shows the new picture


def test_rollback_of_the_current_or_an_unknown_version(admin_browser, superuser):
    device = device_with("temp-1", user=superuser)

    current = admin_browser.get(rollback_url(device, 2))
    assert current.status_code == 200
    assert "nothing to" in current.content.decode() and 'id="confirm-rollback"' not in current.content.decode()
    assert admin_browser.get(rollback_url(device, 9)).status_code == 404
    same = admin_browser.post(rollback_url(device, 2), {"post": "yes", "target_version": "2"}, follow=True)
    assert "nothing to roll back" in messages_of(same)[0]
    assert DeviceTargetState.objects.get(device=device).version == 2


def test_rollback_needs_csrf_and_the_change_permission(superuser):
    device = device_with("temp-1", "temp-2", user=superuser)
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.force_login(superuser)
    assert csrf_client.post(rollback_url(device, 2), {"post": "yes", "target_version": "3"}).status_code == 403
    viewer = Client()
    viewer.force_login(UserFactory(permissions=["devices.view_device"]))
    assert viewer.get(rollback_url(device, 2)).status_code == 403
    assert viewer.post(rollback_url(device, 2), {"post": "yes", "target_version": "3"}).status_code == 403
    assert DeviceTargetState.objects.get(device=device).version == 3


# --- rotate the key from the device page ---


def test_rotate_key_from_the_device_page_asks_then_shows_the_new_key_once(admin_browser, superuser):
    device = device_with(user=superuser)
    old_digest = device.api_key_digest

    confirmation = admin_browser.get(f"{DEVICES}{device.pk}/rotate-key/")
    assert confirmation.status_code == 200 and "Yes, rotate the keys" in confirmation.content.decode()
    assert Device.objects.get(pk=device.pk).api_key_digest == old_digest

    response = admin_browser.post(f"{DEVICES}{device.pk}/rotate-key/", {"post": "yes"}, follow=True)

    assert response.redirect_chain == [(change_url(device), 302)]
    [key] = shown_keys(response)
    assert Device.objects.get(pk=device.pk).api_key_digest != old_digest
    assert key not in admin_browser.get(change_url(device)).content.decode()
    assert Event.objects.filter(type=EventTypeChoices.DEVICE_KEY_ROTATED, aggregate_id=str(device.uuid)).count() == 1


# --- the JSON editor ---


def test_sensor_form_edits_json_in_the_vendored_json_editor(admin_browser, device):
    response = admin_browser.get(f"{SENSORS}add/?device={device.pk}")

    content = response.content.decode()
    for field, kind in (("connection", "object"), ("data_points", "array"), ("metadata", "object")):
        widget = response.context["adminform"].form.fields[field].widget
        assert widget.attrs["data-json-editor"] == "true"
        assert widget.attrs["data-json-type"] == kind
    assert 'data-json-optional="true"' in content  # data points and metadata may be left empty
    assert "/static/sensorsync/json-editor.js" in content and "/static/sensorsync/json-editor.css" in content
    # Served from the project's own static files: no CDN, nothing from outside.
    assert finders.find("sensorsync/json-editor.js") and finders.find("sensorsync/json-editor.css")
    # A new sensor's connection starts empty, not as the JSON text "null".
    assert '<textarea name="connection"' in content and ">\nnull</textarea>" not in content


def test_static_files_load_nothing_from_outside():
    for path in ("sensorsync/json-editor.js", "sensorsync/json-editor.css", "sensorsync/sensorsync.css"):
        with open(finders.find(path)) as static_file:
            text = static_file.read()
        assert "http://" not in text and "https://" not in text and "@import" not in text, path


# --- events and the header ---


def test_event_list_colours_the_loop_and_links_to_the_device(admin_browser, fleet):
    content = admin_browser.get(EVENTS).content.decode()

    assert '<span class="ss-badge ss-badge--in_sync">device.in_sync</span>' in content
    assert '<span class="ss-badge ss-badge--drifting">device.config_drift</span>' in content
    assert f'href="{DEVICES}?q={fleet["drifting"].uuid}"' in content


def test_every_admin_page_links_to_the_fleet_page(admin_browser, device):
    for url in ("/admin/", DEVICES, change_url(device), SENSORS):
        assert 'href="/fleet/" id="fleet-link"' in admin_browser.get(url).content.decode(), url
