"""Reliability round 2 (issue "what an attacker and a chaos test broke"), the agent's path: the event INSERT
under the database's parameter limit and in linear cost, a bound on the work one request can cause, a key
revoked while a report is in flight, clocks far ahead, 1e400, and what a database error is said to be."""

import logging
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from devices.locking import device_row_lock
from devices.models import Device, DeviceAccessRevoked
from devices.selectors import device_for_report
from devices.services import device_key_rotate, device_update
from events.models import Event
from events.services import event_recording
from reconciliation.agent_protocol import RepeatedReport, StoredReport, report_parse
from reconciliation.services import reports
from sensorsync_project.database import database_unavailable
from tests.helpers import (
    add_sensor,
    device_snapshot,
    device_url,
    put_target,
    report,
    report_entry,
    send_raw,
    sensor_payload,
    sensors_url,
    target_sensors,
    target_state_url,
    verdict,
)

pytestmark = pytest.mark.django_db


# 1 and 2: the event INSERT -------------------------------------------------------------------------------------


def test_thousands_of_events_in_one_unit_of_work_are_stored_gapless(device):
    """8,000 events need 64,000 parameters: one statement would pass PostgreSQL's 65,535 limit with a few more
    fields, so the INSERT is split under it; each statement reads the aggregate's last sequence once."""
    with CaptureQueriesContext(connection) as captured, event_recording(str(device.uuid)) as recorder:
        for i in range(8000):
            recorder.record("sensor.deployed", {"name": f"s{i}"}, actor="test")

    inserts = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("INSERT")]
    assert inserts
    # The last sequence read once per statement (the newest event's, or the snapshot's: two MAX), however many
    # rows: the cost grows with the rows, not with rows x rows.
    assert {sql.count("MAX(") for sql in inserts} == {2}
    sequences = list(
        Event.objects.filter(aggregate_id=str(device.uuid)).order_by("sequence").values_list("sequence", flat=True)
    )
    assert sequences == list(range(1, len(sequences) + 1))
    assert len(sequences) == 8000 + 2  # the device's registration and its first target version


@pytest.fixture
def small_limit(settings):
    settings.SENSORSYNC_MAX_SENSORS_PER_DEVICE = 3
    return 3


def test_a_report_of_more_sensors_than_the_limit_is_400_and_writes_nothing(agent, device, small_limit):
    before = device_snapshot(device)
    running = [sensor_payload(f"s{i}") for i in range(small_limit + 1)]

    response = report(agent, device, 1, running)

    assert response.status_code == 400
    assert "config.sensors" in response.json()["fields"]
    assert device_snapshot(device) == before


def test_a_health_map_of_more_sensors_than_the_limit_is_400(agent, device, small_limit):
    health = {f"s{i}": {"status": "online"} for i in range(small_limit + 1)}
    response = report(agent, device, 1, [], endpoints_health=health)
    assert response.status_code == 400
    assert "endpoints_health" in response.json()["fields"]


def test_staff_cannot_give_a_device_more_sensors_than_the_limit(admin_client, device, small_limit):
    put_target(admin_client, device, [sensor_payload(f"s{i}") for i in range(small_limit)])
    response = admin_client.post(sensors_url(device.uuid), sensor_payload("one-more"), format="json")
    assert response.status_code == 400
    assert "maximum" in response.json()["fields"]["name"][0]
    too_many = {"config": {"sensors": [sensor_payload(f"t{i}") for i in range(small_limit + 1)]}}
    response = admin_client.put(target_state_url(device.uuid), too_many, format="json")
    assert response.status_code == 400
    assert "config.sensors" in response.json()["fields"]


# 1: what a database error is said to be --------------------------------------------------------------------------


class _Cause(Exception):
    def __init__(self, sqlstate):
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "unavailable"),
    [
        ("08006", True),  # connection failure
        ("57P01", True),  # admin shutdown
        ("57014", True),  # statement timeout: busy, retry
        ("40P01", True),  # deadlock: retry
        ("53300", True),  # too many connections
        ("54000", False),  # program limit exceeded: the statement, on every retry
        ("42601", False),  # syntax error: our bug
    ],
)
def test_database_errors_are_classified_by_what_a_retry_can_do(sqlstate, unavailable):
    error = OperationalError("x")
    error.__cause__ = _Cause(sqlstate)
    assert database_unavailable(error) is unavailable


def test_a_statement_the_database_refuses_is_a_server_error_not_an_outage(agent, device, monkeypatch, caplog):
    def refuse(**kwargs):
        raise OperationalError("sending query and params failed: number of parameters must be between 0 and 65535")

    monkeypatch.setattr(reports, "state_report_apply", refuse)
    with caplog.at_level(logging.WARNING):
        response = report(agent, device, 1, [])

    assert response.status_code == 500
    assert response.json()["error"] == "server_error"
    assert "Retry-After" not in response
    assert "database refused a statement" in caplog.text


# 3: a key revoked while a report is in flight ------------------------------------------------------------------


def _in_flight(device) -> Device:
    """The device as the report's lookup read it, before the lock."""
    return device_for_report(api_key=device.api_key)


def test_a_report_in_flight_when_the_key_is_rotated_writes_nothing(agent, admin_client, device):
    add_sensor(admin_client, device, sensor_payload("a"))
    running = target_sensors(device)
    verdict(report(agent, device, 2, running, seq=7), device)
    looked_up = _in_flight(device)
    device_key_rotate(uuid=device.uuid, user=None)
    before = device_snapshot(device)

    with pytest.raises(DeviceAccessRevoked) as refused:
        reports.state_report_apply(device=looked_up, report=report_parse({"version": 2, "config": {}, "seq": 9}))

    assert refused.value.status == 401
    assert device_snapshot(device) == before
    assert Device.objects.get(pk=device.pk).last_report_seq is None  # rotation's reset of the order holds


def test_an_unchanged_report_in_flight_when_the_device_is_deactivated_writes_nothing(agent, device, settings):
    """Its liveness write (due here) is guarded by the key and the active flag like the lock is."""
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 0
    verdict(report(agent, device, 1, [], seq=3), device)
    looked_up = _in_flight(device)
    device_update(uuid=device.uuid, user=None, is_active=False)
    before = device_snapshot(device)
    current = looked_up.current_state
    repeat = report_parse({"version": 1, "config": {"sensors": []}, "apps": {}, "seq": 4}, stored=None)

    with pytest.raises(DeviceAccessRevoked) as refused:
        reports.state_report_apply(device=looked_up, report=repeat)

    assert refused.value.status == 403
    assert device_snapshot(device) == before
    assert current.digest  # it had reported: the refusal is not about a missing report


def test_a_queued_report_in_flight_when_the_key_is_rotated_writes_nothing(agent, device):
    verdict(report(agent, device, 1, []), device)
    looked_up = _in_flight(device)
    device_key_rotate(uuid=device.uuid, user=None)
    events = Event.objects.count()

    with pytest.raises(DeviceAccessRevoked):
        reports.state_report_apply(device=looked_up, report=report_parse({"config": {}}))

    assert Event.objects.count() == events


# 6: clocks far ahead --------------------------------------------------------------------------------------------


def test_a_reported_at_far_in_the_future_is_400_and_later_reports_are_not_stale(agent, device, settings):
    future = (timezone.now() + timedelta(days=365)).isoformat()
    response = report(agent, device, 1, [], reported_at=future)
    assert response.status_code == 400
    assert f"{settings.SENSORSYNC_MAX_CLOCK_SKEW_SECONDS} s ahead" in response.json()["fields"]["reported_at"][0]

    now = timezone.now().isoformat()
    assert verdict(report(agent, device, 1, [], reported_at=now), device)["outcome"] == "applied"
    slightly_ahead = (timezone.now() + timedelta(seconds=30)).isoformat()  # a device clock a little fast is fine
    assert verdict(report(agent, device, 1, [{**sensor_payload("x")}], reported_at=slightly_ahead), device)[
        "outcome"
    ] == ("applied")


# 7 and 8: clocks ---------------------------------------------------------------------------------------------------


def test_a_newer_identical_report_that_meets_an_older_changed_one_is_applied_not_unchanged(agent, admin_client, device):
    """R1 (seq 12) repeats the stored report; before its liveness write, R2 (seq 11, other sensors) is applied.
    R1 must not be answered "unchanged" over R2: it is decided again under the lock, and applied."""
    add_sensor(admin_client, device, sensor_payload("a"))
    running = target_sensors(device)
    assert verdict(report(agent, device, 2, running, seq=10), device)["outcome"] == "applied"
    looked_up = _in_flight(device)
    current = looked_up.current_state_or_none()
    body = report_entry(2, running, seq=12)
    repeated = report_parse(body, stored=StoredReport(current.digest, current.parts))
    assert isinstance(repeated, RepeatedReport)

    assert verdict(report(agent, device, 2, [], seq=11), device)["outcome"] == "applied"  # R2, meanwhile
    answer = reports.state_report_apply(device=looked_up, report=repeated)

    assert answer.outcome == "applied"
    stored = Device.objects.get(pk=device.pk)
    assert stored.last_report_seq == 12
    assert stored.current_state.digest == repeated.digest
    assert [s["name"] for s in stored.current_state.config["sensors"]] == ["a"]


def test_a_report_older_on_one_clock_raises_neither_mark(device):
    """Under the lock, a report stale on seq must not raise the reported_at mark (nor the other way round)."""
    device_row_lock(where="id", value=device.pk, marks={"last_report_seq": 5, "last_report_clock_us": 1000})

    older = device_row_lock(where="id", value=device.pk, marks={"last_report_seq": 4, "last_report_clock_us": 2000})
    newer = device_row_lock(where="id", value=device.pk, marks={"last_report_seq": 6, "last_report_clock_us": 3000})

    assert (older.marks["last_report_seq"], older.marks["last_report_clock_us"]) == (5, 1000)
    assert (newer.marks["last_report_seq"], newer.marks["last_report_clock_us"]) == (6, 3000)


# 14: 1e400 ------------------------------------------------------------------------------------------------------


def test_a_number_beyond_a_double_is_a_quiet_400(agent, device, caplog):
    before = device_snapshot(device)
    sensor_with_inf = b'{"name": "a", "protocol": "modbus", "metadata": {"x": 1e400}}'
    body = b'{"%s": {"version": 1, "config": {"sensors": [%s]}}}' % (str(device.uuid).encode(), sensor_with_inf)
    with caplog.at_level(logging.WARNING):
        response = send_raw(agent, body, key=device.api_key)

    assert response.status_code == 400
    assert response.json()["error"] == "malformed_json"
    assert "out of range" in response.json()["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert device_snapshot(device) == before


def test_the_management_api_says_the_same_of_a_refused_statement(admin_client, device, monkeypatch):
    from devices import services as device_services

    def refuse(**kwargs):
        raise OperationalError("sending query and params failed: number of parameters must be between 0 and 65535")

    monkeypatch.setattr(device_services, "device_update", refuse)
    admin_client.raise_request_exception = False
    response = admin_client.patch(device_url(device.uuid), {"name": "x"}, format="json")

    assert response.status_code == 500
    assert response.json()["error"] == "server_error"
