"""SPEC section 4 for agents: 401 for a missing/unknown key, 403 for another device or an inactive one, and
nothing written on any refusal (neither the target device's state nor the caller's own)."""

import json
import uuid

import pytest
from django.test import Client

from tests.factories import DeviceFactory
from tests.helpers import (
    REPORT_URL,
    add_sensor,
    device_snapshot,
    device_url,
    devices_url,
    fresh,
    poll,
    report,
    report_entry,
    rotate_key_url,
    send_body,
    send_raw,
    sensor_payload,
    state_url,
    target_sensors,
    verdict,
)

pytestmark = pytest.mark.django_db


def assert_agent_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


@pytest.fixture
def pair(admin_client, agent):
    """Two devices, each with a sensor, each reported once (so both have current state and rows)."""
    devices = []
    for name in ("A", "B"):
        device = DeviceFactory(name=name)
        add_sensor(admin_client, device, sensor_payload(f"{name.lower()}-1"))
        assert poll(agent, device).status_code == 200
        verdict(report(agent, device, 2, target_sensors(device), seq=1), device)
        devices.append(device)
    return devices


@pytest.mark.parametrize("style", ["x", "bearer"])
def test_both_header_styles_authenticate_poll_and_report(agent, device, style):
    assert poll(agent, device, style=style).status_code == 200
    assert verdict(report(agent, device, 1, [], style=style), device)["outcome"] == "applied"


def test_a_lowercase_bearer_scheme_is_accepted(agent, device):
    response = agent.get(state_url(device.uuid), headers={"Authorization": f"bearer {device.api_key}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Device-API-Key": ""},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["none", "empty-x", "empty-bearer", "basic"],
)
def test_no_key_is_401_on_both_endpoints_and_writes_nothing(agent, pair, headers):
    a, _ = pair
    before = device_snapshot(a)

    polled = agent.get(state_url(a.uuid), headers=headers)
    body = assert_agent_error(polled, 401, "not_authenticated")
    assert polled["WWW-Authenticate"].startswith("Bearer")
    raw = json.dumps({str(a.uuid): report_entry(2, [], seq=5)}).encode()
    reported = agent.generic("PATCH", REPORT_URL, data=raw, content_type="application/json", headers=headers)
    assert_agent_error(reported, 401, "not_authenticated")
    assert "key" in body["message"].lower()
    assert device_snapshot(a) == before


def test_an_unknown_key_is_401_and_writes_nothing(agent, pair):
    a, _ = pair
    before = device_snapshot(a)
    assert_agent_error(poll(agent, a, key="not-a-key-" + "x" * 40), 401, "not_authenticated")
    assert_agent_error(report(agent, a, 2, [], seq=5, key="not-a-key-" + "x" * 40), 401, "not_authenticated")
    assert device_snapshot(a) == before


def test_a_key_on_another_devices_url_is_403_and_writes_nothing(agent, pair):
    a, b = pair
    before = (device_snapshot(a), device_snapshot(b))

    response = poll(agent, b, key=a.api_key)

    assert_agent_error(response, 403, "permission_denied")
    assert (device_snapshot(a), device_snapshot(b)) == before


def test_a_key_reporting_for_another_device_is_403_and_writes_nothing(agent, pair):
    a, b = pair
    before = (device_snapshot(a), device_snapshot(b))

    response = report(agent, b, 2, [], seq=5, key=a.api_key, os_version="hijacked")

    assert_agent_error(response, 403, "permission_denied")
    assert (device_snapshot(a), device_snapshot(b)) == before
    assert fresh(b).os_version != "hijacked"


@pytest.mark.parametrize("order", ["own-first", "other-first"])
def test_a_body_naming_the_own_device_and_another_is_403_and_writes_nothing_for_either(agent, pair, order):
    a, b = pair
    before = (device_snapshot(a), device_snapshot(b))
    entries = [(a, report_entry(2, [], seq=5)), (b, report_entry(2, [], seq=5))]
    if order == "other-first":
        entries.reverse()

    response = send_body(agent, {str(d.uuid): entry for d, entry in entries}, key=a.api_key)

    assert_agent_error(response, 403, "permission_denied")
    assert (device_snapshot(a), device_snapshot(b)) == before


def test_an_inactive_device_is_403_on_both_endpoints_and_writes_nothing(admin_client, agent, pair):
    a, _ = pair
    response = admin_client.patch(device_url(a.uuid), {"isActive": False}, format="json")
    assert response.status_code == 200, response.content
    before = device_snapshot(a)

    assert_agent_error(poll(agent, a), 403, "device_inactive")
    assert_agent_error(report(agent, a, 2, [], seq=5), 403, "device_inactive")

    assert device_snapshot(a) == before


def test_a_rotated_away_key_is_401_and_the_new_key_works(admin_client, agent, pair):
    a, _ = pair
    old_key = a.api_key
    response = admin_client.post(rotate_key_url(a.uuid))
    assert response.status_code == 200, response.content
    new_key = response.json()["apiKey"]
    assert new_key and new_key != old_key
    before = device_snapshot(a)

    assert_agent_error(poll(agent, a, key=old_key), 401, "not_authenticated")
    assert_agent_error(report(agent, a, 2, [], seq=5, key=old_key), 401, "not_authenticated")
    assert device_snapshot(a) == before

    assert poll(agent, a, key=new_key, style="bearer").status_code == 200
    assert verdict(report(agent, a, 2, [], seq=5, key=new_key), a)["outcome"] == "applied"


def test_an_unknown_device_uuid_in_the_url_with_a_valid_key_is_refused(agent, pair):
    a, _ = pair
    before = device_snapshot(a)
    response = agent.get(state_url(uuid.uuid4()), headers={"X-Device-API-Key": a.api_key})
    assert response.status_code == 403
    assert device_snapshot(a) == before


def test_a_staff_session_does_not_authenticate_an_agent_endpoint(superuser, device):
    # A logged-in superuser is not a device: the agent endpoints only know device keys.
    browser = Client()
    browser.force_login(superuser)
    assert browser.get(devices_url()).status_code == 200  # the session works where sessions count
    before = device_snapshot(device)
    assert_agent_error(browser.get(state_url(device.uuid)), 401, "not_authenticated")
    assert_agent_error(send_raw(browser, b"{}", key=None), 401, "not_authenticated")
    assert device_snapshot(device) == before
