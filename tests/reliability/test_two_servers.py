"""SPEC section 9: the app servers are stateless; several behind a load balancer against one PostgreSQL keep
correctness. Two real server processes (``manage.py runserver --noreload`` on two free 127.0.0.1 ports) against
the committed test database, hammered at once with agent reports and staff edits for the same device.
"""

import itertools
import json
import threading
from collections import Counter

import pytest

from devices.models import Device, DeviceCurrentState, DeviceTargetState, DeviceTargetStateVersion
from events.models import Event
from tests.helpers import (
    REPORT_URL,
    assert_gapless,
    assert_target_history_contiguous,
    device_with,
    read_model_and_log_consistent,
    report_body,
    sensor_payload,
    sensor_url,
    sensors_url,
    target_sensors,
)
from tests.servers import ServerProcesses, http

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WORKERS = 8
ROUNDS = 20


@pytest.fixture
def servers(tmp_path):
    # The agent budget is not under test here (tests/security/test_rate_limits.py covers it).
    with ServerProcesses(2, env={"SENSORSYNC_AGENT_RATE_LIMIT": "off"}, log_dir=tmp_path) as running:
        yield running


def test_two_servers_hammered_with_reports_and_edits_for_one_device_stay_consistent(servers, staff_token):
    device = device_with("s-0", "s-1", "s-2")
    desired = target_sensors(device)
    staff = {"Authorization": f"Token {staff_token}", "Content-Type": "application/json"}
    agent = {"X-Device-API-Key": device.api_key, "Content-Type": "application/json"}
    seqs = itertools.count(1)
    lock = threading.Lock()
    answers: list[tuple[str, int, bytes]] = []
    created: list[str] = []

    def worker(index: int) -> None:
        for round_ in range(ROUNDS):
            server = index + round_  # alternate between the two processes
            kind = (index + round_) % 4
            if kind in (0, 1):
                with lock:
                    seq = next(seqs)
                running = [dict(s, pollInterval=s["pollInterval"] + seq % 3) for s in desired[: 1 + seq % 3]]
                raw = report_body(device, 3 + seq % 2, running, seq=seq)
                status, _, body = http("PATCH", servers.url(server, REPORT_URL), body=raw, headers=agent)
                label = "report"
            elif kind == 2:
                name = f"w{index}-r{round_}"
                payload = json.dumps(sensor_payload(name)).encode()
                status, _, body = http(
                    "POST", servers.url(server, sensors_url(device.uuid)), body=payload, headers=staff
                )
                if status == 201:
                    with lock:
                        created.append(name)
                label = "create"
            else:
                payload = json.dumps({"pollInterval": 1000 + index * 100 + round_}).encode()
                url = servers.url(server, sensor_url(device.uuid, f"s-{round_ % 3}"))
                status, _, body = http("PATCH", url, body=payload, headers=staff)
                label = "patch"
            with lock:
                answers.append((label, status, body))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a request never finished"

    by_kind = Counter((label, status) for label, status, _ in answers)
    failures = [(label, status, body[:200]) for label, status, body in answers if status not in (200, 201)]
    assert not failures, (by_kind, failures[:5], servers.logs()[-2000:])
    assert len(answers) == WORKERS * ROUNDS

    reports = by_kind[("report", 200)]
    patches = by_kind[("patch", 200)]
    target = DeviceTargetState.objects.get(device=device)
    # Every create and every patch (each a different value) made exactly one new version.
    assert target.version == 4 + len(created) + patches, (target.version, len(created), patches)
    assert sorted(created) == sorted(s["name"] for s in target.config["sensors"] if s["name"].startswith("w"))
    assert DeviceTargetStateVersion.objects.filter(device=device).count() == target.version
    assert_target_history_contiguous(device)
    assert_gapless(device.uuid)
    assert Device.objects.get(pk=device.pk).last_report_seq == reports  # the newest seq was seen last
    assert DeviceCurrentState.objects.get(device=device).version in (3, 4)
    assert Event.objects.filter(aggregate_id=str(device.uuid), type="sensor.added").count() == 3 + len(created)
    assert read_model_and_log_consistent() == []
