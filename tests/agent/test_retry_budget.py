"""The retry budget (README "Retry budget"), through the agent protocol: the agent's PATCH and poll, as the real
2025-11-22 agent sends them, with statement counts.

The real agent applies a target only when its content changes (and once after each start), and after a failed apply
re-sends the same report: so a failed apply is a report that brings a new result (another version, or another
running configuration) for the version it runs and leaves a sensor failed. Identical reports and health changes are
not applies."""

import copy

import pytest
from django.core.management import call_command

from devices.models import DeviceTargetState, DeviceTargetStateVersion
from events.models import Event
from reconciliation.decision import retry_budget_reason
from sensors.models import DeviceSensor
from tests.factories import UserFactory
from tests.helpers import (
    API,
    add_sensor,
    assert_error,
    drift,
    events_after,
    last_event_id,
    poll,
    report,
    rollback_url,
    send_body,
    sensor_payload,
    target_sensors,
    verdict,
)

pytestmark = pytest.mark.django_db

EXHAUSTED = "device.retry_budget_exhausted"
SAVEPOINTS = 2  # the test transaction's SAVEPOINT + RELEASE around the report's atomic block


@pytest.fixture
def two_sensors(admin_client, device):
    """``device`` with sensors a and b (target v3), its agent running both: in sync, v3 fully deployed."""
    add_sensor(admin_client, device, sensor_payload("a"))
    add_sensor(admin_client, device, sensor_payload("b", protocol="can", connection={"interface": "can0"}))
    device.running = target_sensors(device)
    assert verdict(report(device.agent_client, device, 3, device.running), device)["inSync"]
    return device


@pytest.fixture(autouse=True)
def _agent_on_device(agent, device):
    device.agent_client = agent


def budget(device) -> tuple:
    target = DeviceTargetState.objects.get(device=device)
    return (
        target.failed_applies,
        target.failed_applies_version,
        target.retry_exhausted_version,
        target.retry_fallback_version,
        target.retry_exhausted_at is not None,
    )


def fails_at_3(device, sensors, **extra) -> dict:
    """The agent reports version 3 running ``sensors`` (a full 2025-11-22 report): its verdict."""
    return verdict(report(device.agent_client, device, 3, sensors, **extra), device)


def other_config(sensor: dict, poll_interval: int) -> dict:
    changed = copy.deepcopy(sensor)
    changed["pollInterval"] = poll_interval
    return changed


def test_each_new_failed_result_counts_once_and_the_last_one_exhausts_the_budget(
    admin_client, two_sensors, settings, django_assert_num_queries
):
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 3600  # liveness written within the interval: the no-op is one SELECT
    device = two_sensors
    add_sensor(admin_client, device, sensor_payload("c", protocol="opcua", connection={"endpointUrl": "opc.tcp://h"}))
    a4, b4, _c4 = target_sensors(device)

    # Applied v4, c did not start: one failed apply.
    answer = verdict(report(device.agent_client, device, 4, [a4, b4]), device)
    assert answer["sensors"]["c"]["status"] == "failed"
    assert budget(device) == (1, 4, None, None, False)

    # The agent re-sends the same report (config left out, unchanged): not an apply. One SELECT, nothing written.
    with django_assert_num_queries(1):
        again = send_body(device.agent_client, {str(device.uuid): {"version": 4, "apps": {}}}, key=device.api_key)
    assert verdict(again, device)["outcome"] == "unchanged"
    # Health moves (reported by the same running configuration): not an apply either.
    health = {"a": {"protocol": "modbus", "status": "offline", "connected": False, "lastError": "ECONNREFUSED"}}
    moved = send_body(
        device.agent_client,
        {str(device.uuid): {"version": 4, "apps": {}, "endpoints_health": health}},
        key=device.api_key,
    )
    assert verdict(moved, device)["outcome"] == "applied"
    assert budget(device) == (1, 4, None, None, False)

    # A restart of the agent applies v4 again: this time b runs another configuration too. Counted in the UPDATE of
    # the target its new statuses make anyway: the 8 statements of a changed report that leaves a part out (health
    # here; tests/agent/test_query_counts.py), no more.
    with django_assert_num_queries(8 + SAVEPOINTS) as captured:
        verdict(report(device.agent_client, device, 4, [a4, other_config(b4, 1234)]), device)
    (target_update,) = [
        q["sql"] for q in captured.captured_queries if q["sql"].startswith('UPDATE "devices_devicetargetstate"')
    ]
    assert '"failed_applies" = 2' in target_update
    assert budget(device) == (2, 4, None, None, False)

    # The third failed result uses the budget up (SENSORSYNC_RETRY_BUDGET=3 by default).
    mark = last_event_id()
    third = verdict(report(device.agent_client, device, 4, [a4]), device)
    assert budget(device)[:3] == (3, 4, 4) and budget(device)[4] is True
    (exhausted,) = events_after(device, mark, EXHAUSTED)
    assert exhausted.data == {
        "target_version": 4,
        "failed_applies": 3,
        "budget": 3,
        "failed_sensors": [
            {"name": "b", "error": third["sensors"]["b"]["error"]},
            {"name": "c", "error": third["sensors"]["c"]["error"]},
        ],
        "fallback_version": None,
    }
    reason = retry_budget_reason(failed_applies=3, version=4)
    assert third["sensors"]["c"]["error"] == f"{reason} Not running on the device although enabled in target version 4."
    assert DeviceSensor.objects.get(device=device, name="c").deployment_error == third["sensors"]["c"]["error"]
    assert "retry budget ran out at target version 4" in drift(admin_client, device)["reason"]

    # No longer counted, nothing more appended; and the agent is served the same version: nothing new to apply.
    mark = last_event_id()
    verdict(report(device.agent_client, device, 4, [a4, other_config(b4, 999)]), device)
    assert budget(device)[:3] == (3, 4, 4)
    assert events_after(device, mark, EXHAUSTED) == []
    assert poll(device.agent_client, device, etag='"4"').status_code == 304


def test_convergence_clears_the_count_and_a_recovery_at_the_exhausted_version_clears_the_exhaustion(
    two_sensors, settings
):
    settings.SENSORSYNC_RETRY_BUDGET = 1
    device, (a, b) = two_sensors, two_sensors.running

    fails_at_3(device, [a])  # a restart of the agent: b did not start this time
    assert budget(device)[:3] == (1, 3, 3)
    assert DeviceSensor.objects.get(device=device, name="b").deployment_error.startswith("Retry budget exhausted")

    # The next restart brings both up: the device converged by itself, and is no longer held.
    assert fails_at_3(device, [a, b])["inSync"]
    assert budget(device) == (0, None, None, None, False)


def test_staff_act_with_a_new_version_or_a_reset(admin_client, two_sensors, settings):
    settings.SENSORSYNC_RETRY_BUDGET = 2
    device, (a, b) = two_sensors, two_sensors.running
    fails_at_3(device, [a])
    fails_at_3(device, [a, other_config(b, 4321)])
    assert budget(device)[:3] == (2, 3, 3)

    # A reset (the API): the count and the exhaustion go, the rows say no more that the budget ran out.
    mark = last_event_id()
    response = admin_client.post(f"{API}/devices/{device.uuid}/retry-budget/reset")
    assert response.status_code == 200, response.content
    assert response.json()["retryBudget"] == {
        "budget": 2,
        "failedApplies": 0,
        "failedAppliesVersion": None,
        "exhausted": False,
        "exhaustedAt": None,
        "exhaustedVersion": None,
        "fallbackVersion": None,
        "deployedVersion": 3,
    }
    assert [e.type for e in events_after(device, mark)] == ["device.retry_budget_reset"]
    assert DeviceSensor.objects.get(device=device, name="b").deployment_error.startswith("Running a configuration")
    # Nothing to reset: nothing written.
    mark = last_event_id()
    assert admin_client.post(f"{API}/devices/{device.uuid}/retry-budget/reset").status_code == 200
    assert events_after(device, mark) == []

    # Counting again from zero; then a new target version (staff fix the sensor) starts a fresh budget.
    fails_at_3(device, [a])
    fails_at_3(device, [a, other_config(b, 1111)])
    assert budget(device)[4] is True
    add_sensor(admin_client, device, sensor_payload("c"))
    assert budget(device) == (0, None, None, None, False)


def test_the_reset_needs_the_change_permission_of_the_target(api_client, two_sensors):
    api_client.force_authenticate(UserFactory(permissions=["devices.view_device", "devices.change_device"]))
    assert_error(api_client.post(f"{API}/devices/{two_sensors.uuid}/retry-budget/reset"), 403, "permission_denied")


def test_the_fallback_is_a_new_version_with_the_last_fully_deployed_content(admin_client, two_sensors, settings):
    settings.SENSORSYNC_RETRY_BUDGET = 2
    settings.SENSORSYNC_RETRY_BUDGET_FALLBACK = True
    device = two_sensors
    add_sensor(admin_client, device, sensor_payload("c", protocol="mqtt", connection={"broker": "m"}))  # v4
    a4, b4, _c4 = target_sensors(device)
    verdict(report(device.agent_client, device, 4, [a4, b4]), device)

    mark = last_event_id()
    answer = verdict(report(device.agent_client, device, 4, [a4]), device)

    # v5 has v3's content, written by the system; the record of why stays until staff act.
    assert budget(device) == (2, 4, 4, 5, True)
    target = DeviceTargetState.objects.get(device=device)
    assert (target.version, target.config) == (5, DeviceTargetStateVersion.objects.get(device=device, version=3).config)
    history = DeviceTargetStateVersion.objects.get(device=device, version=5)
    assert (history.source, history.created_by, history.change) == (
        "system",
        None,
        {"removed": ["c"], "rollback_to": 3, "retry_exhausted": True},
    )
    events = [(e.type, e.metadata["actor"]) for e in events_after(device, mark, EXHAUSTED, "target_state.updated")]
    assert events == [(EXHAUSTED, f"agent:{device.uuid}"), ("target_state.updated", "system:retry-budget")]
    assert Event.objects.get(type=EXHAUSTED).data["fallback_version"] == 3
    # The agent's verdict already names the new target; its next poll gets v5, without c.
    assert answer["targetVersion"] == 5
    served = poll(device.agent_client, device, etag='"4"')
    assert served.status_code == 200
    assert [s["name"] for s in served.json()[str(device.uuid)]["config"]["sensors"]] == ["a", "b"]

    # It applies v5: in sync; the exhaustion of v4 is still on record (until a reset or a new version from staff).
    assert verdict(report(device.agent_client, device, 5, target_sensors(device)), device)["inSync"]
    assert budget(device) == (0, None, 4, 5, True)
    assert DeviceTargetState.objects.get(device=device).deployed_version == 5
    # A staff rollback to v4 is staff acting: v4's content again, with a fresh budget.
    assert admin_client.post(rollback_url(device.uuid), {"version": 4}, format="json").status_code == 200
    assert budget(device) == (0, None, None, None, False)

    call_command("rebuild_read_model", "--check")
    call_command("replay_events", "--check")


def test_no_fallback_without_a_fully_deployed_version(admin_client, device, settings):
    settings.SENSORSYNC_RETRY_BUDGET = 1
    settings.SENSORSYNC_RETRY_BUDGET_FALLBACK = True
    add_sensor(admin_client, device, sensor_payload("a"))
    fails_at_3_device = verdict(report(device.agent_client, device, 2, []), device)

    assert fails_at_3_device["targetVersion"] == 2  # it never converged: nothing to fall back to
    assert budget(device) == (1, 2, 2, None, True)
    assert Event.objects.get(type=EXHAUSTED).data["fallback_version"] is None


def test_a_budget_of_zero_counts_nothing(two_sensors, settings):
    settings.SENSORSYNC_RETRY_BUDGET = 0
    device, (a, b) = two_sensors, two_sensors.running
    for poll_interval in (1001, 1002, 1003):
        fails_at_3(device, [a, other_config(b, poll_interval)])
    assert budget(device) == (0, None, None, None, False)
    assert not Event.objects.filter(type=EXHAUSTED).exists()
