"""Reports racing for one device (SPEC section 5: "Two reports for one device never interleave (row lock): the
later one wins"). Real threads, each with its own client and database connection; PostgreSQL only."""

import itertools
import threading
from collections import Counter

import pytest
from django.db import connection
from django.test import Client

from devices.models import DeviceCurrentState, DeviceTargetState
from reconciliation.agent_protocol import health_merge
from reconciliation.models import DriftEpisode
from sensors.models import DeviceSensor
from tests.helpers import (
    drift,
    events_of,
    put_target,
    reconcile_url,
    report,
    report_entry,
    sensor_payload,
    sensors_url,
    target_sensors,
    verdict,
)

THREADS = 20


def _race(device, bodies: list[tuple[list[dict], dict]]) -> list:
    """Send every report at once (one thread each); returns (status, outcome or error body) per report."""
    barrier = threading.Barrier(len(bodies))
    results: list = [None] * len(bodies)

    def send(index: int, sensors: list[dict], extra: dict) -> None:
        try:
            client = Client()
            barrier.wait(timeout=30)
            response = report(client, device, extra.pop("version"), sensors, **extra)
            body = response.json() if response.content else None
            results[index] = (response.status_code, body)
        except Exception as exc:  # reported by the assertions on the results
            results[index] = ("exception", repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(i, s, dict(e))) for i, (s, e) in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a report never finished"
    return results


def _outcomes(device, results) -> list[str]:
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: len(results)}, (statuses, [r for r in results if r[0] != 200][:2])
    return [body[str(device.uuid)]["outcome"] for _, body in results]


def _assert_gapless(device) -> None:
    sequences = [event.sequence for event in events_of(device)]
    assert sequences == list(range(1, len(sequences) + 1)), sequences


def _assert_rows_are_the_projection(admin_client, device) -> None:
    names = list(DeviceSensor.objects.filter(device_id=device.pk).values_list("name", flat=True))
    assert len(names) == len(set(names)), Counter(names).most_common(3)
    response = admin_client.post(reconcile_url(device.uuid))
    assert response.status_code == 200, response.content
    result = response.json()
    assert (result["inserted"], result["updated"], result["removed"]) == (0, 0, 0), result


def _varied_reports(device, *, first_seq: int, last_in_sync: bool) -> list[tuple[list[dict], dict]]:
    """Twenty different reports with increasing seq, alternating between in sync (everything runs at the target
    version) and drifting (another subset, another poll interval, another version), so that every report that
    wins the lock changes the device's drift state."""
    desired = target_sensors(device)
    bodies = []
    for i in range(THREADS):
        if (i % 2 == 1) == last_in_sync:
            running, version = desired, 2
            # Health the agent names differently each time, so that each in-sync report is a new one too (what only
            # moves between polls, like a counter, would not make it new: it is not part of the report's identity).
            health = {"s0": {"healthy": True, "lastError": None, "checks": i}, f"probe-{i}": {"healthy": True}}
        else:
            running = [dict(s, pollInterval=s["pollInterval"] + 1 + i % 3) for s in desired[: 1 + i % 4]]
            version = 1 + (i // 2) % 2
            health = {s["name"]: {"healthy": False, "lastError": f"error {i}"} for s in desired[len(running) :]}
        bodies.append((running, {"version": version, "seq": first_seq + i, "health": health, "uptime": i}))
    return bodies


def _as_stored(running: list[dict]) -> list[dict]:
    """Reported sensors as the stored report keeps them: the agent's own ids are not the sensors' ids."""
    return [{**sensor, "id": None} for sensor in running]


def _assert_consistent_before_repair(admin_client, device) -> None:
    """What a manual reconcile would hide: the drift view, the target's flag, the drift events and the report
    events must agree with the rows the race left."""
    stored = DeviceCurrentState.objects.get(device_id=device.pk)
    target = DeviceTargetState.objects.get(device_id=device.pk)
    statuses = dict(DeviceSensor.objects.filter(device_id=device.pk).values_list("name", "deployment_status"))
    drifting = sorted(name for name, status in statuses.items() if status != "deployed")
    in_sync = stored.version == target.version and not drifting
    problems = []
    explained = drift(admin_client, device)
    if explained["inSync"] is not in_sync:
        problems.append(f"GET drift says inSync={explained['inSync']} (stage {explained['stage']}), rows {statuses}")
    if target.needs_deployment is in_sync:
        problems.append(f"needs_deployment={target.needs_deployment} but V={stored.version}, rows {statuses}")
    last = [e for e in events_of(device) if e.type in ("device.config_drift", "device.in_sync")][-1]
    if in_sync and last.type != "device.in_sync":
        problems.append(f"in sync, but the last drift event is {last.type} {last.data}")
    if not in_sync and (
        last.type != "device.config_drift" or [s["name"] for s in last.data["drifting_sensors"]] != drifting
    ):
        problems.append(f"drifting {drifting}, but the last drift event is {last.type} {last.data}")
    failures = [e.data for e in events_of(device) if e.type == "device.reconcile_failed"]
    if failures:
        problems.append(f"reconciliation failed {len(failures)} times: {failures[:2]}")
    open_episodes = DriftEpisode.objects.filter(device_id=device.pk, ended_at__isnull=True).count()
    if open_episodes != (0 if in_sync else 1):
        problems.append(f"{open_episodes} open drift episodes while in_sync={in_sync}")
    # The reports were applied one after another: each names the version of the one applied before it.
    reported = [e.data for e in events_of(device) if e.type == "current_state.reported"]
    for before, after in itertools.pairwise(reported):
        if after["previous_version"] != before["version"]:
            problems.append(f"a report says previous_version={after['previous_version']}, was {before['version']}")
            break
    assert not problems, problems


@pytest.fixture
def five_sensor_device(admin_client, device):
    put_target(admin_client, device, [sensor_payload(f"s{i}", pollInterval=1000 * (i + 1)) for i in range(5)])
    return device


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("last_in_sync", [True, False], ids=["ends-in-sync", "ends-drifting"])
def test_concurrent_different_reports_serialize_and_the_newest_seq_wins(
    admin_client, agent, five_sensor_device, last_in_sync
):
    device = five_sensor_device
    verdict(report(agent, device, 1, [], seq=1), device)  # the device has reported before
    bodies = _varied_reports(device, first_seq=2, last_in_sync=last_in_sync)

    outcomes = _outcomes(device, _race(device, bodies))

    newest_running, newest = bodies[-1]
    assert outcomes[-1] == "applied"
    assert set(outcomes) <= {"applied", "stale"}
    stored = DeviceCurrentState.objects.get(device_id=device.pk)
    assert stored.seq == newest["seq"] == THREADS + 1
    assert stored.version == newest["version"]
    assert stored.config["sensors"] == _as_stored(newest_running)
    assert set(health_merge(stored.sensor_health)) == set(newest["health"])
    reported_events = [e for e in events_of(device) if e.type == "current_state.reported"]
    assert len(reported_events) == 1 + outcomes.count("applied")
    _assert_gapless(device)
    _assert_consistent_before_repair(admin_client, device)
    _assert_rows_are_the_projection(admin_client, device)
    running = set(DeviceSensor.objects.filter(device_id=device.pk, running=True).values_list("name", flat=True))
    assert running == {s["name"] for s in newest_running}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_different_first_reports_serialize_and_the_newest_seq_wins(admin_client, five_sensor_device):
    device = five_sensor_device
    bodies = _varied_reports(device, first_seq=1, last_in_sync=True)

    outcomes = _outcomes(device, _race(device, bodies))

    assert outcomes[-1] == "applied"
    stored = DeviceCurrentState.objects.get(device_id=device.pk)
    assert stored.seq == THREADS
    assert stored.config["sensors"] == _as_stored(bodies[-1][0])
    _assert_gapless(device)
    _assert_consistent_before_repair(admin_client, device)
    _assert_rows_are_the_projection(admin_client, device)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_first_reports_are_recorded_once(admin_client, five_sensor_device):
    device = five_sensor_device
    same = target_sensors(device)
    bodies = [(same, {"version": 2}) for _ in range(THREADS)]
    assert "seq" not in report_entry(2, same)

    outcomes = _outcomes(device, _race(device, bodies))

    assert sorted(outcomes) == ["applied"] + ["unchanged"] * (THREADS - 1)
    assert [e.type for e in events_of(device)].count("current_state.reported") == 1
    assert [e.type for e in events_of(device)].count("device.in_sync") == 1
    _assert_gapless(device)
    _assert_consistent_before_repair(admin_client, device)
    _assert_rows_are_the_projection(admin_client, device)
    assert set(DeviceSensor.objects.filter(device_id=device.pk).values_list("deployment_status", flat=True)) == {
        "deployed"
    }


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_reports_racing_staff_writes_leave_the_rows_the_projection_of_the_final_target(
    admin_client, superuser, agent, five_sensor_device
):
    """SPEC 9: several app servers, one PostgreSQL, correctness holds. A member of staff adds sensors one after
    another while the agent's reports race them: every write lands, and the rows are the projection of the
    final target and the last report (a report must never be reconciled against a superseded target)."""
    from rest_framework.test import APIClient

    from devices.models import DeviceTargetStateVersion

    device = five_sensor_device
    verdict(report(agent, device, 2, target_sensors(device), seq=1), device)
    reports = _varied_reports(device, first_seq=2, last_in_sync=True)[:10]
    barrier = threading.Barrier(1 + len(reports))
    staff_results: list = []
    report_results: list = [None] * len(reports)

    def staff_adds() -> None:
        try:
            client = APIClient()
            client.force_authenticate(superuser)
            barrier.wait(timeout=30)
            for i in range(10):
                response = client.post(sensors_url(device.uuid), sensor_payload(f"new-{i}"), format="json")
                staff_results.append((response.status_code, response.json()))
        except Exception as exc:  # reported by the assertions on the results
            staff_results.append(("exception", repr(exc)))
        finally:
            connection.close()

    def agent_report(index: int, running: list[dict], extra: dict) -> None:
        try:
            client = Client()
            barrier.wait(timeout=30)
            response = report(client, device, extra.pop("version"), running, **extra)
            report_results[index] = (response.status_code, response.json())
        except Exception as exc:  # reported by the assertions on the results
            report_results[index] = ("exception", repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=staff_adds)]
    threads += [threading.Thread(target=agent_report, args=(i, r, dict(e))) for i, (r, e) in enumerate(reports)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert [status for status, _ in staff_results] == [201] * 10, staff_results[:2]
    _outcomes(device, report_results)
    target = DeviceTargetState.objects.get(device_id=device.pk)
    assert target.version == 2 + 10
    assert sorted(s["name"] for s in target.config["sensors"]) == sorted(
        [f"s{i}" for i in range(5)] + [f"new-{i}" for i in range(10)]
    )
    versions = list(DeviceTargetStateVersion.objects.filter(device_id=device.pk).values_list("version", flat=True))
    assert sorted(versions) == list(range(1, 13))
    rows_now = set(DeviceSensor.objects.filter(device_id=device.pk).values_list("name", flat=True))
    assert {f"new-{i}" for i in range(10)} <= rows_now  # every desired sensor has a row
    _assert_gapless(device)
    _assert_consistent_before_repair(admin_client, device)
    _assert_rows_are_the_projection(admin_client, device)
