"""Faults: the database connection dropping in the middle of a report or an edit, reconciliation raising, and a
slow or stuck database.

A dropped connection is real: a second connection calls ``pg_terminate_backend`` on the request's own backend at
a chosen point inside the request (the only monkeypatching here wraps a function on the request path to do
that, then lets it continue). The answer must be a JSON 503 and nothing partial may be written.
"""

import json
import threading
import time

import psycopg
import pytest
from django.db import connection
from django.test import Client

from devices.models import DeviceTargetState
from events.models import Event
from sensors.models import DeviceSensor
from tests.helpers import (
    IS_POSTGRES,
    REPORT_URL,
    agent_headers,
    assert_error_shape,
    assert_gapless,
    backend_pid,
    device_with,
    read_model_and_log_consistent,
    report_body,
    sensor_url,
    server_errors,
    snapshot_diff,
    staff_headers,
    target_sensors,
    world_snapshot,
)


def _admin_connection() -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        dbname=db["NAME"],
        user=db["USER"] or "postgres",
        password=db.get("PASSWORD") or None,
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        autocommit=True,
    )


def _terminate(pid: int) -> None:
    """Kill backend ``pid`` from another connection and wait until it is gone."""
    with _admin_connection() as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0] is True
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the terminated backend did not go away"
            time.sleep(0.02)


class Fault:
    """Wraps ``module.name`` so that its first call terminates the calling request's database backend first."""

    def __init__(self, monkeypatch, target: str):
        module_path, _, name = target.rpartition(".")
        self.fired = 0
        owner = _resolve(module_path)
        real = getattr(owner, name)

        def wrapped(*args, **kwargs):
            if not self.fired:
                self.fired += 1
                _terminate(backend_pid())
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapped)


def _resolve(path: str):
    import importlib

    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def _in_own_thread(request):
    """Run ``request(client)`` in a thread with its own database connection (the one that gets killed)."""
    result: dict = {}

    def run():
        try:
            with server_errors() as causes:
                result["response"] = request(Client(raise_request_exception=False))
            result["causes"] = causes
        except Exception as exc:  # reported by the caller
            result["exception"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the request never finished"
    assert "exception" not in result, result.get("exception")
    return result["response"], result["causes"]


@pytest.fixture
def reported(db):
    """A device with three sensors, reported once at an older version (rows, a current state, drift, events)."""
    device = device_with("s-0", "s-1", "s-2")
    response = Client().generic(
        "PATCH",
        REPORT_URL,
        data=report_body(device, 3, target_sensors(device)[:2], seq=1),
        content_type="application/json",
        headers=agent_headers(device.api_key),
    )
    assert response.status_code == 200, response.content
    return device


# ----------------------------------------------------------------------------------------------------------------
# The connection drops mid-request
# ----------------------------------------------------------------------------------------------------------------

REPORT_FAULTS = [
    # after the report row is written, before the rows are projected
    "reconciliation.services.projection.device_reconcile",
    "events.services.EventRecorder.flush",  # the unit of work's last write
]
EDIT_FAULTS = [
    "reconciliation.services.targets.device_reconcile",  # after the new target version and its history row are written
    "events.services.EventRecorder.flush",
]


def _assert_json_503(response, causes) -> None:
    body = assert_error_shape(response, 503, causes)
    assert body["error"], body
    retry_after = response.get("Retry-After")
    assert retry_after and retry_after.isdigit() and int(retry_after) > 0, retry_after


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("point", REPORT_FAULTS)
def test_the_connection_dropping_mid_report_answers_503_and_writes_nothing(reported, monkeypatch, point):
    device = reported
    raw = report_body(device, 4, target_sensors(device), seq=2)
    before = world_snapshot()
    fault = Fault(monkeypatch, point)

    response, causes = _in_own_thread(
        lambda client: client.generic(
            "PATCH", REPORT_URL, data=raw, content_type="application/json", headers=agent_headers(device.api_key)
        )
    )

    assert fault.fired == 1, "the fault point was not on the request's path"
    _assert_json_503(response, causes)
    after = world_snapshot()
    assert after == before, f"a dropped report left a partial write: {snapshot_diff(before, after)}"
    monkeypatch.undo()

    # The agent retries the same report: it is applied whole.
    retried = Client().generic(
        "PATCH", REPORT_URL, data=raw, content_type="application/json", headers=agent_headers(device.api_key)
    )
    assert retried.status_code == 200, retried.content
    assert retried.json()[str(device.uuid)]["outcome"] == "applied"
    assert retried.json()[str(device.uuid)]["inSync"] is True
    assert_gapless(device.uuid)
    assert read_model_and_log_consistent() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("point", EDIT_FAULTS)
def test_the_connection_dropping_mid_edit_answers_503_and_writes_nothing(reported, staff_token, monkeypatch, point):
    device = reported
    version = DeviceTargetState.objects.get(device=device).version
    body = json.dumps({"pollInterval": 1234})
    headers = {**staff_headers(staff_token), "If-Match": f'"{version}"'}
    before = world_snapshot()
    fault = Fault(monkeypatch, point)

    response, causes = _in_own_thread(
        lambda client: client.generic(
            "PATCH", sensor_url(device.uuid, "s-1"), data=body, content_type="application/json", headers=headers
        )
    )

    assert fault.fired == 1, "the fault point was not on the request's path"
    _assert_json_503(response, causes)
    after = world_snapshot()
    assert after == before, f"a dropped edit left a partial write: {snapshot_diff(before, after)}"
    monkeypatch.undo()

    # The retry with the same If-Match succeeds: the failed attempt used no version.
    retried = Client().generic(
        "PATCH", sensor_url(device.uuid, "s-1"), data=body, content_type="application/json", headers=headers
    )
    assert retried.status_code == 200, retried.content
    assert DeviceTargetState.objects.get(device=device).version == version + 1
    assert_gapless(device.uuid)
    assert read_model_and_log_consistent() == []


# ----------------------------------------------------------------------------------------------------------------
# Reconciliation raising (SPEC section 5)
# ----------------------------------------------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


class ReconcileFailure:
    """Makes ``device_reconcile`` (as the named module calls it) raise: at its start (nothing done yet), or at its
    end (its rows written and its events recorded), which only a savepoint or a rollback can undo."""

    def __init__(self, monkeypatch, module: str, *, when: str):
        owner = _resolve(module)
        real = owner.device_reconcile
        self.fired = 0

        def explode(**kwargs):
            self.fired += 1
            if when == "end":
                real(**kwargs)
            raise Boom(f"reconciliation failed at its {when}")

        monkeypatch.setattr(owner, "device_reconcile", explode)


RECONCILE_FAILURES = ["start", "end"]


@pytest.mark.django_db
@pytest.mark.parametrize("failure", list(RECONCILE_FAILURES))
def test_a_failing_reconciliation_keeps_the_report_leaves_the_rows_and_records_it(reported, monkeypatch, failure):
    device = reported
    raw = report_body(device, 4, target_sensors(device), seq=2)
    rows_before = list(DeviceSensor.objects.filter(device=device).order_by("name").values())
    target_before = DeviceTargetState.objects.filter(device=device).values().get()
    mark = Event.objects.order_by("-id").values_list("id", flat=True).first()
    injected = ReconcileFailure(monkeypatch, "reconciliation.services.projection", when=failure)

    response = Client(raise_request_exception=False).generic(
        "PATCH", REPORT_URL, data=raw, content_type="application/json", headers=agent_headers(device.api_key)
    )

    assert injected.fired == 1, "reconciliation.services.projection.device_reconcile is no longer on the report's path"
    assert response.status_code == 200, response.content
    verdict = response.json()[str(device.uuid)]
    assert verdict["outcome"] == "applied" and "failed" in verdict.get("reconciliation", ""), verdict
    assert list(DeviceSensor.objects.filter(device=device).order_by("name").values()) == rows_before
    assert DeviceTargetState.objects.filter(device=device).values().get() == target_before
    new = list(Event.objects.filter(aggregate_id=str(device.uuid), id__gt=mark).order_by("sequence"))
    # Only the report and the failure: no event may claim what the rolled-back reconciliation did.
    assert [e.type for e in new] == ["current_state.reported", "device.reconcile_failed"]
    assert new[1].data["error"] == "Boom"
    monkeypatch.undo()

    # The agent's next report (the same one: its reality did not change) repairs the rows.
    again = Client().generic(
        "PATCH", REPORT_URL, data=raw, content_type="application/json", headers=agent_headers(device.api_key)
    )
    assert again.status_code == 200
    assert again.json()[str(device.uuid)]["inSync"] is True
    assert read_model_and_log_consistent() == []
    assert_gapless(device.uuid)


@pytest.mark.django_db
@pytest.mark.parametrize("failure", list(RECONCILE_FAILURES))
def test_a_failing_reconciliation_during_a_staff_edit_writes_nothing_and_answers_a_json_error(
    reported, staff_token, monkeypatch, failure
):
    device = reported
    before = world_snapshot()
    injected = ReconcileFailure(monkeypatch, "reconciliation.services.targets", when=failure)

    with server_errors() as causes:
        response = Client(raise_request_exception=False).generic(
            "PATCH",
            sensor_url(device.uuid, "s-1"),
            data=json.dumps({"pollInterval": 1234}),
            content_type="application/json",
            headers=staff_headers(staff_token),
        )

    assert injected.fired == 1, "reconciliation.services.targets.device_reconcile is no longer on the edit's path"
    # No retry can succeed (the failure is no database's), so a 500, not a 503 (README, database errors).
    assert_error_shape(response, 500, causes)
    after = world_snapshot()
    assert after == before, f"a failed edit left a partial write: {snapshot_diff(before, after)}"


# ----------------------------------------------------------------------------------------------------------------
# A slow or stuck database does not hold workers forever
# ----------------------------------------------------------------------------------------------------------------


def _statement_timeout_ms() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'")
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_stuck_database_does_not_hold_workers_forever(reported):
    """A statement timeout is configured on Django's connections; a query that runs too long, and a request that
    waits on a lock a stuck transaction holds, are both cancelled within it (the request answering a JSON 503)."""
    device = reported
    connection.close()  # a fresh connection, configured as a request's would be
    timeout_ms = _statement_timeout_ms()
    assert 0 < timeout_ms <= 30_000, (
        f"statement_timeout is {timeout_ms} ms on Django's connection: a slow or stuck database can hold a "
        "worker forever (configure a timeout of at most 30 s)"
    )
    limit = timeout_ms / 1000 + 3
    outcomes: dict = {}

    def slow_query():
        started = time.monotonic()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(%s)", [timeout_ms / 1000 + 20])
            outcomes["sleep"] = ("finished", time.monotonic() - started)
        except Exception as exc:
            outcomes["sleep"] = (type(exc).__name__, time.monotonic() - started)
        finally:
            connection.close()

    def blocked_report():
        started = time.monotonic()
        raw = report_body(device, 4, target_sensors(device), seq=2)
        response = Client(raise_request_exception=False).generic(
            "PATCH", REPORT_URL, data=raw, content_type="application/json", headers=agent_headers(device.api_key)
        )
        outcomes["report"] = (response, time.monotonic() - started)
        connection.close()

    blocker = _admin_connection()
    blocker.autocommit = False
    try:
        blocker.execute("SELECT id FROM devices_device WHERE id = %s FOR UPDATE", [device.pk])  # a stuck writer
        threads = [threading.Thread(target=f, daemon=True) for f in (slow_query, blocked_report)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=limit + 5)
        stuck = [t for t in threads if t.is_alive()]
    finally:
        blocker.rollback()
        blocker.close()
    for thread in threads:
        thread.join(timeout=30)

    assert not stuck, f"a worker was still waiting {limit + 5:.0f} s later"
    kind, elapsed = outcomes["sleep"]
    assert kind == "OperationalError" and elapsed < limit, outcomes["sleep"]
    response, elapsed = outcomes["report"]
    assert elapsed < limit, f"the blocked report took {elapsed:.1f} s"
    _assert_json_503(response, [])


@pytest.mark.skipif(IS_POSTGRES, reason="the SQLite counterpart of the statement timeout test")
def test_sqlite_waits_for_a_lock_at_most_its_busy_timeout():
    from django.conf import settings

    timeout = settings.DATABASES["default"].get("OPTIONS", {}).get("timeout")
    assert timeout is not None and 0 < timeout <= 30, timeout
