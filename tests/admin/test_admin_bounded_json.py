"""The admin's pages stay small however big or deep the JSON they show: a report, a target configuration, a
sensor's connection or metadata may be anything the API accepts (nesting up to 254 levels, a megabyte of
report), and the page shows a bounded, truncated rendering of it with a note saying so."""

import json

import pytest
from django.test import Client

from events.models import Event
from reconciliation.services.sensors import sensor_create
from sensors.models import DeviceSensor
from sensorsync_project.ui.html import JSON_SHOWN_BYTES, json_text
from tests.factories import DeviceFactory, SensorPayloadFactory, UserFactory
from tests.fleet.agent import Agent

from .test_admin import DEVICES, EVENTS, SENSORS

DEPTH = 200
PAGE_BYTES_MAX = 1024 * 1024
VIEW_ONLY_PAGE_BYTES_MAX = 512 * 1024  # four JSON values of at most 64 KB each, escaped, and the admin around them


def nested(depth: int) -> dict:
    """Objects and lists alternating ``depth`` levels deep, with a few siblings per level (what indentation
    multiplies: every line below level n carries 2n spaces of it)."""
    value: object = {"leaf": "x" * 20, "n": 1}
    for level in range(depth):
        value = {"k": value, "a": level, "b": "y" * 10} if level % 2 else [value, level, "z" * 10]
    return value


def big_metadata() -> dict:
    """~300 KB of metadata, of many small keys (the kind of value a page would show line by line)."""
    return {f"key-{i:05d}": {"label": f"value {i}", "tags": ["a", "b", "c"], "n": i} for i in range(4000)}


def deep_sensor(name: str) -> dict:
    payload = SensorPayloadFactory(name=name, metadata=big_metadata())
    payload["connection"] = {"host": "10.0.0.5", "port": 502, "options": nested(DEPTH)}
    return payload


@pytest.fixture
def deep_device(superuser):
    """A device whose target sensor is nested DEPTH levels deep with a large metadata (staff wrote it through the
    service), and whose agent reports it running plus one more such sensor of its own (not in the target): the
    same JSON is in the target, the report, the sensor rows and the events."""
    device = DeviceFactory(name="deep")
    sensor_create(device_uuid=device.uuid, data=deep_sensor("deep-1"), user=superuser)
    agent = Agent(Client(), device)
    state = agent.poll()
    agent.report(version=state["version"], running=[*state["config"]["sensors"], deep_sensor("rogue-1")])
    return device


def test_device_page_of_a_deep_and_large_report_stays_small(admin_browser, deep_device):
    response = admin_browser.get(f"{DEVICES}{deep_device.pk}/change/")

    assert response.status_code == 200
    size = len(response.content)
    assert size < PAGE_BYTES_MAX, f"the device page is {size:,} bytes"
    page = response.content.decode()
    assert page.count("truncated") >= 2, "the target and reported configurations must say they were cut"
    assert "see the API" in page


def test_running_sensor_page_and_event_page_of_the_same_json_stay_small(admin_browser, deep_device):
    """The page of the sensor only the agent runs, and the event of the deep sensor's creation. (A desired
    sensor's edit form carries its whole value, as it must to be edited.)"""
    row = DeviceSensor.objects.get(device=deep_device, name="rogue-1")
    event = Event.objects.get(aggregate_id=str(deep_device.uuid), type="sensor.added")  # carries the whole sensor

    for url in (f"{SENSORS}{row.pk}/change/", f"{EVENTS}{event.pk}/change/"):
        response = admin_browser.get(url)
        assert response.status_code == 200, url
        assert len(response.content) < PAGE_BYTES_MAX, (url, len(response.content))
        assert "truncated" in response.content.decode(), url


def test_desired_sensor_page_of_a_viewer_shows_the_json_bounded(superuser, deep_device):
    """Staff who may only view a sensor see its desired JSON read-only, bounded like the rest (an editor's form
    carries the whole value, as it must to be edited)."""
    client = Client()
    client.force_login(UserFactory(permissions=["devices.view_device", "sensors.view_devicesensor"]))
    row = DeviceSensor.objects.get(device=deep_device, name="deep-1")

    response = client.get(f"{SENSORS}{row.pk}/change/")

    assert response.status_code == 200
    assert len(response.content) < VIEW_ONLY_PAGE_BYTES_MAX, len(response.content)
    page = response.content.decode()
    assert page.count("truncated") >= 2  # the metadata, the connection (and the configuration shown)
    assert "key-00000" in page and "10.0.0.5" in page


def test_rollback_confirmation_of_a_large_version_stays_small(admin_browser, superuser, deep_device):
    sensor_create(device_uuid=deep_device.uuid, data=SensorPayloadFactory(name="small-1"), user=superuser)

    response = admin_browser.get(f"{DEVICES}{deep_device.pk}/rollback/2/")  # the version with the deep sensor

    assert response.status_code == 200
    assert len(response.content) < PAGE_BYTES_MAX


# --- the bounded rendering itself ---


def test_small_json_is_shown_whole_and_indented():
    value = {"host": "10.0.0.5", "port": 502, "tags": ["a", "b"], "empty": {}, "none": None}
    assert json_text(value) == json.dumps(value, indent=2, ensure_ascii=False)


def test_large_json_is_cut_at_the_bound_with_a_note_of_its_whole_size():
    value = big_metadata()
    whole = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())

    text = json_text(value)

    assert len(text.encode()) < JSON_SHOWN_BYTES + 300
    assert text.startswith('{\n  "key-00000": {\n')
    assert f"truncated: {whole:,} bytes in all; see the API" in text


def test_deep_json_costs_no_more_indentation_than_a_shallow_one():
    text = json_text(nested(250))

    assert len(text.encode()) < JSON_SHOWN_BYTES + 300
    widest = max(len(line) - len(line.lstrip(" ")) for line in text.splitlines())
    assert widest <= 2 * 16, f"lines indented by {widest} spaces"
    # Below the indented levels the rest is still all there, on one line, while it fits the bound.
    assert json.loads(json_text(nested(40))) == nested(40)
