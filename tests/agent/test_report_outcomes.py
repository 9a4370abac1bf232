"""What the server makes of a report beyond the table: no-op repeats, liveness, stale reports (``seq``)."""

import time

import pytest

from devices.models import Device, DeviceCurrentState
from events.models import Event
from sensors.models import DeviceSensor
from tests.helpers import (
    add_sensor,
    current_state_url,
    device_snapshot,
    device_url,
    fresh,
    report,
    rotate_key_url,
    sensor_payload,
    target_sensors,
    verdict,
)

pytestmark = pytest.mark.django_db


def _row_stamps(device) -> dict:
    return dict(DeviceSensor.objects.filter(device_id=device.pk).values_list("name", "updated_at"))


@pytest.fixture
def reported(admin_client, agent, device):
    """Two desired sensors; the agent runs one of them and reported it (at V=3, so the other failed)."""
    add_sensor(admin_client, device, sensor_payload("a"))
    add_sensor(admin_client, device, sensor_payload("b", protocol="can", connection={"interface": "can0"}))
    running = target_sensors(device)[:1]
    health = {"b": {"healthy": False, "lastError": "can0 down"}}
    answer = verdict(report(agent, device, 3, running, health=health, seq=10), device)
    assert answer["outcome"] == "applied"
    device.running = running
    device.health = health
    return device


def test_an_identical_repeat_is_unchanged_writes_nothing_but_refreshes_liveness(agent, reported):
    before = device_snapshot(reported)
    events_before = Event.objects.count()
    stamps = _row_stamps(reported)
    time.sleep(0.002)

    answer = verdict(report(agent, reported, 3, reported.running, health=reported.health, seq=10), reported)

    assert answer["outcome"] == "unchanged"
    assert answer["targetVersion"] == 3
    assert answer["reportedVersion"] == 3
    assert answer["appliedVersion"] == 3
    assert answer["inSync"] is False
    assert answer["sensors"] == {
        "a": {"status": "deployed", "running": True, "error": "", "health": None},
        "b": {"status": "failed", "running": False, "error": "can0 down", "health": "offline"},
    }
    assert Event.objects.count() == events_before
    assert _row_stamps(reported) == stamps
    after = device_snapshot(reported)
    assert after["sensors"] == before["sensors"]
    assert after["current"] == before["current"]
    assert after["target"] == before["target"]
    assert after["device"]["last_seen_at"] > before["device"]["last_seen_at"]


def test_a_report_that_differs_only_in_uptime_is_unchanged(agent, reported):
    before = device_snapshot(reported)
    events_before = Event.objects.count()
    time.sleep(0.002)

    answer = verdict(
        report(agent, reported, 3, reported.running, health=reported.health, seq=11, uptime=999_999), reported
    )

    assert answer["outcome"] == "unchanged"
    assert Event.objects.count() == events_before
    after = device_snapshot(reported)
    assert after["sensors"] == before["sensors"]
    assert after["current"] == before["current"]
    assert after["device"]["last_seen_at"] > before["device"]["last_seen_at"]
    assert after["device"]["uptime"] == 999_999


def test_the_same_content_in_another_key_order_is_unchanged(agent, reported):
    events_before = Event.objects.count()
    shuffled = [dict(reversed(list(s.items()))) for s in reported.running]
    answer = verdict(report(agent, reported, 3, shuffled, health=reported.health, seq=12), reported)
    assert answer["outcome"] == "unchanged"
    assert Event.objects.count() == events_before


def test_a_changed_report_is_applied_and_recorded(agent, reported):
    last_seen = fresh(reported).last_seen_at
    events_before = Event.objects.count()

    answer = verdict(report(agent, reported, 3, reported.running, health={}, seq=11, os_version="Debian 13"), reported)

    assert answer["outcome"] == "applied"
    assert Event.objects.filter(type="current_state.reported", aggregate_id=str(reported.uuid)).count() == 2
    assert Event.objects.count() > events_before
    device = fresh(reported)
    assert device.os_version == "Debian 13"
    assert device.last_seen_at > last_seen
    # An empty health map is health the agent sent (nothing to say), unlike a report without one (as before).
    assert DeviceCurrentState.objects.get(device_id=reported.pk).sensor_health == {"sensor_health": {}}
    # The failed sensor's error falls back to the default: the agent no longer says why.
    assert answer["sensors"]["b"]["status"] == "failed"
    assert answer["sensors"]["b"]["error"] != "can0 down"


def test_a_report_stores_the_system_info(admin_client, agent, device):
    verdict(
        report(agent, device, 1, [], os_version="Yocto 5.0", agent_version="3.0.0", local_ip="::1", uptime=42),
        device,
    )
    body = admin_client.get(device_url(device.uuid)).json()
    assert (body["osVersion"], body["agentVersion"], body["ipAddress"], body["uptime"]) == (
        "Yocto 5.0",
        "3.0.0",
        "::1",
        42,
    )
    assert body["reportedVersion"] == 1
    assert body["lastSeenAt"] is not None


# seq -------------------------------------------------------------------------------------------------------------


def test_a_report_older_than_the_newest_seen_is_acknowledged_as_stale_and_not_applied(admin_client, agent, reported):
    before = device_snapshot(reported)
    stored = admin_client.get(current_state_url(reported.uuid)).json()
    everything = target_sensors(reported)

    response = report(agent, reported, 3, everything, health={}, seq=9)

    answer = verdict(response, reported)
    assert answer["outcome"] == "stale"
    assert answer["appliedVersion"] == 3
    assert answer["sensors"]["b"]["status"] == "failed"  # what the table says, not what the stale report says
    after = device_snapshot(reported)
    assert after["current"] == before["current"]
    assert after["sensors"] == before["sensors"]
    assert after["events"] == before["events"]
    assert after["target"] == before["target"]
    assert after["device"]["last_report_seq"] == 10
    assert admin_client.get(current_state_url(reported.uuid)).json() == stored
    assert stored["seq"] == 10

    # A newer one is applied.
    answer = verdict(report(agent, reported, 3, everything, health={}, seq=11), reported)
    assert answer["outcome"] == "applied"
    assert answer["inSync"] is True
    assert admin_client.get(current_state_url(reported.uuid)).json()["seq"] == 11


def test_an_offline_queue_flushed_oldest_first_ends_on_the_newest_report(admin_client, agent, reported):
    everything = target_sensors(reported)
    outcomes = [
        verdict(report(agent, reported, 3, everything[:1], health={}, seq=20), reported)["outcome"],
        verdict(report(agent, reported, 3, everything, health={}, seq=21), reported)["outcome"],
        verdict(report(agent, reported, 3, everything[:1], health={}, seq=20), reported)["outcome"],  # retried
    ]
    assert outcomes == ["applied", "applied", "stale"]
    current = admin_client.get(current_state_url(reported.uuid)).json()
    assert current["seq"] == 21
    assert [s["name"] for s in current["config"]["sensors"]] == ["a", "b"]


def test_a_stale_answer_names_both_the_stale_and_the_applied_version(agent, reported):
    answer = verdict(report(agent, reported, 2, [], health={}, seq=3), reported)
    assert answer["outcome"] == "stale"
    assert (answer["reportedVersion"], answer["appliedVersion"], answer["targetVersion"]) == (2, 3, 3)


def test_a_report_older_by_reported_at_is_stale(admin_client, agent, device):
    add_sensor(admin_client, device, sensor_payload("a"))
    running = target_sensors(device)
    newer = verdict(report(agent, device, 2, running, reported_at="2025-11-02T10:00:10+00:00"), device)
    assert newer["outcome"] == "applied"
    before = device_snapshot(device)

    older = verdict(report(agent, device, 2, [], reported_at="2025-11-02T11:00:05+01:00"), device)  # 10:00:05Z

    assert older["outcome"] == "stale"
    after = device_snapshot(device)
    assert after["current"] == before["current"]
    assert after["sensors"] == before["sensors"]
    assert after["events"] == before["events"]
    later = verdict(report(agent, device, 2, [], reported_at="2025-11-02T10:00:11Z"), device)
    assert later["outcome"] == "applied"
    assert later["sensors"]["a"]["status"] == "failed"


def test_seq_and_reported_at_are_separate_clocks(admin_client, agent, device):
    """A ``reported_at`` (microseconds since 1970, ~10**15) once shared the seq's high-water mark, and left every
    later seq stale for good. Each clock is compared only with its own kind."""
    add_sensor(admin_client, device, sensor_payload("a"))
    running = target_sensors(device)
    assert verdict(report(agent, device, 2, [], reported_at="2025-11-02T10:00:10Z"), device)["outcome"] == "applied"

    sent = [(1, running), (0, []), (2, [])]
    outcomes = [verdict(report(agent, device, 2, sensors, seq=seq), device)["outcome"] for seq, sensors in sent]

    assert outcomes == ["applied", "stale", "applied"]
    stored = Device.objects.get(pk=device.pk)
    assert (stored.last_report_seq, stored.last_report_clock_us) == (2, 1762077610 * 10**6)
    assert admin_client.get(current_state_url(device.uuid)).json()["seq"] == 2  # never a reported_at
    older = verdict(report(agent, device, 2, [], seq=5, reported_at="2025-11-02T10:00:09Z"), device)
    assert older["outcome"] == "stale"  # older on one of its clocks is older


def test_an_identical_newer_report_makes_an_older_one_stale(admin_client, agent, reported, settings):
    """seq 10 is stored; seq 12 repeats it (unchanged, so nothing is applied) but is still the newest seen: the
    seq 11 that arrives after it, with other content, is stale, not applied over it."""
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 3600  # no liveness write is due: only the new seq is
    stored = admin_client.get(current_state_url(reported.uuid)).json()

    repeat = verdict(report(agent, reported, 3, reported.running, health=reported.health, seq=12), reported)
    late = verdict(report(agent, reported, 3, target_sensors(reported), health={}, seq=11), reported)

    assert (repeat["outcome"], late["outcome"]) == ("unchanged", "stale")
    assert Device.objects.get(pk=reported.pk).last_report_seq == 12
    assert admin_client.get(current_state_url(reported.uuid)).json() == stored


def test_a_report_with_the_same_seq_but_other_content_is_applied(agent, reported):
    # Equal is not older: only a seq below the newest one seen is stale.
    answer = verdict(report(agent, reported, 3, target_sensors(reported), health={}, seq=10), reported)
    assert answer["outcome"] == "applied"
    assert answer["inSync"] is True


def test_a_rotated_key_lets_a_reprovisioned_agent_start_its_seq_over(admin_client, agent, device):
    assert verdict(report(agent, device, 1, [], seq=500), device)["outcome"] == "applied"
    assert verdict(report(agent, device, 1, [], seq=3, health={"x": {"healthy": True}}), device)["outcome"] == "stale"

    rotated = admin_client.post(rotate_key_url(device.uuid))
    device.api_key = rotated.json()["apiKey"]

    assert verdict(report(agent, device, 1, [], seq=3, health={"x": {"healthy": True}}), device)["outcome"] == "applied"


def test_a_rewritten_row_keeps_who_created_it_and_when(admin_client, agent, device):
    """Reconciliation rewrites a row through an upsert that updates everything but its creation."""
    add_sensor(admin_client, device, sensor_payload("a"))
    created = DeviceSensor.objects.values("created_by", "created_at", "updated_by").get(device=device, name="a")
    running = [{**target_sensors(device)[0], "metadata": {"firmware": "2.1"}}]

    assert verdict(report(agent, device, 2, running, seq=1), device)["outcome"] == "applied"

    row = DeviceSensor.objects.get(device=device, name="a")
    assert row.metadata == {"firmware": "2.1"}
    assert (row.created_by, row.created_at) == (created["created_by"], created["created_at"])
    assert row.updated_by == f"agent:{device.uuid}"
    assert row.updated_at > created["created_at"]


@pytest.mark.parametrize(
    ("clock", "field"),
    [({"seq": "soon"}, "seq"), ({"seq": 12, "uptime": -5}, "uptime"), ({"reported_at": "yesterday"}, "reported_at")],
)
def test_a_repeated_report_still_has_its_clock_checked(agent, reported, clock, field):
    """A repeat of the stored report skips validating what its digest covers, never what the digest leaves out."""
    before = device_snapshot(reported)
    body = {**{"seq": None}, **clock}

    response = report(agent, reported, 3, reported.running, health=reported.health, **body)

    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert device_snapshot(reported) == before


def test_null_optional_facts_are_read_as_not_sent(agent, reported):
    """os_version, agent_version, local_ip, uptime, seq and reported_at may be null (the OpenAPI schema says so)."""
    facts = dict.fromkeys(("os_version", "agent_version", "local_ip", "uptime", "reported_at"))

    response = report(agent, reported, 3, reported.running, health={}, seq=None, **facts)

    assert verdict(response, reported)["outcome"] == "applied"
    device = fresh(reported)
    assert (device.os_version, device.agent_version, str(device.ip_address)) == (
        "Debian GNU/Linux 12",
        "2.4.1",
        "192.168.1.20",
    )
