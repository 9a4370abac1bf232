"""The staff views of the loop (drift explanation, current state, manual reconcile) and the drift events."""

import pytest
from rest_framework.test import APIClient

from reconciliation.models import DriftEpisode
from tests.factories import UserFactory
from tests.helpers import (
    add_sensor,
    agent_headers,
    assert_error,
    current_state_url,
    drift,
    drift_url,
    events_after,
    last_event_id,
    poll,
    reconcile_url,
    report,
    sensor_payload,
    target_sensors,
    verdict,
)

pytestmark = pytest.mark.django_db

DRIFT = "device.config_drift"
IN_SYNC = "device.in_sync"


# GET drift: each stage -----------------------------------------------------------------------------------------


def test_drift_explains_every_stage_from_never_fetched_to_in_sync(admin_client, agent, device):
    add_sensor(admin_client, device, sensor_payload("a"))

    first = drift(admin_client, device)
    assert first["stage"] == "never_fetched"
    assert first["inSync"] is False
    assert (first["targetVersion"], first["lastFetchedVersion"], first["reportedVersion"]) == (2, None, None)
    assert [s["name"] for s in first["sensors"]] == ["a"]
    assert first["sensors"][0]["deploymentStatus"] == "pending"

    assert poll(agent, device).status_code == 200
    add_sensor(admin_client, device, sensor_payload("b", protocol="can", connection={"interface": "can0"}))
    stale_fetch = drift(admin_client, device)
    assert stale_fetch["stage"] == "not_fetched"
    assert (stale_fetch["targetVersion"], stale_fetch["lastFetchedVersion"]) == (3, 2)
    assert "2" in stale_fetch["reason"] and "3" in stale_fetch["reason"]
    assert stale_fetch["lastFetchedAt"] is not None

    assert poll(agent, device, etag='"2"').status_code == 200
    fetched = drift(admin_client, device)
    assert fetched["stage"] == "never_reported"
    assert fetched["lastFetchedVersion"] == 3
    assert fetched["lastReportedAt"] is None

    verdict(report(agent, device, 2, target_sensors(device)[:1]), device)
    behind = drift(admin_client, device)
    assert behind["stage"] == "not_applied"
    assert (behind["lastFetchedVersion"], behind["reportedVersion"]) == (3, 2)
    assert behind["lastReportedAt"] is not None
    assert [(s["name"], s["deploymentStatus"]) for s in behind["sensors"]] == [("b", "pending")]

    health = {"b": {"healthy": False, "lastError": "can0: link is down"}}
    verdict(report(agent, device, 3, target_sensors(device)[:1], health=health), device)
    failing = drift(admin_client, device)
    assert failing["stage"] == "sensors_failed"
    assert failing["reportedVersion"] == 3
    assert len(failing["sensors"]) == 1
    failed = failing["sensors"][0]
    assert failed["name"] == "b"
    assert failed["deploymentStatus"] == "failed"
    assert failed["running"] is False
    assert failed["deploymentError"] == "can0: link is down"
    assert failed["deploymentAttempts"] == 1
    assert failed["configVersion"] == 3

    verdict(report(agent, device, 3, target_sensors(device)), device)
    converged = drift(admin_client, device)
    assert converged["stage"] == "in_sync"
    assert converged["inSync"] is True
    assert converged["sensors"] == []
    assert (converged["targetVersion"], converged["reportedVersion"]) == (3, 3)


def test_drift_of_an_unknown_device_is_404(admin_client):
    response = admin_client.get(drift_url("00000000-0000-4000-8000-000000000000"))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


# GET current-state ----------------------------------------------------------------------------------------------


def test_current_state_is_404_until_the_device_reports(admin_client, agent, device):
    response = admin_client.get(current_state_url(device.uuid))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"

    verdict(report(agent, device, 1, [], seq=4, health={"x": {"healthy": True}}), device)
    body = admin_client.get(current_state_url(device.uuid)).json()
    assert body["deviceUuid"] == str(device.uuid)
    assert (body["version"], body["seq"]) == (1, 4)
    assert body["config"] == {"sensors": []}
    assert body["sensorHealth"] == {
        "x": {
            "status": "online",
            "connected": True,
            "quality": "",
            "lastError": "",
            "lastSeen": None,
            "errorCount": None,
        }
    }
    assert body["reportedAt"] is not None


# Permissions ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "url"),
    [("get", current_state_url), ("get", drift_url), ("post", reconcile_url)],
    ids=["current-state", "drift", "reconcile"],
)
def test_the_staff_views_of_the_loop_refuse_anonymous_users(agent, device, method, url):
    verdict(report(agent, device, 1, []), device)
    response = getattr(APIClient(), method)(url(device.uuid))
    assert_error(response, 401, "not_authenticated")


@pytest.mark.parametrize(
    ("method", "url"),
    [("get", current_state_url), ("get", drift_url), ("post", reconcile_url)],
    ids=["current-state", "drift", "reconcile"],
)
def test_the_staff_views_of_the_loop_refuse_a_device_key(agent, device, method, url):
    # A device key is no staff credential: the management API sees no credentials at all.
    response = getattr(agent, method)(url(device.uuid), headers=agent_headers(device.api_key))
    assert_error(response, 401, "not_authenticated")


def test_the_staff_views_need_model_permissions(agent, device):
    verdict(report(agent, device, 1, []), device)
    nobody = APIClient()
    nobody.force_authenticate(UserFactory())
    assert nobody.get(drift_url(device.uuid)).status_code == 403
    assert nobody.get(current_state_url(device.uuid)).status_code == 403
    assert nobody.post(reconcile_url(device.uuid)).status_code == 403

    reader = APIClient()
    reader.force_authenticate(
        UserFactory(permissions=["devices.view_device", "devices.view_devicecurrentstate", "sensors.view_devicesensor"])
    )
    assert reader.get(drift_url(device.uuid)).status_code == 200
    assert reader.get(current_state_url(device.uuid)).status_code == 200
    assert reader.post(reconcile_url(device.uuid)).status_code == 403

    repairer = APIClient()
    repairer.force_authenticate(UserFactory(permissions=["sensors.change_devicesensor"]))
    assert repairer.post(reconcile_url(device.uuid)).status_code == 200


def test_reconcile_of_an_unknown_device_is_404(admin_client):
    response = admin_client.post(reconcile_url("00000000-0000-4000-8000-000000000000"))
    assert response.status_code == 404


# Drift events ---------------------------------------------------------------------------------------------------


def _drift_events(device, mark):
    return [(e.type, e.data) for e in events_after(device, mark, DRIFT, IN_SYNC)]


def _episode(device) -> int:
    return DriftEpisode.objects.filter(device=device).latest("started_at", "id").pk


def test_drift_events_are_appended_per_change_not_per_report(admin_client, agent, device):
    add_sensor(admin_client, device, sensor_payload("a"))
    add_sensor(admin_client, device, sensor_payload("b", protocol="can", connection={"interface": "can0"}))
    everything = target_sensors(device)
    only_a = everything[:1]

    # Converging: exactly one in_sync, naming the episode it ends (opened by the first staff edit).
    mark = last_event_id()
    first_episode = _episode(device)
    verdict(report(agent, device, 3, everything, seq=1), device)
    assert _drift_events(device, mark) == [
        (IN_SYNC, {"target_version": 3, "reported_version": 3, "episode": first_episode})
    ]

    # Drift starts (b stops): exactly one config_drift naming b, its status and its error, and the episode it starts.
    mark = last_event_id()
    verdict(report(agent, device, 3, only_a, seq=2, health={"b": {"healthy": False, "lastError": "e1"}}), device)
    episode = _episode(device)
    assert episode != first_episode
    assert _drift_events(device, mark) == [
        (
            DRIFT,
            {
                "target_version": 3,
                "reported_version": 3,
                "drifting_sensors": [{"name": "b", "status": "failed", "error": "e1"}],
                "episode": episode,
                "episode_started": True,
            },
        )
    ]

    # The same drift reported again: as a repeat, with a new uptime, with another error, with more health.
    mark = last_event_id()
    assert (
        verdict(report(agent, device, 3, only_a, seq=3, health={"b": {"healthy": False, "lastError": "e1"}}), device)[
            "outcome"
        ]
        == "unchanged"
    )
    verdict(
        report(agent, device, 3, only_a, seq=4, uptime=1, health={"b": {"healthy": False, "lastError": "e1"}}), device
    )
    applied = verdict(
        report(agent, device, 3, only_a, seq=5, health={"b": {"healthy": False, "lastError": "e2"}}), device
    )
    assert applied["outcome"] == "applied"
    verdict(
        report(
            agent, device, 3, only_a, seq=6, health={"a": {"healthy": True}, "b": {"healthy": False, "lastError": "e2"}}
        ),
        device,
    )
    assert _drift_events(device, mark) == []

    # The drifting set changes (a stops too): one new config_drift naming both, within the same episode.
    mark = last_event_id()
    verdict(report(agent, device, 3, [], seq=7), device)
    events = _drift_events(device, mark)
    assert [t for t, _ in events] == [DRIFT]
    assert [s["name"] for s in events[0][1]["drifting_sensors"]] == ["a", "b"]
    assert (events[0][1]["episode"], events[0][1]["episode_started"]) == (episode, False)

    # Converged again: exactly one in_sync, ending that episode, and nothing more on the next (changed) report.
    mark = last_event_id()
    verdict(report(agent, device, 3, everything, seq=8), device)
    assert [(t, data["episode"]) for t, data in _drift_events(device, mark)] == [(IN_SYNC, episode)]
    mark = last_event_id()
    verdict(report(agent, device, 3, everything, seq=9, health={"a": {"healthy": True}}), device)
    assert _drift_events(device, mark) == []


def test_a_staff_change_to_an_in_sync_device_starts_drift_once(admin_client, agent, device):
    add_sensor(admin_client, device, sensor_payload("a"))
    verdict(report(agent, device, 2, target_sensors(device), seq=1), device)

    mark = last_event_id()
    add_sensor(admin_client, device, sensor_payload("c", protocol="mqtt", connection={"broker": "m"}))
    events = _drift_events(device, mark)
    assert [t for t, _ in events] == [DRIFT]
    assert events[0][1]["target_version"] == 3
    assert events[0][1]["reported_version"] == 2
    assert events[0][1]["drifting_sensors"] == [{"name": "c", "status": "pending", "error": ""}]

    # The agent still reports version 2 (another health): the drift has not changed.
    mark = last_event_id()
    verdict(report(agent, device, 2, target_sensors(device)[:1], seq=2, health={"a": {"healthy": True}}), device)
    assert _drift_events(device, mark) == []

    mark = last_event_id()
    verdict(report(agent, device, 3, target_sensors(device), seq=3), device)
    assert [t for t, _ in _drift_events(device, mark)] == [IN_SYNC]
