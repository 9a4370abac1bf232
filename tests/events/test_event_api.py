"""The event log over the API: a device's events whatever the case of its uuid, and pages of bounded size
however large the events' data (a ``target_state.updated`` event carries the whole config)."""

import uuid

import pytest

from events.choices import EventTypeChoices
from events.models import Event
from events.services import event_recording
from sensorsync_project.api.pagination import EventCursorPagination
from tests.factories import DeviceFactory
from tests.helpers import assert_error, device_events_url, device_url, events_url, sensors_url

pytestmark = pytest.mark.django_db

# The bound this API states for one page of events (README, OpenAPI): 200 events at most, each with at most
# 8 KiB of data inline.
PAGE_BOUND_BYTES = 2_000_000


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.content[:300]
    return [row["id"] for row in response.json()["results"]]


# -- a device's events, whatever the case of its uuid ------------------------------------------------------------


@pytest.mark.parametrize("spelling", [str.upper, lambda u: u[:18].upper() + u[18:]], ids=["upper", "mixed"])
def test_a_devices_events_answer_the_same_whatever_the_case_of_its_uuid(admin_client, device_with_sensors, spelling):
    lower = str(device_with_sensors.uuid)
    expected = _ids(admin_client.get(device_events_url(lower)))
    assert len(expected) >= 4  # registered, then a sensor and a target version per sensor

    assert _ids(admin_client.get(device_events_url(spelling(lower)))) == expected
    # Like the device's other endpoints, which read the uuid as a uuid.
    assert admin_client.get(sensors_url(spelling(lower))).json()["count"] == 3


def test_the_aggregate_id_filter_reads_a_uuid_in_any_case(admin_client, device_with_sensors):
    lower = str(device_with_sensors.uuid)
    expected = _ids(admin_client.get(events_url(), {"aggregateId": lower}))
    assert expected

    assert _ids(admin_client.get(events_url(), {"aggregateId": lower.upper()})) == expected


@pytest.mark.parametrize("spelling", [str.lower, str.upper], ids=["lower", "upper"])
def test_an_unknown_devices_events_are_a_404_like_its_other_endpoints(admin_client, device_with_sensors, spelling):
    unknown = spelling(str(uuid.uuid4()))

    for url in (device_url(unknown), sensors_url(unknown), device_events_url(unknown)):
        assert_error(admin_client.get(url), 404, "not_found")


# -- bounded pages -----------------------------------------------------------------------------------------------


def _config(approx_bytes: int) -> dict:
    """A target config of about ``approx_bytes`` of compact JSON, in sensors of about 800 bytes each."""
    sensor = {
        "protocol": "modbus",
        "enabled": True,
        "pollInterval": 1000,
        "connection": {"host": "10.0.0.1", "port": 502, "unitId": 1},
        "dataPoints": [{"name": f"register-{n}", "address": 40000 + n, "type": "float32"} for n in range(12)],
    }
    return {"sensors": [{"name": f"s-{i:04}", **sensor} for i in range(approx_bytes // 800)]}


def _record(device, count: int, data: dict, *, first_version: int = 2) -> None:
    # The caller (a test) is the only writer, so it needs no device lock around the recording.
    with event_recording(str(device.uuid)) as recorder:
        for version in range(first_version, first_version + count):
            recorder.record(EventTypeChoices.TARGET_STATE_UPDATED, {**data, "version": version}, actor="test")


@pytest.fixture
def big_events(db):
    """100 ``target_state.updated`` events, each carrying a config of ~400 KB (~40 MB in all)."""
    device = DeviceFactory()
    data = {"config": _config(400_000), "apps": {}}
    _record(device, 100, data)
    return device, data


@pytest.mark.parametrize("list_name", ["events", "device events"])
def test_a_page_of_100_events_with_400_kb_configs_stays_under_the_bound(admin_client, big_events, list_name):
    device, _data = big_events
    url = events_url() if list_name == "events" else device_events_url(device.uuid)

    response = admin_client.get(url, {"limit": 100})

    assert response.status_code == 200, response.content[:300]
    assert len(response.content) < PAGE_BOUND_BYTES, f"{len(response.content):,} bytes"
    rows = response.json()["results"]
    assert len(rows) == 100
    for row in rows:
        assert row["dataTruncated"] is True, row
        assert row["data"] is None
        assert row["dataSize"] > 400_000


def test_one_events_whole_data_is_on_its_detail_endpoint(admin_client, big_events):
    device, data = big_events
    listed = admin_client.get(events_url(), {"limit": 1}).json()["results"][0]
    assert listed["dataTruncated"] is True

    response = admin_client.get(f"{events_url()}/{listed['id']}")

    assert response.status_code == 200, response.content[:300]
    event = response.json()
    assert event["dataTruncated"] is False
    assert event["data"] == {**data, "version": Event.objects.get(pk=listed["id"]).data["version"]}
    assert event["dataSize"] == listed["dataSize"]
    assert {k: v for k, v in event.items() if k not in ("data", "dataTruncated")} == {
        k: v for k, v in listed.items() if k not in ("data", "dataTruncated")
    }
    # Under the device too, and only there.
    assert admin_client.get(f"{device_events_url(device.uuid)}/{listed['id']}").json()["data"] == event["data"]
    assert_error(admin_client.get(f"{device_events_url(DeviceFactory().uuid)}/{listed['id']}"), 404, "not_found")


def test_small_data_stays_inline_in_the_list(admin_client, device_with_sensors):
    rows = admin_client.get(device_events_url(device_with_sensors.uuid)).json()["results"]

    assert rows and all(row["dataTruncated"] is False for row in rows)
    for row in rows:
        assert row["data"] == Event.objects.get(pk=row["id"]).data
        assert 0 < row["dataSize"] <= EventCursorPagination.data_inline_max_bytes


def test_the_largest_page_of_the_largest_inline_events_stays_under_the_bound(admin_client):
    """The worst case the bound allows: a page at the largest limit, every event's data just small enough to be
    inline."""
    device = DeviceFactory()
    data = {"config": {"blob": ""}, "apps": {}}
    # Sized by the server's own measure, so that the test holds on every database (versions of 3 digits each).
    _record(device, 1, data, first_version=100)
    size = admin_client.get(events_url(), {"limit": 1}).json()["results"][0]["dataSize"]
    data["config"]["blob"] = "x" * (EventCursorPagination.data_inline_max_bytes - size)
    _record(device, EventCursorPagination.max_page_size + 5, data, first_version=100)

    response = admin_client.get(events_url(), {"limit": 100_000})

    rows = response.json()["results"]
    assert len(rows) == EventCursorPagination.max_page_size  # the limit is capped
    assert all(row["dataTruncated"] is False for row in rows)
    assert {row["dataSize"] for row in rows} == {EventCursorPagination.data_inline_max_bytes}
    assert len(response.content) < PAGE_BOUND_BYTES, f"{len(response.content):,} bytes"


def test_an_unknown_or_malformed_event_id_is_a_404(admin_client, device_with_sensors):
    for event_id in ("999999999", str(2**63), "9" * 40, "abc", "-1", "1.5", "%F1%B3%9A%B4e%C3%92%1EJ", "0x1"):
        assert_error(admin_client.get(f"{events_url()}/{event_id}"), 404, "not_found")


@pytest.mark.parametrize("list_name", ["events", "device events"])
def test_a_page_of_big_events_costs_a_fixed_number_of_queries(
    admin_client, big_events, django_assert_num_queries, list_name
):
    device, _data = big_events
    url = events_url() if list_name == "events" else device_events_url(device.uuid)
    # The page, with each event's data size and its data only when small; a device's list checks the device first.
    queries = 1 if list_name == "events" else 2

    with django_assert_num_queries(queries):
        assert len(_ids(admin_client.get(url, {"limit": 100}))) == 100


def test_the_schema_documents_the_bounds(admin_client):
    schema = admin_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    operation = schema["paths"]["/api/v1/events/"]["get"]
    limit = next(p for p in operation["parameters"] if p["name"] == "limit")
    assert str(EventCursorPagination.max_page_size) in limit["description"]
    assert "dataTruncated" in operation["description"]
    event = schema["components"]["schemas"]["Event"]["properties"]
    assert {"data", "dataTruncated", "dataSize"} <= set(event)
    assert event["data"].get("nullable") is True
    assert "get" in schema["paths"]["/api/v1/events/{id}/"]
