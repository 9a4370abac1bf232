"""SPEC section 5: when reconciliation itself fails, the report is still stored, the sensor table is left exactly
as it was (savepoint), the failure is logged and recorded as an event, and a later report or a manual
reconcile repairs it. The only monkeypatching in this suite: making reconciliation raise."""

import logging

import pytest

from devices.models import DeviceCurrentState, DeviceTargetState
from reconciliation.services import projection
from tests.helpers import (
    add_sensor,
    current_state_url,
    device_snapshot,
    events_after,
    events_of,
    last_event_id,
    reconcile_url,
    report,
    rows,
    sensor_payload,
    target_sensors,
    verdict,
)

pytestmark = pytest.mark.django_db


class Boom(RuntimeError):
    pass


def _fail_decision(monkeypatch):
    def explode(**kwargs):
        raise Boom("decision exploded")

    monkeypatch.setattr("reconciliation.services.projection.decide_for_device", explode)


def _fail_upsert_before_writing(monkeypatch):
    def explode(*args, **kwargs):
        raise Boom("upsert refused")

    monkeypatch.setattr("reconciliation.services.projection.sensor_rows_upsert", explode)


def _fail_upsert_after_writing(monkeypatch):
    """The upsert really writes the rows, then raises: only a rollback can put the table back."""
    real = projection.sensor_rows_upsert

    def write_then_explode(*args, **kwargs):
        real(*args, **kwargs)
        raise Boom("failed after writing")

    monkeypatch.setattr("reconciliation.services.projection.sensor_rows_upsert", write_then_explode)


FAILURES = [_fail_decision, _fail_upsert_before_writing, _fail_upsert_after_writing]


@pytest.fixture
def half_deployed(admin_client, agent, device):
    """``a`` deployed at v2; then ``b`` added (T=3), pending."""
    add_sensor(admin_client, device, sensor_payload("a"))
    verdict(report(agent, device, 2, target_sensors(device), seq=1), device)
    add_sensor(admin_client, device, sensor_payload("b", protocol="can", connection={"interface": "can0"}))
    table = rows(admin_client, device)
    assert {n: r["deploymentStatus"] for n, r in table.items()} == {"a": "deployed", "b": "pending"}
    return device


@pytest.mark.parametrize("make_it_fail", FAILURES, ids=lambda f: f.__name__.strip("_"))
def test_a_failing_reconciliation_stores_the_report_keeps_the_rows_and_records_the_failure(
    admin_client, agent, half_deployed, monkeypatch, caplog, make_it_fail
):
    device = half_deployed
    before = device_snapshot(device)
    target_before = before["target"]
    mark = last_event_id()
    make_it_fail(monkeypatch)

    with caplog.at_level(logging.ERROR, logger="sensorsync.reconciliation"):
        response = report(agent, device, 3, target_sensors(device), seq=2)

    answer = verdict(response, device)
    assert answer["outcome"] == "applied"
    assert answer["appliedVersion"] == 3
    assert answer["reportedVersion"] == 3
    assert "failed" in answer["reconciliation"]
    # The answer shows the table as it stands (unrepaired), not a guess.
    assert answer["sensors"]["b"]["status"] == "pending"
    assert answer["inSync"] is False

    # The report is stored.
    current = DeviceCurrentState.objects.get(device_id=device.pk)
    assert (current.version, current.seq) == (3, 2)
    assert [s["name"] for s in current.config["sensors"]] == ["a", "b"]
    monkeypatch.undo()
    assert admin_client.get(current_state_url(device.uuid)).json()["version"] == 3

    # The sensor table and the target are exactly as before.
    after = device_snapshot(device)
    assert after["sensors"] == before["sensors"]
    assert after["target"] == target_before

    # The failure is an event (with the report's event, in the same correlation) and a log line.
    new = events_after(device, mark)
    assert [e.type for e in new] == ["current_state.reported", "device.reconcile_failed"]
    failed = new[1]
    assert failed.data["reported_version"] == 3
    assert failed.data["error"] == "Boom"
    assert failed.data["error_id"]
    assert failed.correlation_id == new[0].correlation_id
    assert failed.metadata["source"] == "agent"
    assert any(failed.data["error_id"] in r.getMessage() for r in caplog.records)

    # A manual reconcile (unpatched) repairs the rows from the stored report.
    repaired = admin_client.post(reconcile_url(device.uuid))
    assert repaired.status_code == 200, repaired.content
    result = repaired.json()
    assert result["inSync"] is True
    assert (result["inserted"], result["removed"]) == (0, 0)
    assert result["updated"] == 2  # a moves to config version 3, b to deployed
    table = rows(admin_client, device)
    assert {n: (r["deploymentStatus"], r["configVersion"]) for n, r in table.items()} == {
        "a": ("deployed", 3),
        "b": ("deployed", 3),
    }
    assert DeviceTargetState.objects.get(device_id=device.pk).needs_deployment is False
    again = admin_client.post(reconcile_url(device.uuid)).json()
    assert (again["inserted"], again["updated"], again["removed"]) == (0, 0, 0)


def test_event_sequences_stay_gapless_through_a_failed_reconciliation(admin_client, agent, half_deployed, monkeypatch):
    _fail_upsert_after_writing(monkeypatch)
    verdict(report(agent, half_deployed, 3, target_sensors(half_deployed), seq=2), half_deployed)
    monkeypatch.undo()
    admin_client.post(reconcile_url(half_deployed.uuid))
    sequences = [e.sequence for e in events_of(half_deployed)]
    assert sequences == list(range(1, len(sequences) + 1))


def test_a_later_changed_report_repairs_the_rows(admin_client, agent, half_deployed, monkeypatch):
    _fail_decision(monkeypatch)
    verdict(report(agent, half_deployed, 3, target_sensors(half_deployed), seq=2), half_deployed)
    monkeypatch.undo()

    answer = verdict(
        report(agent, half_deployed, 3, target_sensors(half_deployed), seq=3, health={"a": {"healthy": True}}),
        half_deployed,
    )

    assert answer["outcome"] == "applied"
    assert "reconciliation" not in answer
    assert answer["inSync"] is True
    assert {n: r["deploymentStatus"] for n, r in rows(admin_client, half_deployed).items()} == {
        "a": "deployed",
        "b": "deployed",
    }


def test_the_agents_next_identical_report_repairs_the_rows_too(admin_client, agent, half_deployed, monkeypatch):
    """SPEC 5: "a later report ... repairs it". An agent whose reality did not change sends the same report again
    every 10 s; if that repeat is a no-op, the read model stays wrong until something else changes."""
    running = target_sensors(half_deployed)
    _fail_decision(monkeypatch)
    verdict(report(agent, half_deployed, 3, running, seq=2), half_deployed)
    monkeypatch.undo()

    answer = verdict(report(agent, half_deployed, 3, running, seq=3), half_deployed)

    assert answer["inSync"] is True, answer
    assert {n: r["deploymentStatus"] for n, r in rows(admin_client, half_deployed).items()} == {
        "a": "deployed",
        "b": "deployed",
    }
