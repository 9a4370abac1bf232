"""The fleet configuration's admin pages through Django's test client: each write a service call, a change that
reaches devices previewed device by device before it is applied, refusals on the form, each device's page saying
where every field came from, and the pages' query counts."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.models import DeviceLabel
from fleetconfig import services
from fleetconfig.models import Assignment, RenderJob, SensorOverride, SensorTemplate
from reconciliation.services.sensors import sensor_create
from sensors.models import DeviceSensor
from tests.admin.test_admin import form_data, messages_of, text_of
from tests.factories import SensorPayloadFactory

from .conftest import desired_sensors, labelled_device, make_template, target_version, template_sensor

# Transactional: each admin save commits as in production, so the re-render it starts runs before the next page.
pytestmark = pytest.mark.django_db(transaction=True)

ADMIN = "/admin/fleetconfig"


@pytest.fixture
def boilers(db):
    return [labelled_device({"plant": "3", "role": "boiler"}, name=f"boiler-{n}") for n in range(3)]


def test_a_template_is_added_and_a_change_of_it_is_previewed_then_applied(admin_browser, boilers):
    page = admin_browser.get(f"{ADMIN}/sensortemplate/add/")
    data = form_data(page, "sensortemplate_form") | {
        "name": "boiler-temp",
        "sensors": json.dumps([template_sensor("t1")]),
    }
    response = admin_browser.post(f"{ADMIN}/sensortemplate/add/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    template = SensorTemplate.objects.get()
    services.assignment_create(user=None, name="boilers", template=str(template.uuid), selector="role=boiler")
    assert all(set(desired_sensors(d)) == {"t1"} for d in boilers)

    url = f"{ADMIN}/sensortemplate/{template.pk}/change/"
    data = form_data(admin_browser.get(url), "sensortemplate_form")
    assert json.loads(data["sensors"]) == [template_sensor("t1")] and data["version"] == "1"
    changed = data | {"sensors": json.dumps([template_sensor("t1", pollInterval=1000)]), "note": "faster"}

    preview = admin_browser.post(url, changed)

    assert preview.status_code == 200
    shown = text_of(preview.content.decode())
    assert "Preview: template boiler-temp v2" in shown
    assert "It reaches 3 devices: 3 would change, 0 would not" in shown
    assert "pollInterval : 5000 → 1000" in shown and "boiler-0" in shown
    assert SensorTemplate.objects.get().version == 1  # nothing saved yet

    applied = admin_browser.post(url, form_data(preview, "preview-apply"), follow=True)
    assert SensorTemplate.objects.get().version == 2
    assert any("Re-rendered 3 devices: 3 changed" in m for m in messages_of(applied)), messages_of(applied)
    assert all(desired_sensors(d)["t1"]["pollInterval"] == 1000 for d in boilers)
    history = text_of(admin_browser.get(url).content.decode())
    assert "v2" in history and "faster" in history


def test_an_assignment_is_previewed_then_applied_and_its_page_shows_its_reach(admin_browser, boilers):
    template = make_template("boiler-temp", template_sensor("t1"))
    labelled_device({"plant": "3", "role": "chiller"}, name="chiller")
    page = admin_browser.get(f"{ADMIN}/assignment/add/")
    data = form_data(page, "assignment_form") | {
        "name": "plant-3-boilers",
        "template": str(template.pk),
        "selector": "plant=3, role=boiler",
        "priority": "5",
    }

    preview = admin_browser.post(f"{ADMIN}/assignment/add/", data)

    assert preview.status_code == 200 and not Assignment.objects.exists()
    shown = text_of(preview.content.decode())
    assert "It reaches 3 devices: 3 would change" in shown and "+ t1" in shown and "chiller" not in shown
    applied = admin_browser.post(f"{ADMIN}/assignment/add/", form_data(preview, "preview-apply"), follow=True)
    assignment = Assignment.objects.get()
    assert assignment.selector == "plant=3,role=boiler"  # stored in its canonical form
    assert any("Re-rendered 3 devices: 3 changed" in m for m in messages_of(applied)), messages_of(applied)
    assert all(set(desired_sensors(d)) == {"t1"} for d in boilers)

    change_url = f"{ADMIN}/assignment/{assignment.pk}/change/"
    page = admin_browser.get(change_url)
    assert "3 devices selected, 0 converged, 0 with problems" in text_of(page.content.decode())
    # A new description renders nothing differently: saved at once, no preview, no re-render.
    jobs = RenderJob.objects.count()
    response = admin_browser.post(change_url, form_data(page, "assignment_form") | {"description": "Plant 3"})
    assert response.status_code == 302 and Assignment.objects.get().description == "Plant 3"
    assert RenderJob.objects.count() == jobs
    listing = text_of(admin_browser.get(f"{ADMIN}/assignment/").content.decode())
    assert "plant-3-boilers" in listing and "plant=3,role=boiler" in listing and "v1 (latest)" in listing


def test_an_invalid_selector_is_shown_on_its_field_and_nothing_is_saved(admin_browser, boilers):
    template = make_template("boiler-temp")
    data = form_data(admin_browser.get(f"{ADMIN}/assignment/add/"), "assignment_form") | {
        "name": "broken",
        "template": str(template.pk),
        "selector": "plant in (3",
        "priority": "0",
    }
    response = admin_browser.post(f"{ADMIN}/assignment/add/", data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "position" in errors["selector"][0]
    assert not Assignment.objects.exists()


def test_deleting_an_assignment_shows_what_goes_and_takes_it_away(admin_browser, boilers):
    change = services.assignment_create(
        user=None, name="boilers", template=str(make_template("t", template_sensor("t1")).uuid), selector="role=boiler"
    )
    url = f"{ADMIN}/assignment/{change.instance.pk}/delete/"
    confirmation = text_of(admin_browser.get(url).content.decode())
    assert "It reaches 3 devices: 3 would change" in confirmation and "- t1" in confirmation
    response = admin_browser.post(url, {"post": "yes"}, follow=True)
    assert response.status_code == 200 and not Assignment.objects.exists()
    assert all(desired_sensors(d) == {} for d in boilers)
    assert any("Re-rendered 3 devices: 3 changed" in m for m in messages_of(response))


def test_a_device_page_shows_where_each_field_came_from_and_one_field_is_overridden_from_it(admin_browser, boilers):
    device = boilers[0]
    services.assignment_create(
        user=None,
        name="boilers",
        template=str(make_template("boiler-temp", template_sensor("t1")).uuid),
        selector="role=boiler",
        priority=3,
    )
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="own-1"), user=None)
    url = f"{ADMIN}/deviceconfiguration/{device.pk}/change/"
    page = admin_browser.get(url)
    shown = text_of(page.content.decode())
    assert "template boiler-temp v1 via assignment boilers (priority 3)" in shown
    assert "the device's own sensor" in shown and "the device itself" in shown
    assert "plant=3" in shown and "role=boiler" in shown

    links = [line for line in page.content.decode().split('"') if "sensoroverride/add/" in line]
    poll_link = next(link for link in links if "field=pollInterval" in link).replace("&amp;", "&")
    form = admin_browser.get(poll_link)
    data = form_data(form, "sensoroverride_form")
    assert (data["device"], data["sensor_name"], data["field"], data["value"]) == (
        str(device.pk),
        "t1",
        "pollInterval",
        "5000",
    )
    response = admin_browser.post(poll_link.split("?")[0], data | {"value": "1000"})
    assert response.status_code == 302 and response["Location"] == url
    assert desired_sensors(device)["t1"]["pollInterval"] == 1000
    assert desired_sensors(boilers[1])["t1"]["pollInterval"] == 5000
    shown = text_of(admin_browser.get(url).content.decode())
    assert "override on this device" in shown and "t1.pollInterval = 1000" in shown

    bad = admin_browser.post(
        poll_link.split("?")[0], data | {"sensor_name": "t1", "field": "connection.port"} | {"value": "[1"}
    )
    assert bad.status_code == 200 and SensorOverride.objects.count() == 1


def test_an_override_the_service_refuses_is_shown_on_the_form(admin_browser, boilers):
    services.assignment_create(
        user=None, name="boilers", template=str(make_template("t", template_sensor("t1")).uuid), selector="role=boiler"
    )
    data = form_data(admin_browser.get(f"{ADMIN}/sensoroverride/add/"), "sensoroverride_form") | {
        "device": str(boilers[0].pk),
        "sensor_name": "t1",
        "field": "pollInterval",
        "value": "5",
    }
    response = admin_browser.post(f"{ADMIN}/sensoroverride/add/", data)
    assert response.status_code == 200
    assert "value" in response.context["adminform"].form.errors
    assert not SensorOverride.objects.exists()


def test_a_rendered_sensor_cannot_be_edited_in_the_sensor_admin(admin_browser, boilers):
    services.assignment_create(
        user=None, name="boilers", template=str(make_template("t", template_sensor("t1")).uuid), selector="role=boiler"
    )
    version = target_version(boilers[0])
    row = DeviceSensor.objects.get(device=boilers[0], name="t1")
    url = f"/admin/sensors/devicesensor/{row.pk}/change/"
    data = form_data(admin_browser.get(url), "devicesensor_form")
    response = admin_browser.post(url, data | {"poll_interval": "750"})
    assert response.status_code == 200
    errors = " ".join(response.context["adminform"].form.errors["name"])
    assert "override" in errors and "assignment 'boilers'" in errors
    assert target_version(boilers[0]) == version


def test_the_lists_and_pages_load_in_a_bounded_number_of_queries(admin_browser, boilers, settings):
    template = make_template("boiler-temp", template_sensor("t1"))
    for index in range(3):
        services.assignment_create(
            user=None, name=f"a{index}", template=str(template.uuid), selector=f"role=boiler,i!={index}"
        )
    for device in boilers:
        DeviceLabel.objects.create(device=device, key="zone", value="north")
        services.sensor_override_set(device_uuid=device.uuid, sensor_name="t1", field="enabled", value=False, user=None)
    settings.SENSORSYNC_RENDER_INLINE_MAX_DEVICES = 0
    services.render_request(scope={"all": True}, reason="queued", user=None)
    counts = {}
    for path in ("sensortemplate", "assignment", "sensoroverride", "renderjob", "deviceconfiguration"):
        with CaptureQueriesContext(connection) as queries:
            response = admin_browser.get(f"{ADMIN}/{path}/")
        assert response.status_code == 200, path
        counts[path] = len(queries)
    for device in boilers:
        labelled_device({"zone": "south"})
        services.sensor_override_set(
            device_uuid=device.uuid, sensor_name="t1", field="pollInterval", value=900, user=None
        )
    services.assignment_create(user=None, name="a9", template=str(template.uuid), selector="zone=south")
    services.render_request(scope={"all": True}, reason="queued", user=None)
    for path, before in counts.items():
        with CaptureQueriesContext(connection) as queries:
            admin_browser.get(f"{ADMIN}/{path}/")
        assert len(queries) == before, (path, before, len(queries))
    job = RenderJob.objects.latest("id")
    page = text_of(admin_browser.get(f"{ADMIN}/renderjob/{job.pk}/change/").content.decode())
    assert "queued" in page and "Every device" in page


def test_a_used_template_offers_no_delete(admin_browser):
    template = make_template("used")
    services.assignment_create(user=None, name="a", template=str(template.uuid), selector="x=1")
    assert admin_browser.get(f"{ADMIN}/sensortemplate/{template.pk}/delete/").status_code == 403
