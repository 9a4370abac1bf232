"""The Django admin, through its real pages: a logged-in superuser's browser (``django.test.Client``) against the
real database. Forms are submitted the way a browser would, from the fields the page actually renders."""

import hashlib
import json
import re
from html.parser import HTMLParser

import pytest
from django.contrib.admin.models import LogEntry
from django.db import connection
from django.test.utils import CaptureQueriesContext

from devices.models import Device, DeviceCurrentState, DeviceLabel
from devices.services import device_update
from events.choices import EventSourceChoices, EventTypeChoices
from events.models import Event
from reconciliation.agent_protocol import report_parse
from reconciliation.services.reports import state_report_apply
from reconciliation.services.sensors import sensor_create, sensor_delete, sensor_update
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory, SensorPayloadFactory, UserFactory
from tests.helpers import target_of

DEVICES = "/admin/devices/device/"
SENSORS = "/admin/sensors/devicesensor/"
EVENTS = "/admin/events/event/"


# --- helpers ---


class _FormFields(HTMLParser):
    """The name/value pairs a browser would submit for the form with the given id (submit buttons left out)."""

    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.inside = False
        self.data: dict[str, str] = {}
        self._textarea: str | None = None
        self._select: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("id") == self.form_id
        if not self.inside:
            return
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "button"):
            if attrs.get("type") == "checkbox":
                if "checked" in attrs:
                    self.data[name] = attrs.get("value") or "on"
            else:
                self.data[name] = attrs.get("value") or ""
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""
        elif tag == "select" and name:
            self._select = name
        # With no option marked selected, a browser submits the first one.
        elif tag == "option" and self._select and ("selected" in attrs or self._select not in self.data):
            self.data[self._select] = attrs.get("value") or ""

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None
        elif tag == "form":
            self.inside = False


def form_data(response, form_id: str) -> dict[str, str]:
    assert response.status_code == 200, response.status_code
    parser = _FormFields(form_id)
    parser.feed(response.content.decode())
    # Django renders a newline right after <textarea>, which browsers drop.
    return {name: value.removeprefix("\n") for name, value in parser.data.items()}


def text_of(html: str) -> str:
    """What a person reads in a piece of HTML: the text, tags dropped, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", str(html)).split())


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def shown_keys(response) -> list[str]:
    return [key for message in messages_of(response) for key in re.findall(r"<code>([^<]+)</code>", message)]


def changelist_queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries.captured_queries)


def target_sensors(device) -> dict[str, dict]:
    return {s["name"]: s for s in target_of(device).config["sensors"]}


def report(device, *, sensors: list[dict], version: int) -> DeviceCurrentState:
    """Store an agent report through the service the agent endpoint calls (its reconciliation re-projects the
    rows, as on the agent path)."""
    device = Device.objects.select_related("target_state").get(pk=device.pk)
    verdict = state_report_apply(
        device=device, report=report_parse({"version": version, "config": {"sensors": sensors}})
    )
    assert verdict.outcome == "applied" and not verdict.reconciliation_failed, verdict
    return DeviceCurrentState.objects.get(device=device)


def make_fleet(count: int, *, user, sensors_per_device: int = 2) -> list[Device]:
    """Devices with sensors, half of them having reported (so the list shows reported versions and statuses)."""
    devices = []
    for index in range(count):
        device = DeviceFactory()
        for protocol in ("modbus", "mqtt", "can")[:sensors_per_device]:
            sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(protocol=protocol), user=user)
        if index % 2:
            state = target_of(device)
            report(device, sensors=state.config["sensors"], version=state.version)
        devices.append(device)
    return devices


def same_input(shown: str, typed: str) -> bool:
    """Whether a re-rendered field shows what was typed (valid JSON comes back indented)."""
    try:
        return json.loads(shown) == json.loads(typed)
    except ValueError:
        return shown == typed


def event_count() -> int:
    return Event.objects.count()


@pytest.fixture
def running_only_sensor(device, superuser) -> DeviceSensor:
    """A sensor removed from the target that the agent still runs: its row has no desired config."""
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="legacy-1"), user=superuser)
    state = target_of(device)
    report(device, sensors=state.config["sensors"], version=state.version)
    sensor_delete(device_uuid=device.uuid, name="legacy-1", user=superuser)
    row = DeviceSensor.objects.get(device=device, name="legacy-1")
    assert row.desired is None and row.running and row.deployment_status == Status.RECONCILING
    return row


# --- changelists: 200 and a query count that does not grow with the rows ---

# Session, user, then the page's own queries (a constant number whatever the number of rows).
DEVICE_CHANGELIST_QUERIES = 7  # ... including the provisioning keys that registered a device (its filter) and labels
SENSOR_CHANGELIST_QUERIES = 5
EVENT_CHANGELIST_QUERIES = 6  # plus the date hierarchy's range and its days


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (DEVICES, DEVICE_CHANGELIST_QUERIES),
        (SENSORS, SENSOR_CHANGELIST_QUERIES),
        (EVENTS, EVENT_CHANGELIST_QUERIES),
    ],
)
def test_changelist_query_count_does_not_grow_with_rows(
    admin_browser, superuser, django_assert_num_queries, url, expected
):
    make_fleet(5, user=superuser)
    with_5_devices = changelist_queries(admin_browser, url)

    make_fleet(25, user=superuser)
    with django_assert_num_queries(expected):
        response = admin_browser.get(url)

    assert response.status_code == 200
    assert with_5_devices == expected
    assert len(response.context["cl"].result_list) >= 30


def test_device_changelist_columns(admin_browser, superuser):
    reported, never = make_fleet(2, user=superuser, sensors_per_device=3)[::-1]
    sensor_create(device_uuid=never.uuid, data=SensorPayloadFactory(), user=superuser)

    response = admin_browser.get(DEVICES)

    rows = {device.pk: device for device in response.context["cl"].result_list}
    admin = response.context["cl"].model_admin
    assert admin.sensor_count(rows[reported.pk]) == 3
    assert admin.sensor_count(rows[never.pk]) == 4
    assert admin.target_version(rows[reported.pk]) == 4
    assert text_of(admin.target(rows[reported.pk])) == "v4"
    assert text_of(admin.reported_version(rows[reported.pk])) == "v4"
    assert admin.converged(rows[reported.pk]) is True
    assert text_of(admin.reported_version(rows[never.pk])) == "-"
    assert admin.converged(rows[never.pk]) is False
    assert 'class="ss-badge ss-badge--in_sync">in sync<' in admin.drift(rows[reported.pk])
    assert 'class="ss-badge ss-badge--never_reported">never reported<' in admin.drift(rows[never.pk])


def test_device_changelist_search_and_filters(admin_browser, superuser):
    in_sync, pending = make_fleet(2, user=superuser)[::-1]
    device_update(uuid=pending.uuid, user=superuser, is_active=False)

    def listed(query: str) -> set[int]:
        response = admin_browser.get(DEVICES + query)
        assert response.status_code == 200
        return {device.pk for device in response.context["cl"].result_list}

    assert listed(f"?q={str(pending.uuid)[:13]}") == {pending.pk}
    assert listed(f"?q={in_sync.name}") == {in_sync.pk}
    assert listed("?is_active__exact=0") == {pending.pk}
    assert listed("?drift=never_reported") == {pending.pk}
    assert listed("?drift=in_sync") == {in_sync.pk}
    assert listed("?o=8") == {in_sync.pk, pending.pk}  # sortable by sensor count


def test_sensor_changelist_filters_and_search(admin_browser, superuser):
    reported, never = make_fleet(2, user=superuser)[::-1]

    def listed(query: str) -> set[tuple[str, str]]:
        response = admin_browser.get(SENSORS + query)
        assert response.status_code == 200
        return {(row.device.name, row.protocol) for row in response.context["cl"].result_list}

    assert listed("?protocol__exact=mqtt") == {(reported.name, "mqtt"), (never.name, "mqtt")}
    assert listed("?deployment_status__exact=pending") == {(never.name, "modbus"), (never.name, "mqtt")}
    assert listed("?running__exact=1") == {(reported.name, "modbus"), (reported.name, "mqtt")}
    assert listed("?synced_to_config__exact=1&protocol__exact=modbus") == {(reported.name, "modbus")}
    assert listed("?enabled__exact=0") == set()
    assert listed(f"?q={reported.uuid}") == {(reported.name, "modbus"), (reported.name, "mqtt")}
    assert listed(f"?q={never.name}") == {(never.name, "modbus"), (never.name, "mqtt")}
    name = DeviceSensor.objects.filter(device=never, protocol="mqtt").get().name
    assert listed(f"?q={name}") == {(never.name, "mqtt")}


# --- devices: every write through devices.services ---


def test_add_device_creates_it_through_the_service_and_shows_the_key_once(admin_browser):
    page = admin_browser.get(DEVICES + "add/")
    data = form_data(page, "device_form") | {"name": "press-7", "description": "Hall B"}

    response = admin_browser.post(DEVICES + "add/", data, follow=True)

    assert response.status_code == 200
    device = Device.objects.get(name="press-7")
    assert device.description == "Hall B"
    assert target_of(device).version == 1
    registered = Event.objects.get(aggregate_id=str(device.uuid), type=EventTypeChoices.DEVICE_REGISTERED)
    assert registered.metadata["source"] == EventSourceChoices.ADMIN
    assert registered.metadata["actor"] == "admin"
    [key] = shown_keys(response)
    assert len(key) >= 43
    assert device.api_key_digest == hashlib.sha256(key.encode()).hexdigest()
    # Only the digest is stored: not in the events, nor in the admin's own log.
    stored = json.dumps([list(Event.objects.values("data", "metadata")), list(LogEntry.objects.values())], default=str)
    assert key not in stored
    # Never shown again.
    assert key not in admin_browser.get(f"{DEVICES}{device.pk}/change/").content.decode()
    assert key not in admin_browser.get(DEVICES).content.decode()


def test_add_device_with_a_blank_name_writes_nothing(admin_browser):
    page = admin_browser.get(DEVICES + "add/")
    before = event_count()

    response = admin_browser.post(DEVICES + "add/", form_data(page, "device_form") | {"name": "   "})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["name"] == ["This field is required."]
    assert not Device.objects.exists()
    assert event_count() == before
    assert shown_keys(response) == []


def test_edit_device_goes_through_the_service(admin_browser, device_with_sensors):
    device = device_with_sensors
    url = f"{DEVICES}{device.pk}/change/"
    page = admin_browser.get(url)
    data = form_data(page, "device_form")
    assert len(page.context["sensors"]) == 3  # the device's sensor rows are on the page, read-only
    digest = device.api_key_digest
    # The read model changes under the open page (as agent reports make it); that must not block the save.
    removed = DeviceSensor.objects.filter(device=device).first().name
    sensor_delete(device_uuid=device.uuid, name=removed, user=None)
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(), user=None)

    response = admin_browser.post(url, data | {"name": "renamed", "is_active": ""})

    assert response.status_code == 302
    device.refresh_from_db()
    assert (device.name, device.is_active, device.api_key_digest) == ("renamed", False, digest)
    updated = Event.objects.filter(aggregate_id=str(device.uuid), type=EventTypeChoices.DEVICE_UPDATED).get()
    assert updated.data == {"changes": {"name": "renamed", "is_active": False}}
    assert updated.metadata["source"] == EventSourceChoices.ADMIN
    assert target_of(device).version == 6  # the sensors and the target are untouched by the device's form
    assert DeviceSensor.objects.filter(device=device).count() == 3


def test_device_change_page_shows_sensors_and_states_read_only(admin_browser, device_with_sensors):
    device = device_with_sensors
    state = target_of(device)
    running = state.config["sensors"][:2]
    report(device, sensors=running, version=state.version)

    response = admin_browser.get(f"{DEVICES}{device.pk}/change/")

    content = response.content.decode()
    assert {row.name: row.deployment_status for row in response.context["sensors"]} == {
        running[0]["name"]: Status.DEPLOYED,
        running[1]["name"]: Status.DEPLOYED,
        state.config["sensors"][2]["name"]: Status.FAILED,
    }
    # the sensors are shown, not edited here; the one inline is the labels
    assert [inline.formset.model for inline in response.context["inline_admin_formsets"]] == [DeviceLabel]
    readonly = {field.field["name"]: field.contents() for fs in response.context["adminform"] for line in fs
                for field in line if field.is_readonly}  # fmt: skip
    assert readonly["target_version"] == "4"
    assert text_of(readonly["reported_version"]) == "v4"
    assert readonly["converged"].startswith("<img")  # a boolean icon
    assert f"&quot;name&quot;: &quot;{running[0]['name']}&quot;" in readonly["target_config"]
    assert "<pre>" in readonly["current_config"]
    assert 'name="target_version"' not in content and 'name="config"' not in content


def test_delete_device_goes_through_the_service(admin_browser, device_with_sensors):
    device = device_with_sensors
    url = f"{DEVICES}{device.pk}/delete/"
    assert admin_browser.get(url).status_code == 200

    response = admin_browser.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert not Device.objects.filter(pk=device.pk).exists()
    assert not DeviceSensor.objects.filter(device_id=device.pk).exists()
    deleted = Event.objects.get(aggregate_id=str(device.uuid), type=EventTypeChoices.DEVICE_DELETED)
    assert deleted.metadata["source"] == EventSourceChoices.ADMIN


def test_bulk_delete_calls_the_service_per_device(admin_browser, superuser, running_only_sensor):
    devices = [running_only_sensor.device, *make_fleet(2, user=superuser)]
    selection = {"action": "delete_selected", "_selected_action": [d.pk for d in devices]}

    confirmation = admin_browser.post(DEVICES, selection)
    assert confirmation.status_code == 200
    # A running-only sensor cannot be deleted on its own, but it does not block deleting its device.
    assert not confirmation.context["perms_lacking"]
    response = admin_browser.post(DEVICES, selection | {"post": "yes"})

    assert response.status_code == 302
    assert not Device.objects.exists()
    deleted = Event.objects.filter(type=EventTypeChoices.DEVICE_DELETED)
    assert sorted(deleted.values_list("aggregate_id", flat=True)) == sorted(str(d.uuid) for d in devices)


def test_rotate_key_action_asks_first_then_changes_the_digest_and_shows_the_new_key(admin_browser, superuser):
    devices = make_fleet(2, user=superuser, sensors_per_device=0)
    old = {d.pk: d.api_key_digest for d in devices}
    selection = {"action": "rotate_api_key", "_selected_action": [d.pk for d in devices]}

    confirmation = admin_browser.post(DEVICES, selection)

    assert confirmation.status_code == 200
    assert "Yes, rotate the keys" in confirmation.content.decode()
    assert {d.pk: d.api_key_digest for d in Device.objects.all()} == old

    response = admin_browser.post(DEVICES, selection | {"post": "yes"}, follow=True)

    assert response.status_code == 200
    keys = shown_keys(response)
    assert len(keys) == 2
    digests = {hashlib.sha256(key.encode()).hexdigest() for key in keys}
    assert set(Device.objects.values_list("api_key_digest", flat=True)) == digests
    assert not digests & set(old.values())
    assert Event.objects.filter(type=EventTypeChoices.DEVICE_KEY_ROTATED, metadata__source="admin").count() == 2
    listed_again = admin_browser.get(DEVICES).content.decode()
    assert not [key for key in keys if key in listed_again]


# --- sensors: the form edits the desired sensor, through reconciliation.services.sensors ---


def test_add_sensor_writes_a_new_target_version_and_a_pending_row(admin_browser, device):
    page = admin_browser.get(f"{SENSORS}add/?device={device.pk}")
    data = form_data(page, "devicesensor_form")
    assert data["device"] == str(device.pk)
    assert (data["poll_interval"], data["enabled"], data["data_points"], data["metadata"]) == ("5000", "on", "[]", "{}")
    data |= {
        "name": "temp-1",
        "protocol": "opcua",
        "poll_interval": "2500",
        "connection": '{"endpoint": "opc.tcp://10.0.0.9:4840"}',
        "data_points": '[{"name": "temperature", "nodeId": "ns=2;s=T1"}]',
    }

    response = admin_browser.post(f"{SENSORS}add/", data)

    assert response.status_code == 302
    state = target_of(device)
    assert state.version == 2
    assert state.needs_deployment
    desired = target_sensors(device)["temp-1"]
    assert desired | {"id": None} == {
        "id": None,
        "name": "temp-1",
        "protocol": "opcua",
        "enabled": True,
        "pollInterval": 2500,
        "connection": {"endpoint": "opc.tcp://10.0.0.9:4840"},
        "dataPoints": [{"name": "temperature", "nodeId": "ns=2;s=T1"}],
        "metadata": {},
    }
    row = DeviceSensor.objects.get(device=device, name="temp-1")
    assert (row.deployment_status, row.running, row.config_version) == (Status.PENDING, False, 2)
    assert row.desired == desired
    assert response["Location"] == SENSORS  # redirected to the list after "Save"
    added = Event.objects.get(aggregate_id=str(device.uuid), type=EventTypeChoices.SENSOR_ADDED)
    assert (added.metadata["source"], added.metadata["actor"]) == (EventSourceChoices.ADMIN, "admin")


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"connection": '{"host": "10.0.0.5",'}, "connection", "Enter a valid JSON."),
        ({"connection": "[1, 2]"}, "connection", "Must be a JSON object."),
        ({"connection": ""}, "connection", "This field is required."),
        ({"metadata": '"text"'}, "metadata", "Must be a JSON object."),
        ({"data_points": '{"name": "x"}'}, "data_points", "Must be a list of objects."),
        (
            {"data_points": '[{"name": "t"}, {"name": "t"}]'},
            "data_points",
            "dataPoints[1].name: Duplicate data point name 't' in this sensor.",
        ),
        ({"poll_interval": "99"}, "poll_interval", "Must be an integer number of milliseconds from 100 to 86400000."),
        ({"poll_interval": "86400001"}, "poll_interval", "Must be an integer number of milliseconds from 100"),
        ({"poll_interval": "fast"}, "poll_interval", "Enter a whole number."),
        ({"name": "temp 1"}, "name", "Must be 1 to 255 characters of letters, digits, '.', '_' or '-'."),
        ({"name": "existing"}, "name", "A sensor named 'existing' already exists on this device."),
        ({"protocol": "zigbee"}, "protocol", "Select a valid choice."),
    ],
)
def test_invalid_sensor_is_shown_on_its_field_and_writes_nothing(
    admin_browser, device, superuser, changes, field, message
):
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="existing"), user=superuser)
    page = admin_browser.get(f"{SENSORS}add/?device={device.pk}")
    data = form_data(page, "devicesensor_form") | {"name": "temp-1", "connection": '{"host": "10.0.0.5"}'}
    before = (target_of(device).version, event_count(), DeviceSensor.objects.count(), LogEntry.objects.count())

    response = admin_browser.post(f"{SENSORS}add/", data | changes)

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert list(errors) == [field]
    assert any(shown.startswith(message) for shown in errors[field]), errors[field]
    assert message.split(":")[-1].strip().replace("'", "&#x27;") in response.content.decode()
    assert (target_of(device).version, event_count(), DeviceSensor.objects.count(), LogEntry.objects.count()) == before
    # The page keeps what was typed, so it can be corrected.
    if field != "protocol":
        assert same_input(form_data(response, "devicesensor_form")[field], (data | changes)[field])


def test_edit_sensor_starts_from_the_desired_config_and_bumps_the_target_version(admin_browser, device, superuser):
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="temp-1"), user=superuser)
    running = target_sensors(device)["temp-1"]
    report(device, sensors=[running], version=2)
    sensor_update(device_uuid=device.uuid, name="temp-1", data={"pollInterval": 1000}, partial=True, user=superuser)
    row = DeviceSensor.objects.get(device=device, name="temp-1")
    # The row shows what runs (5000); the desired sensor is the update in flight (1000).
    assert (row.poll_interval, row.desired["pollInterval"], row.deployment_status) == (5000, 1000, Status.RECONCILING)
    url = f"{SENSORS}{row.pk}/change/"

    data = form_data(admin_browser.get(url), "devicesensor_form")

    assert data["poll_interval"] == "1000"
    assert data["target_version"] == "3"
    assert json.loads(data["connection"]) == running["connection"]

    response = admin_browser.post(url, data | {"poll_interval": "750", "enabled": "", "metadata": '{"room": "B2"}'})

    assert response.status_code == 302
    state = target_of(device)
    assert state.version == 4
    desired = target_sensors(device)["temp-1"]
    assert (desired["pollInterval"], desired["enabled"], desired["metadata"]) == (750, False, {"room": "B2"})
    assert desired["id"] == running["id"]  # the sensor keeps its id
    updated = Event.objects.filter(type=EventTypeChoices.SENSOR_UPDATED, metadata__source="admin").get()
    assert updated.data["changed_fields"] == ["enabled", "pollInterval", "metadata"]
    row.refresh_from_db()
    assert row.desired == desired
    assert row.deployment_status == Status.RECONCILING  # still running the old config until the agent applies v4


def test_invalid_edit_is_shown_on_its_field_and_writes_nothing(admin_browser, device_with_sensors):
    row = DeviceSensor.objects.filter(device=device_with_sensors).first()
    url = f"{SENSORS}{row.pk}/change/"
    data = form_data(admin_browser.get(url), "devicesensor_form")
    before = (target_of(device_with_sensors).config, event_count())

    response = admin_browser.post(url, data | {"poll_interval": "50", "data_points": '[{"address": 1}]'})

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["poll_interval"] == ["Must be an integer number of milliseconds from 100 to 86400000."]
    assert errors["data_points"] == ["dataPoints[0].name: Required: a non-empty string."]
    assert (target_of(device_with_sensors).config, event_count()) == before


def test_rename_sensor_keeps_its_id_and_lands_on_the_new_row(admin_browser, device, superuser):
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="temp-1"), user=superuser)
    sensor_id = target_sensors(device)["temp-1"]["id"]
    row = DeviceSensor.objects.get(device=device, name="temp-1")
    url = f"{SENSORS}{row.pk}/change/"

    response = admin_browser.post(
        url, form_data(admin_browser.get(url), "devicesensor_form") | {"name": "temp-2", "_continue": ""}
    )

    assert list(target_sensors(device)) == ["temp-2"]
    assert target_sensors(device)["temp-2"]["id"] == sensor_id
    renamed = DeviceSensor.objects.get(device=device, name="temp-2")
    assert response.status_code == 302
    assert response["Location"] == f"{SENSORS}{renamed.pk}/change/"


def test_edit_refused_when_the_target_changed_since_the_page_was_loaded(admin_browser, device, superuser):
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="temp-1"), user=superuser)
    row = DeviceSensor.objects.get(device=device, name="temp-1")
    url = f"{SENSORS}{row.pk}/change/"
    data = form_data(admin_browser.get(url), "devicesensor_form") | {"poll_interval": "750"}
    # Someone else changes the same sensor meanwhile.
    sensor_update(device_uuid=device.uuid, name="temp-1", data={"pollInterval": 9000}, partial=True, user=superuser)
    before = (target_of(device).config, event_count())

    response = admin_browser.post(url, data)

    assert response.status_code == 200
    [error] = response.context["adminform"].form.non_field_errors()
    assert "changed since this page was loaded (it is now at version 3)" in error
    assert (target_of(device).config, event_count()) == before
    # Saving the page again is a deliberate write over the newer version.
    again = form_data(response, "devicesensor_form")
    assert (again["target_version"], again["poll_interval"]) == ("3", "750")
    assert admin_browser.post(url, again).status_code == 302
    assert target_sensors(device)["temp-1"]["pollInterval"] == 750


def test_delete_sensor_removes_it_from_the_target(admin_browser, device_with_sensors):
    device = device_with_sensors
    row = DeviceSensor.objects.filter(device=device).first()
    url = f"{SENSORS}{row.pk}/delete/"
    assert admin_browser.get(url).status_code == 200

    response = admin_browser.post(url, {"post": "yes"})

    assert response.status_code == 302
    assert row.name not in target_sensors(device)
    assert target_of(device).version == 5
    assert not DeviceSensor.objects.filter(pk=row.pk).exists()  # never ran, so nothing is left to show
    removed = Event.objects.get(type=EventTypeChoices.SENSOR_REMOVED)
    assert (removed.data["name"], removed.metadata["source"]) == (row.name, EventSourceChoices.ADMIN)


def test_bulk_delete_sensors_calls_the_service_per_sensor(admin_browser, superuser):
    devices = make_fleet(2, user=superuser)
    rows = list(DeviceSensor.objects.filter(protocol="modbus"))
    selection = {"action": "delete_selected", "_selected_action": [row.pk for row in rows]}
    assert admin_browser.post(SENSORS, selection).status_code == 200  # the confirmation page

    response = admin_browser.post(SENSORS, selection | {"post": "yes"})

    assert response.status_code == 302
    for device in devices:
        assert [s["protocol"] for s in target_sensors(device).values()] == ["mqtt"]
        assert target_of(device).version == 4
    assert Event.objects.filter(type=EventTypeChoices.SENSOR_REMOVED, metadata__source="admin").count() == 2
    # The one that ran stays, reconciling, until the agent reports it stopped.
    assert list(DeviceSensor.objects.filter(protocol="modbus").values_list("deployment_status", flat=True)) == [
        Status.RECONCILING
    ]


def test_running_only_sensor_cannot_be_edited_or_deleted_and_the_page_says_why(admin_browser, running_only_sensor):
    row = running_only_sensor
    device = row.device
    before = (target_of(device).version, event_count())

    page = admin_browser.get(f"{SENSORS}{row.pk}/change/")

    assert page.status_code == 200
    content = page.content.decode()
    assert "removed from the device's target configuration" in content
    assert 'name="_save"' not in content and 'name="poll_interval"' not in content
    assert admin_browser.post(f"{SENSORS}{row.pk}/change/", {"name": row.name}).status_code == 403
    assert admin_browser.get(f"{SENSORS}{row.pk}/delete/").status_code == 403
    assert admin_browser.post(f"{SENSORS}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}
    refused = admin_browser.post(SENSORS, bulk)
    assert refused.status_code == 200
    assert "removed from the device" in str(refused.context["protected"])
    assert DeviceSensor.objects.filter(pk=row.pk).exists()
    assert (target_of(device).version, event_count()) == before


def test_sensor_status_fields_are_read_only(admin_browser, device_with_sensors):
    row = DeviceSensor.objects.filter(device=device_with_sensors).first()
    assert (row.deployment_status, row.running, row.config_version) == (Status.PENDING, False, 4)
    url = f"{SENSORS}{row.pk}/change/"
    data = form_data(admin_browser.get(url), "devicesensor_form")
    assert not {"deployment_status", "running", "config_version", "desired", "deployment_error"} & set(data)

    forged = data | {"deployment_status": "deployed", "running": "on", "config_version": "99", "desired": "null"}
    assert admin_browser.post(url, forged).status_code == 302

    row.refresh_from_db()
    assert (row.deployment_status, row.running, row.config_version) == (Status.PENDING, False, 4)
    assert row.desired is not None
    assert target_of(device_with_sensors).version == 4  # nothing changed in the desired sensor: no new version


def test_staff_without_add_permission_cannot_add_a_sensor(client, device):
    viewer = UserFactory(permissions=["sensors.view_devicesensor"])
    client.force_login(viewer)

    assert client.get(SENSORS).status_code == 200
    assert client.get(f"{SENSORS}add/").status_code == 403
    assert client.post(f"{SENSORS}add/", {"device": device.pk, "name": "x"}).status_code == 403
    assert target_of(device).version == 1


# --- events: read-only for everyone ---


def test_events_cannot_be_added_changed_or_deleted(admin_browser, device_with_sensors):
    event = Event.objects.filter(aggregate_id=str(device_with_sensors.uuid)).first()
    before = list(Event.objects.order_by("id").values())

    assert admin_browser.get(f"{EVENTS}add/").status_code == 403
    assert admin_browser.post(f"{EVENTS}add/", {"type": "device.updated"}).status_code == 403
    assert admin_browser.post(f"{EVENTS}{event.pk}/change/", {"type": "device.updated"}).status_code == 403
    assert admin_browser.get(f"{EVENTS}{event.pk}/delete/").status_code == 403
    assert admin_browser.post(f"{EVENTS}{event.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = admin_browser.post(EVENTS, {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"})
    assert bulk.status_code == 200  # there is no delete action: the list is shown again
    view = admin_browser.get(f"{EVENTS}{event.pk}/change/")
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    assert list(Event.objects.order_by("id").values()) == before


def test_event_list_is_newest_first_and_filters_and_searches(admin_browser, superuser, device_with_sensors):
    other = DeviceFactory()
    events = Event.objects.all()

    def listed(query: str = "") -> list[int]:
        response = admin_browser.get(EVENTS + query)
        assert response.status_code == 200
        return [event.pk for event in response.context["cl"].result_list]

    assert listed() == list(events.order_by("-id").values_list("pk", flat=True))
    assert set(listed(f"?q={other.uuid}")) == set(
        events.filter(aggregate_id=str(other.uuid)).values_list("pk", flat=True)
    )
    added = events.filter(type=EventTypeChoices.SENSOR_ADDED)
    assert listed("?type__exact=sensor.added") == list(added.order_by("-id").values_list("pk", flat=True))
    assert listed(f"?q={added.first().correlation_id}") != []
    assert listed("?source=admin") == []
    assert listed("?source=system") == listed()
    now = added.first().created_at
    assert listed(f"?created_at__year={now.year}&created_at__month={now.month}") == listed()

    # Written through the admin, an event says so, and who did it.
    admin_browser.post(
        DEVICES + "add/", form_data(admin_browser.get(DEVICES + "add/"), "device_form") | {"name": "press-8"}
    )
    [registered] = listed("?source=admin&type__exact=device.registered")
    page = admin_browser.get(f"{EVENTS}{registered}/change/").content.decode()
    assert "press-8" in page and "admin" in page
