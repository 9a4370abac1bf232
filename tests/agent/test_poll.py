"""GET /device/<uuid>/state: the body, the strong ETag, If-None-Match, and what the server records of a poll."""

import pytest

from tests.helpers import (
    REPORT_URL,
    add_sensor,
    device_snapshot,
    drift,
    fresh,
    poll,
    sensor_payload,
    state_url,
    target_state_url,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_sensors(admin_client, device):
    add_sensor(admin_client, device, sensor_payload("a"))
    add_sensor(admin_client, device, sensor_payload("b", enabled=False))
    return device


def test_the_body_is_the_target_state_keyed_by_the_device(admin_client, agent, two_sensors):
    target = admin_client.get(target_state_url(two_sensors.uuid)).json()

    response = poll(agent, two_sensors)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["ETag"] == '"3"' == target["etag"]
    assert response.json() == {
        str(two_sensors.uuid): {"apps": target["apps"], "config": target["config"], "version": 3}
    }


@pytest.mark.parametrize("header", ['"3"', 'W/"3"', '"1", "3"', "*", ' "3" '])
def test_a_matching_if_none_match_is_304_with_no_body_and_still_counts_as_a_fetch(agent, two_sensors, header):
    response = poll(agent, two_sensors, etag=header)

    assert response.status_code == 304
    assert response.content == b""
    assert response["ETag"] == '"3"'
    device = fresh(two_sensors)
    assert device.last_fetched_version == 3
    assert device.last_fetched_at is not None
    assert device.last_seen_at is not None


@pytest.mark.parametrize("header", ['"2"', '"30"', "3", '"3', ""])
def test_a_different_if_none_match_gets_the_full_state(agent, two_sensors, header):
    response = poll(agent, two_sensors, etag=header)
    assert response.status_code == 200
    assert response.json()[str(two_sensors.uuid)]["version"] == 3


def test_a_staff_change_invalidates_the_agents_etag(admin_client, agent, two_sensors):
    etag = poll(agent, two_sensors)["ETag"]
    assert poll(agent, two_sensors, etag=etag).status_code == 304

    add_sensor(admin_client, two_sensors, sensor_payload("c"))

    response = poll(agent, two_sensors, etag=etag)
    assert response.status_code == 200
    assert response["ETag"] == '"4"'
    assert [s["name"] for s in response.json()[str(two_sensors.uuid)]["config"]["sensors"]] == [
        "a",
        "b",
        "c",
    ]
    assert fresh(two_sensors).last_fetched_version == 4
    assert drift(admin_client, two_sensors)["stage"] == "never_reported"


def test_a_poll_writes_nothing_but_the_fetch_record(agent, two_sensors):
    before = device_snapshot(two_sensors)
    poll(agent, two_sensors)
    after = device_snapshot(two_sensors)
    assert after["target"] == before["target"]
    assert after["sensors"] == before["sensors"]
    assert after["events"] == before["events"]
    assert after["current"] is None


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", "state"),
        ("put", "state"),
        ("delete", "state"),
        ("get", "report"),
        ("post", "report"),
        ("put", "report"),
    ],
)
def test_other_methods_are_405_in_the_json_error_shape(agent, device, method, url):
    path = state_url(device.uuid) if url == "state" else REPORT_URL
    response = getattr(agent, method)(path, headers={"X-Device-API-Key": device.api_key})
    assert response.status_code == 405
    body = response.json()
    assert body["error"] == "method_not_allowed"
    assert body["message"]
    assert response["Allow"]
