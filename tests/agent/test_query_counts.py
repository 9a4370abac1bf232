"""The agent's hot paths run a fixed, small number of SQL statements whatever the number of sensors (SPEC
section 6; at most 8 per report).

Counts are exact. Where the endpoint opens a transaction, the counts include the SAVEPOINT and RELEASE of the
test's own transaction around it (in production that is BEGIN/COMMIT, which Django does not count), so the
production statement count is the number minus 2. A change to any number is a change to the hot path and must be
deliberate.
"""

import pytest

from tests.helpers import (
    device_snapshot,
    events_after,
    last_event_id,
    poll,
    put_target,
    report,
    send_body,
    sensor_payload,
    target_sensors,
    verdict,
)

pytestmark = pytest.mark.django_db

SIZES = [1, 20, 200, 1000]
SAVEPOINTS = 2  # the test transaction's SAVEPOINT + RELEASE around the endpoint's atomic block

# key lookup (device, target, stored report digest in one SELECT); lock the device by writing its liveness (UPDATE
# ... RETURNING); INSERT/UPDATE the current state; SELECT the sensor rows; one upsert of the changed rows; UPDATE
# the target (sync flag, cached statuses, drift); the drift episode (INSERT when drift starts, UPDATE when it
# ends); one INSERT of the events
DEPLOY_REPORT_STATEMENTS = 8  # a first report that converges the device: the episode is closed
DRIFT_REPORT_STATEMENTS = 8  # a changed report that makes every sensor fail: an episode is opened
STEADY_CHANGED_REPORT_STATEMENTS = 6  # a changed report whose statuses stay: no target or episode write
NO_OP_STATEMENTS = 1  # unchanged or stale report, 304 poll: the key lookup; liveness written within the interval
NO_OP_LIVENESS_DUE_STATEMENTS = 2  # ... and the liveness UPDATE when it was written longer ago
METRICS_REPORT_STATEMENTS = 2  # a report that repeats the stored one with new metrics: the lookup, one UPDATE


@pytest.fixture(params=SIZES, ids=lambda n: f"{n}-sensors")
def sized(request, admin_client, device):
    """A device whose target (v2) holds ``n`` sensors, set in one PUT; never reported."""
    n = request.param
    put_target(admin_client, device, [sensor_payload(f"s{i:04}", pollInterval=1000 + i) for i in range(n)])
    device.n = n
    return device


@pytest.fixture
def coalesced_liveness(settings):
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 3600


def test_a_first_report_deploying_every_sensor(agent, sized, django_assert_num_queries):
    running = target_sensors(sized)

    with django_assert_num_queries(DEPLOY_REPORT_STATEMENTS + SAVEPOINTS):
        answer = verdict(report(agent, sized, 2, running, seq=1), sized)

    assert answer["outcome"] == "applied"
    assert answer["inSync"] is True
    assert len(answer["sensors"]) == sized.n
    assert {s["status"] for s in answer["sensors"].values()} == {"deployed"}


def test_a_changed_report_failing_every_sensor(agent, sized, django_assert_num_queries):
    running = target_sensors(sized)
    assert verdict(report(agent, sized, 2, running, seq=1), sized)["inSync"] is True
    for item in running:
        item["pollInterval"] += 1  # every sensor now runs another config

    with django_assert_num_queries(DRIFT_REPORT_STATEMENTS + SAVEPOINTS):
        answer = verdict(report(agent, sized, 2, running, seq=2), sized)

    assert answer["outcome"] == "applied"
    assert answer["inSync"] is False
    assert len(answer["sensors"]) == sized.n
    assert {s["status"] for s in answer["sensors"].values()} == {"failed"}


def test_a_changed_report_rewriting_every_row_without_a_status_change(agent, sized, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=1), sized)
    for item in running:
        item["metadata"] = {"lastValue": 21.5}  # the agent enriches metadata: every row shows new running config

    with django_assert_num_queries(STEADY_CHANGED_REPORT_STATEMENTS + SAVEPOINTS):
        answer = verdict(report(agent, sized, 2, running, seq=2), sized)

    assert answer["outcome"] == "applied"
    assert {s["status"] for s in answer["sensors"].values()} == {"deployed"}
    assert sized.sensors.filter(metadata={"lastValue": 21.5}).count() == sized.n


def test_an_unchanged_report(agent, sized, coalesced_liveness, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=1), sized)

    with django_assert_num_queries(NO_OP_STATEMENTS):
        answer = verdict(report(agent, sized, 2, running, uptime=7200), sized)  # the real agent: no clock

    assert answer["outcome"] == "unchanged"
    assert len(answer["sensors"]) == sized.n
    assert {s["status"] for s in answer["sensors"].values()} == {"deployed"}


def test_an_unchanged_report_refreshes_liveness_when_due(agent, sized, settings, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=1), sized)
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 0

    with django_assert_num_queries(NO_OP_LIVENESS_DUE_STATEMENTS):
        answer = verdict(report(agent, sized, 2, running, seq=2, uptime=7200), sized)

    assert answer["outcome"] == "unchanged"
    sized.refresh_from_db()
    assert (sized.uptime, sized.last_report_seq) == (7200, 2)


def test_an_unchanged_report_with_a_newer_clock(agent, sized, coalesced_liveness, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=1), sized)

    with django_assert_num_queries(NO_OP_LIVENESS_DUE_STATEMENTS):  # the newest seq is recorded, with liveness
        answer = verdict(report(agent, sized, 2, running, seq=2, uptime=7200), sized)

    assert answer["outcome"] == "unchanged"
    sized.refresh_from_db()
    assert (sized.uptime, sized.last_report_seq) == (7200, 2)


def test_a_metrics_report_writes_the_facts_and_reconciles_nothing(
    agent, sized, coalesced_liveness, django_assert_num_queries
):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=1), sized)
    before, last = device_snapshot(sized), last_event_id()
    metrics = {"cpu_usage": 12, "memory_usage": 300, "memory_total": 1024, "uptime": 7260.5}

    with django_assert_num_queries(METRICS_REPORT_STATEMENTS):  # the agent's 5-minute report: no clock
        answer = verdict(report(agent, sized, 2, running, gzip=True, **metrics), sized)

    assert answer["outcome"] == "unchanged"
    assert len(answer["sensors"]) == sized.n
    assert events_after(sized, last) == []
    sized.refresh_from_db()
    assert sized.facts == metrics
    after = device_snapshot(sized)
    assert {k: v for k, v in after.items() if k != "device"} == {k: v for k, v in before.items() if k != "device"}


def test_a_stale_report(agent, sized, coalesced_liveness, django_assert_num_queries):
    running = target_sensors(sized)
    verdict(report(agent, sized, 2, running, seq=5), sized)

    with django_assert_num_queries(NO_OP_STATEMENTS):
        answer = verdict(report(agent, sized, 2, running[:1], seq=4), sized)

    assert answer["outcome"] == "stale"
    assert len(answer["sensors"]) == sized.n


def test_a_first_poll_answered_200(agent, sized, django_assert_num_queries):
    # The key lookup with the content, and the UPDATE recording the fetched version.
    with django_assert_num_queries(2):
        response = poll(agent, sized)

    assert response.status_code == 200
    assert len(response.json()[str(sized.uuid)]["config"]["sensors"]) == sized.n


def test_a_poll_for_a_new_version_answered_200(agent, sized, django_assert_num_queries):
    poll(agent, sized)
    # The lean key lookup (the agent sent the ETag it has), the content, and the new fetched version.
    with django_assert_num_queries(3):
        response = poll(agent, sized, etag='"1"')

    assert response.status_code == 200
    assert response["ETag"] == '"2"'


def test_a_poll_answered_304(agent, sized, coalesced_liveness, django_assert_num_queries):
    poll(agent, sized)

    with django_assert_num_queries(NO_OP_STATEMENTS):
        response = poll(agent, sized, etag='"2"')

    assert response.status_code == 304


# The real agent's reports (SPEC section 5) -----------------------------------------------------------------------

METRICS = {"cpu_usage": 12, "memory_usage": 100, "memory_total": 1000, "uptime": 1352.84, "is_online": True}
METRICS_UPDATE_STATEMENTS = 2  # the key lookup, and one UPDATE of the device: facts and liveness together
QUEUED_STATEMENTS = 3  # the key lookup; lock the device (UPDATE ... RETURNING, liveness); one INSERT of the event
# The key lookup; the lock; the stored config the report left out; UPDATE the current state; SELECT the rows; the
# upsert of the rows whose health changed; UPDATE the target (cached statuses carry health); INSERT the events
PARTIAL_CHANGED_STATEMENTS = 8


def _health(sized, status: str) -> dict:
    return {
        f"s{i:04}": {
            "protocol": "modbus",
            "status": status,
            "connected": status == "online",
            "lastError": None if status == "online" else "connect ECONNREFUSED",
            "communicationQuality": "good" if status == "online" else "offline",
            "lastSeen": None,
            "errorCount": 0,
            "responseTimeMs": 12,  # telemetry the agent sends: not part of the report's identity
        }
        for i in range(sized.n)
    }


def _partial(version: int, **fields) -> dict:
    """A 2025-11-22 report that leaves ``config`` out (unchanged since its last report)."""
    return {"apps": {}, "is_online": True, "version": version, **fields}


@pytest.fixture
def reported_2025_11_22(agent, sized, coalesced_liveness):
    """``sized`` after a full 2025-11-22 report: every sensor deployed and online."""
    body = {"config": {"sensors": target_sensors(sized)}, "endpoints_health": _health(sized, "online")}
    assert verdict(send_body(agent, {str(sized.uuid): _partial(2, **body)}, key=sized.api_key), sized)["inSync"]
    return sized


def test_a_report_without_config_or_health_is_unchanged(agent, reported_2025_11_22, django_assert_num_queries):
    device = reported_2025_11_22
    with django_assert_num_queries(NO_OP_STATEMENTS):
        answer = verdict(send_body(agent, {str(device.uuid): _partial(2)}, key=device.api_key), device)

    assert answer["outcome"] == "unchanged"
    assert {s["health"] for s in answer["sensors"].values()} == {"online"}


def test_an_unchanged_report_with_new_metrics(agent, reported_2025_11_22, django_assert_num_queries):
    device = reported_2025_11_22
    events = last_event_id()
    body = {"endpoints_health": _health(device, "online") | {}, **METRICS}
    for entry in body["endpoints_health"].values():
        entry["responseTimeMs"], entry["lastPoll"] = 40, "2026-12-04T10:00:00Z"  # telemetry moved; health did not

    with django_assert_num_queries(METRICS_UPDATE_STATEMENTS):
        answer = verdict(send_body(agent, {str(device.uuid): _partial(2, **body)}, key=device.api_key), device)

    assert answer["outcome"] == "unchanged"
    assert events_after(device, events) == []
    device.refresh_from_db()
    assert (device.facts["cpu_usage"], device.uptime) == (12, 1352.84)


def test_a_queued_report(agent, reported_2025_11_22, django_assert_num_queries):
    device = reported_2025_11_22
    before = device_snapshot(device)
    queued = {"apps": {}, "config": {"sensors": []}, "is_online": True, **METRICS}

    with django_assert_num_queries(QUEUED_STATEMENTS + SAVEPOINTS):
        answer = verdict(send_body(agent, {str(device.uuid): queued}, key=device.api_key), device)

    assert answer["outcome"] == "queued"
    after = device_snapshot(device)
    assert (after["sensors"], after["current"]) == (before["sensors"], before["current"])


def test_a_report_without_config_whose_health_changed(agent, reported_2025_11_22, django_assert_num_queries):
    device = reported_2025_11_22
    body = _partial(2, endpoints_health=_health(device, "offline"))

    with django_assert_num_queries(PARTIAL_CHANGED_STATEMENTS + SAVEPOINTS):
        answer = verdict(send_body(agent, {str(device.uuid): body}, key=device.api_key), device)

    assert answer["outcome"] == "applied"
    assert answer["inSync"] is True  # deployed and running: health is not drift
    assert {(s["status"], s["health"]) for s in answer["sensors"].values()} == {("deployed", "offline")}
    assert device.sensors.filter(health_status="offline", running=True).count() == device.n
