"""Labels and drafts in the admin: the labels inline, the "set or remove labels" action, the selector filter on the
device and sensor lists, draft mode with its panel and the deploy / discard buttons, sensors edited in a draft, and
a provisioning key's default labels. Every write goes through the services (asserted through their events)."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from devices.models import Device, DeviceLabel, DeviceTargetDraft, ProvisioningKey
from devices.services import device_update
from events.models import Event
from reconciliation.services.sensors import sensor_create
from reconciliation.services.targets import target_state_update
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory, SensorPayloadFactory, UserFactory
from tests.helpers import sensor_payload, target_of

from .test_admin import DEVICES, SENSORS, form_data, messages_of

pytestmark = pytest.mark.django_db


def change_url(device) -> str:
    return f"{DEVICES}{device.pk}/change/"


def labels_of(device) -> dict[str, str]:
    return dict(DeviceLabel.objects.filter(device=device).order_by("key").values_list("key", "value"))


def listed(response) -> list[str]:
    return [str(obj) for obj in response.context["cl"].result_list]


# --- the labels inline ---


def test_the_labels_inline_saves_the_whole_set_through_the_service(admin_browser):
    device = DeviceFactory(name="boiler-7", labels={"plant": "3", "old": "x"})
    data = form_data(admin_browser.get(change_url(device)), "device_form")
    rows = {data[f"labels-{i}-key"]: i for i in range(int(data["labels-INITIAL_FORMS"]))}
    data[f"labels-{rows['plant']}-value"] = "4"
    data[f"labels-{rows['old']}-DELETE"] = "on"
    new = int(data["labels-TOTAL_FORMS"]) - 1  # the empty extra row
    data |= {f"labels-{new}-key": "role", f"labels-{new}-value": "boiler"}

    response = admin_browser.post(change_url(device), data)

    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else None
    assert labels_of(device) == {"plant": "4", "role": "boiler"}
    event = Event.objects.filter(aggregate_id=str(device.uuid), type="device.labels_changed").latest("sequence")
    assert event.data == {"before": {"old": "x", "plant": "3"}, "after": {"plant": "4", "role": "boiler"}}
    assert event.metadata["source"] == "admin"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("-plant", "3", "The label key '-plant' is not 1 to 63 characters"),
        ("plant", "a b", "The label value 'a b' is not 1 to 63 characters"),
        ("Example.com/x", "1", "is not a DNS subdomain"),
    ],
)
def test_a_bad_label_is_shown_on_its_row_and_nothing_is_written(admin_browser, key, value, message):
    device = DeviceFactory(name="boiler-7", labels={"plant": "3"})
    data = form_data(admin_browser.get(change_url(device)), "device_form")
    new = int(data["labels-TOTAL_FORMS"]) - 1
    data |= {"name": "renamed", f"labels-{new}-key": key, f"labels-{new}-value": value}

    response = admin_browser.post(change_url(device), data)

    assert response.status_code == 200
    assert message in response.content.decode().replace("&#x27;", "'")
    device.refresh_from_db()
    assert (device.name, labels_of(device)) == ("boiler-7", {"plant": "3"})


# --- the bulk action ---


def test_the_labels_action_asks_then_sets_and_removes_on_the_selected_devices(admin_browser):
    picked = [DeviceFactory(name=f"pick-{n}", labels={"old": "1"}) for n in range(3)]
    left = DeviceFactory(name="left", labels={"old": "1"})
    selected = {"action": "labels_change", ACTION_CHECKBOX_NAME: [d.pk for d in picked]}

    form = admin_browser.post(DEVICES, selected)
    assert form.status_code == 200
    assert 'id="labels-form"' in form.content.decode()
    assert all(labels_of(d) == {"old": "1"} for d in picked)

    bad = admin_browser.post(DEVICES, {**selected, "apply": "yes", "set": "plant=3, role", "remove": ""})
    assert bad.status_code == 200 and "“role” is not key=value." in bad.content.decode()
    bad = admin_browser.post(DEVICES, {**selected, "apply": "yes", "set": "plant=a b", "remove": ""})
    assert "The label value &#x27;a b&#x27;" in bad.content.decode()

    done = admin_browser.post(
        DEVICES, {**selected, "apply": "yes", "set": "plant=3\nrole=boiler", "remove": "old"}, follow=True
    )

    assert "Labels changed on 3 of the 3 selected device(s)." in messages_of(done)
    assert [labels_of(d) for d in picked] == [{"plant": "3", "role": "boiler"}] * 3
    assert labels_of(left) == {"old": "1"}


# --- the selector filter ---


def test_the_selector_filters_the_device_and_sensor_lists(admin_browser, superuser):
    for name, labels in (("a-boiler", {"plant": "3", "role": "boiler"}), ("b-pump", {"plant": "3", "role": "pump"})):
        device = DeviceFactory(name=name, labels=labels)
        sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name=f"{name}-temp"), user=superuser)
    DeviceFactory(name="c-bare")

    devices = admin_browser.get(DEVICES, {"selector": "plant=3,role!=pump"})
    assert [d.split(" (")[0] for d in listed(devices)] == ["a-boiler"]
    content = devices.content.decode()
    assert 'id="selector-filter"' in content and 'value="plant=3,role!=pump"' in content
    assert "plant=3" in content and 'class="ss-label"' in content  # the labels column
    assert [d.split(" (")[0] for d in listed(admin_browser.get(DEVICES, {"selector": "!plant"}))] == ["c-bare"]

    sensors = admin_browser.get(SENSORS, {"selector": "role=pump"})
    assert [row.name for row in sensors.context["cl"].result_list] == ["b-pump-temp"]

    bad = admin_browser.get(DEVICES, {"selector": "plant in (3"})
    assert bad.status_code == 200
    assert listed(bad) == []
    assert "Invalid selector: expected &#x27;,&#x27; or &#x27;)&#x27;" in bad.content.decode()


# --- drafts ---


@pytest.fixture
def drafted(admin_browser, superuser):
    """A device in draft mode whose draft adds "flow" and slows "temp" (published: "temp" alone, v2)."""
    device = DeviceFactory(name="boiler-room")
    target_state_update(uuid=device.uuid, user=superuser, config={"sensors": [sensor_payload("temp")]})
    device_update(uuid=device.uuid, draft_mode=True, user=superuser)
    sensor_create(device_uuid=device.uuid, data=sensor_payload("flow"), user=superuser)
    return device


def test_draft_mode_is_set_on_the_device_form(admin_browser, device):
    data = form_data(admin_browser.get(change_url(device)), "device_form") | {"draft_mode": "on"}
    assert admin_browser.post(change_url(device), data).status_code == 302
    device.refresh_from_db()
    assert device.draft_mode is True


def test_a_sensor_added_in_draft_mode_goes_to_the_draft(admin_browser, superuser):
    device = DeviceFactory(name="boiler-room", labels={"plant": "3"})
    device_update(uuid=device.uuid, draft_mode=True, user=superuser)
    data = form_data(admin_browser.get(f"{SENSORS}add/?device={device.pk}"), "devicesensor_form")
    data |= {"name": "flow", "protocol": "modbus", "connection": '{"host": "10.0.0.7", "port": 502}'}

    response = admin_browser.post(f"{SENSORS}add/", data, follow=True)

    assert response.redirect_chain[-1][0] == change_url(device) + "#draft"
    assert any("Saved “flow” in the draft of boiler-room" in m for m in messages_of(response))
    assert target_of(device).version == 1 and not DeviceSensor.objects.filter(device=device).exists()
    assert [s["name"] for s in DeviceTargetDraft.objects.get(device=device).config["sensors"]] == ["flow"]
    assert 'id="draft-changes"' in response.content.decode()


def test_a_sensor_edited_in_draft_mode_starts_from_the_draft(admin_browser, drafted, superuser):
    from reconciliation.services.sensors import sensor_update

    sensor_update(device_uuid=drafted.uuid, name="temp", data={"pollInterval": 750}, partial=True, user=superuser)
    row = DeviceSensor.objects.get(device=drafted, name="temp")
    page = admin_browser.get(f"{SENSORS}{row.pk}/change/")
    data = form_data(page, "devicesensor_form")
    assert data["poll_interval"] == "750"  # the draft's, not the published 5000
    assert data["target_version"] == "2-draft-2"

    response = admin_browser.post(f"{SENSORS}{row.pk}/change/", data | {"poll_interval": "1500"})
    assert response.status_code == 302
    drafted_temp = {s["name"]: s for s in DeviceTargetDraft.objects.get(device=drafted).config["sensors"]}["temp"]
    assert drafted_temp["pollInterval"] == 1500
    assert DeviceSensor.objects.get(pk=row.pk).poll_interval == 5000  # published, unchanged

    # Another edit meanwhile: the page's draft revision is stale, and the form says so.
    sensor_update(device_uuid=drafted.uuid, name="temp", data={"enabled": False}, partial=True, user=superuser)
    stale = admin_browser.post(f"{SENSORS}{row.pk}/change/", data | {"poll_interval": "2000"})
    assert stale.status_code == 200
    assert "changed since this page was loaded" in stale.content.decode()


def test_the_device_page_shows_the_draft_and_deploys_it(admin_browser, drafted):
    page = admin_browser.get(change_url(drafted)).content.decode()
    assert 'id="draft"' in page and 'id="deploy-draft"' in page and 'id="discard-draft"' in page
    assert "flow" in page and "ss-badge--draft-added" in page
    listed_page = admin_browser.get(DEVICES).content.decode()
    assert "draft · 1 change" in listed_page

    etag = DeviceTargetDraft.objects.get(device=drafted).etag
    response = admin_browser.post(f"{DEVICES}{drafted.pk}/deploy/", {"etag": etag.strip('"')}, follow=True)

    assert any("Deployed the draft of “boiler-room”" in m for m in messages_of(response))
    assert target_of(drafted).version == 3
    assert {s["name"] for s in target_of(drafted).config["sensors"]} == {"temp", "flow"}
    assert not DeviceTargetDraft.objects.filter(device=drafted).exists()
    deployed = Event.objects.get(aggregate_id=str(drafted.uuid), type="target_state.draft_deployed")
    assert deployed.metadata["source"] == "admin" and deployed.data["version"] == 3
    assert admin_browser.get(f"{DEVICES}{drafted.pk}/deploy/").status_code == 405


def test_a_stale_deploy_button_is_refused_and_discard_drops_the_draft(admin_browser, drafted, superuser):
    shown = DeviceTargetDraft.objects.get(device=drafted).etag.strip('"')
    sensor_create(device_uuid=drafted.uuid, data=sensor_payload("level"), user=superuser)

    stale = admin_browser.post(f"{DEVICES}{drafted.pk}/deploy/", {"etag": shown}, follow=True)
    assert any("The draft changed since this page was loaded" in m for m in messages_of(stale))
    assert target_of(drafted).version == 2

    discarded = admin_browser.post(f"{DEVICES}{drafted.pk}/deploy/cancel/", {}, follow=True)
    assert any("Discarded the draft" in m for m in messages_of(discarded))
    assert target_of(drafted).version == 2 and not DeviceTargetDraft.objects.filter(device=drafted).exists()


def test_draft_actions_over_selected_devices(admin_browser, drafted, superuser):
    other = DeviceFactory(name="other")

    off = admin_browser.post(
        DEVICES, {"action": "draft_mode_off", ACTION_CHECKBOX_NAME: [drafted.pk, other.pk]}, follow=True
    )
    assert any("Undeployed draft on boiler-room" in m for m in messages_of(off))

    on = admin_browser.post(DEVICES, {"action": "draft_mode_on", ACTION_CHECKBOX_NAME: [other.pk]}, follow=True)
    assert any("Draft mode on for 1 device(s)" in m for m in messages_of(on))
    assert Device.objects.get(pk=other.pk).draft_mode

    deployed = admin_browser.post(
        DEVICES, {"action": "deploy_drafts", ACTION_CHECKBOX_NAME: [drafted.pk, other.pk]}, follow=True
    )
    assert any("Deployed 1 draft(s)." in m for m in messages_of(deployed))
    assert target_of(drafted).version == 3


def test_deploy_buttons_need_the_target_change_permission(client, drafted):
    viewer = UserFactory(permissions=["devices.view_device", "devices.change_device"])
    client.force_login(viewer)

    assert 'id="deploy-draft"' not in client.get(change_url(drafted)).content.decode()
    assert client.post(f"{DEVICES}{drafted.pk}/deploy/", {}).status_code == 403
    assert DeviceTargetDraft.objects.filter(device=drafted).exists()


# --- provisioning keys ---


def test_a_provisioning_key_is_created_with_default_labels(admin_browser):
    url = "/admin/devices/provisioningkey/add/"
    data = form_data(admin_browser.get(url), "provisioningkey_form")

    bad = admin_browser.post(url, data | {"name": "plant 3", "default_labels": "plant=3, -x=1"})
    assert bad.status_code == 200 and not ProvisioningKey.objects.exists()
    assert "The label key &#x27;-x&#x27;" in bad.content.decode()

    response = admin_browser.post(url, data | {"name": "plant 3", "default_labels": "plant=3\nsite=north"})

    assert response.status_code == 302
    key = ProvisioningKey.objects.get()
    assert key.default_labels == {"plant": "3", "site": "north"}
    assert (
        "plant=3, site=north" in admin_browser.get(f"/admin/devices/provisioningkey/{key.pk}/change/").content.decode()
    )
