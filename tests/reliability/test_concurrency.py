"""Concurrency on PostgreSQL: real threads, each with its own client and database connection.

Reports racing for one device and for many devices, staff edits racing with the same If-Match, a race to create
the same sensor name, and unconditional edits piling up: never a 5xx, exactly one winner where one is expected,
target versions strictly increasing with none reused, per-device event sequences gapless, and the read model and
the event log consistent afterwards (``rebuild_read_model --check``, ``replay_events --check``).
"""

import json
import random
from collections import Counter

import pytest

from devices.models import Device, DeviceCurrentState, DeviceTargetState, DeviceTargetStateVersion
from events.models import Event
from tests.helpers import (
    REPORT_URL,
    agent_headers,
    assert_gapless,
    assert_target_history_contiguous,
    device_with,
    read_model_and_log_consistent,
    report_body,
    sensor_payload,
    sensor_url,
    sensors_url,
    staff_headers,
    target_sensors,
    target_state_url,
)

from .conftest import run_parallel

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 16


def _answer(response) -> tuple[int, dict | None]:
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = {"raw": response.content[:200].decode("utf-8", "replace")}
    return response.status_code, body


def _report_call(device, version, sensors, **kwargs):
    raw = report_body(device, version, sensors, **kwargs)

    def call(client):
        return _answer(
            client.generic(
                "PATCH", REPORT_URL, data=raw, content_type="application/json", headers=agent_headers(device.api_key)
            )
        )

    return call


def _statuses(results) -> Counter:
    return Counter(status for status, _ in results)


def test_parallel_reports_with_seq_for_one_device_serialize_and_the_newest_wins():
    device = device_with("s-0", "s-1", "s-2", "s-3")
    desired = target_sensors(device)
    calls = []
    for i in range(THREADS):
        running = [dict(s, pollInterval=s["pollInterval"] + i) for s in desired[: 1 + i % 4]]
        calls.append(_report_call(device, 5 if i % 2 else 4, running, seq=i + 1, uptime=i))
    random.Random(7).shuffle(calls)

    results = run_parallel(calls)

    assert _statuses(results) == {200: THREADS}, results[:3]
    outcomes = Counter(body[str(device.uuid)]["outcome"] for _, body in results)
    assert set(outcomes) <= {"applied", "stale"}, outcomes
    current = DeviceCurrentState.objects.get(device=device)
    assert current.seq == THREADS  # the newest report is never stale, whenever it arrived
    reported = Event.objects.filter(aggregate_id=str(device.uuid), type="current_state.reported").count()
    assert reported == outcomes["applied"]
    assert_gapless(device.uuid)
    assert read_model_and_log_consistent() == []


def test_parallel_distinct_reports_without_seq_are_all_applied_one_after_another():
    device = device_with("s-0", "s-1")
    desired = target_sensors(device)
    calls = [_report_call(device, 3, [dict(desired[0], pollInterval=1000 + i)]) for i in range(THREADS)]

    results = run_parallel(calls)

    assert _statuses(results) == {200: THREADS}, results[:3]
    assert {body[str(device.uuid)]["outcome"] for _, body in results} == {"applied"}
    events = list(
        Event.objects.filter(aggregate_id=str(device.uuid), type="current_state.reported").order_by("sequence")
    )
    assert len(events) == THREADS
    digests = [e.data["digest"] for e in events]
    assert len(set(digests)) == THREADS
    # The stored report is the one applied last (under the lock), not an interleaving of two.
    assert DeviceCurrentState.objects.get(device=device).digest == digests[-1]
    assert_gapless(device.uuid)
    assert read_model_and_log_consistent() == []


def test_parallel_reports_for_many_devices_keep_every_device_consistent():
    devices = [device_with("a", "b", name=f"fleet-{i}") for i in range(8)]
    calls = []
    for device in devices:
        desired = target_sensors(device)
        for seq in range(1, 5):
            calls.append(_report_call(device, 3 if seq % 2 else 2, desired[: seq % 3], seq=seq))
    random.Random(11).shuffle(calls)

    results = run_parallel(calls)

    assert _statuses(results) == {200: len(calls)}, [r for r in results if r[0] != 200][:3]
    for device in devices:
        assert DeviceCurrentState.objects.get(device=device).seq == 4
        assert_gapless(device.uuid)
    assert read_model_and_log_consistent() == []


def _edit_call(method: str, url: str, body, headers: dict):
    data = json.dumps(body) if body is not None else ""

    def call(client):
        return _answer(client.generic(method, url, data=data, content_type="application/json", headers=headers))

    return call


EDITS = {
    # name: (method, url(device), body(i)) -- every body is a real change, different per thread
    "sensor-patch": ("PATCH", lambda d: sensor_url(d.uuid, "s-0"), lambda i: {"pollInterval": 1000 + i}),
    "sensor-put": ("PUT", lambda d: sensor_url(d.uuid, "s-0"), lambda i: {"protocol": "can", "connection": {"bus": i}}),
    "sensor-create": ("POST", lambda d: sensors_url(d.uuid), lambda i: sensor_payload(f"new-{i}")),
    "sensor-delete": ("DELETE", lambda d: sensor_url(d.uuid, f"s-{d.index}"), None),
    "target-put": (
        "PUT",
        lambda d: target_state_url(d.uuid),
        lambda i: {"config": {"sensors": [sensor_payload(f"only-{i}")]}},
    ),
    "rollback": ("POST", lambda d: target_state_url(d.uuid) + "/rollback", lambda i: {"version": 1 + i % 3}),
}


@pytest.mark.parametrize("kind", list(EDITS))
def test_parallel_edits_with_the_same_if_match_have_exactly_one_winner(staff_token, kind):
    names = [f"s-{i}" for i in range(THREADS)]
    device = device_with(*names)
    version = DeviceTargetState.objects.get(device=device).version
    etag = f'"{version}"'
    history_before = DeviceTargetStateVersion.objects.filter(device=device).count()
    method, url, body = EDITS[kind]
    headers = {**staff_headers(staff_token), "If-Match": etag}
    calls = []
    for i in range(THREADS):
        device.index = i  # the sensor a DELETE removes: each thread its own
        calls.append(_edit_call(method, url(device), body(i) if body else None, headers))

    results = run_parallel(calls)

    statuses = _statuses(results)
    winners = [r for r in results if 200 <= r[0] < 300]
    assert len(winners) == 1, statuses
    assert statuses[412] == THREADS - 1, (statuses, [r for r in results if r[0] not in (200, 201, 204, 412)][:3])
    for status, body_ in results:
        if status == 412:
            assert body_["error"] and body_["message"], body_
    target = DeviceTargetState.objects.get(device=device)
    assert target.version == version + 1
    assert DeviceTargetStateVersion.objects.filter(device=device).count() == history_before + 1
    assert_target_history_contiguous(device)
    assert_gapless(device.uuid)
    assert read_model_and_log_consistent() == []


def test_a_race_to_create_the_same_sensor_name_has_one_winner_and_clear_refusals(staff_token):
    device = device_with("s-0")
    version = DeviceTargetState.objects.get(device=device).version
    headers = staff_headers(staff_token)
    calls = [
        _edit_call("POST", sensors_url(device.uuid), sensor_payload("contested", pollInterval=1000 + i), headers)
        for i in range(THREADS)
    ]

    results = run_parallel(calls)

    statuses = _statuses(results)
    assert statuses[201] == 1, statuses
    assert sum(statuses[s] for s in (400, 409)) == THREADS - 1, (statuses, results[:2])
    for status, body in results:
        if status != 201:
            assert isinstance(body.get("error"), str) and isinstance(body.get("message"), str), body
    target = DeviceTargetState.objects.get(device=device)
    assert [s["name"] for s in target.config["sensors"]].count("contested") == 1
    assert target.version == version + 1
    assert_target_history_contiguous(device)
    assert_gapless(device.uuid)
    assert read_model_and_log_consistent() == []


def test_unconditional_edits_piling_up_get_strictly_increasing_versions_none_reused(staff_token):
    device = device_with()
    headers = staff_headers(staff_token)
    per_thread = 3

    def adds(thread: int):
        def call(client):
            answers = []
            for n in range(per_thread):
                url = sensors_url(device.uuid)
                body = json.dumps(sensor_payload(f"t{thread}-{n}"))
                answers.append(
                    _answer(client.generic("POST", url, data=body, content_type="application/json", headers=headers))
                )
            return (max(status for status, _ in answers), answers)

        return call

    results = run_parallel([adds(t) for t in range(THREADS)])

    assert all(status == 201 for status, _ in results), [r for r in results if r[0] != 201][:2]
    total = THREADS * per_thread
    target = DeviceTargetState.objects.get(device=device)
    assert target.version == 1 + total
    assert len(target.config["sensors"]) == total
    assert_target_history_contiguous(device)
    # Each version holds exactly one sensor more than the one before: no edit was lost or applied twice.
    counts = [
        len(config["sensors"])
        for config in DeviceTargetStateVersion.objects.filter(device=device)
        .order_by("version")
        .values_list("config", flat=True)
    ]
    assert counts == list(range(0, total + 1)), counts
    added = Event.objects.filter(aggregate_id=str(device.uuid), type="sensor.added").values_list("data", flat=True)
    assert sorted(d["version"] for d in added) == list(range(2, total + 2))
    assert_gapless(device.uuid)
    assert read_model_and_log_consistent() == []


def test_reports_and_edits_racing_for_one_device_leave_it_consistent(staff_token):
    device = device_with("s-0", "s-1", "s-2")
    headers = staff_headers(staff_token)
    desired = target_sensors(device)
    calls = []
    for i in range(THREADS):
        if i % 2:
            calls.append(_report_call(device, 4, desired[: 1 + i % 3], seq=i))
        else:
            calls.append(
                _edit_call("PATCH", sensor_url(device.uuid, f"s-{i % 3}"), {"pollInterval": 2000 + i}, headers)
            )

    results = run_parallel(calls)

    assert set(_statuses(results)) == {200}, _statuses(results)
    assert DeviceTargetState.objects.get(device=device).version == 4 + THREADS // 2
    # The newest report wins: applied, or an identical repeat of what is stored (a no-op that keeps its order).
    assert Device.objects.get(pk=device.pk).last_report_seq == THREADS - 1
    newest = [s["name"] for s in desired[: 1 + (THREADS - 1) % 3]]
    stored = DeviceCurrentState.objects.get(device=device).config["sensors"]
    assert [s["name"] for s in stored] == newest
    assert_target_history_contiguous(device)
    assert_gapless(device.uuid)
    assert read_model_and_log_consistent() == []
