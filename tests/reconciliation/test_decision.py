"""Pure unit tests of the reconciliation decision (SPEC section 6). No database: ``decide`` is plain data in,
plain data out, so every test builds wire-format sensor dicts and inspects the returned ``Decision``."""

import copy
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from events.choices import EventTypeChoices as Ev
from reconciliation.agent_protocol import health_merge, report_parse
from reconciliation.decision import Decision, SensorRow, decide
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.validation import COMPARED_FIELDS, sensors_differences
from tests.helpers import sensor_payload

T0 = datetime(2025, 11, 2, 10, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
T2 = T0 + timedelta(minutes=2)
T3 = T0 + timedelta(minutes=3)
T4 = T0 + timedelta(minutes=4)
T5 = T0 + timedelta(minutes=5)
T6 = T0 + timedelta(minutes=6)

TARGET = 43
NAME = "modbus-sensor-1"


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def sensor_id_for(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.sensors.test"))


def sensor(name: str = NAME, **overrides) -> dict:
    """A normalized wire-format sensor object (SPEC section 3): the suite's valid sensor, with ``id`` defaulting to
    a stable id per name."""
    return {"id": sensor_id_for(name), **sensor_payload(name, **overrides)}


def running_copy(desired: dict, **overrides) -> dict:
    """What the agent reports for a desired sensor: a deep copy, optionally changed."""
    data = copy.deepcopy(desired)
    data.update(overrides)
    return data


def run(
    *,
    target_version: int = TARGET,
    desired: list[dict] = (),
    reported_version: int | None,
    running: list[dict] = (),
    sensor_health: dict | None = None,
    existing: dict[str, SensorRow] | None = None,
    was_in_sync: bool = False,
    now: datetime = T0,
) -> Decision:
    return decide(
        target_version=target_version,
        desired=list(desired),
        reported_version=reported_version,
        running=list(running),
        # The seed note's {name: {healthy, lastError}}, normalized as the report parser does.
        sensor_health=health_merge(report_parse({"version": 1, "sensor_health": sensor_health or {}}).health),
        existing=existing or {},
        was_in_sync=was_in_sync,
        now=now,
    )


def follow(previous: Decision, **kwargs) -> Decision:
    """Decide again with the previous decision's rows as the existing read model (what the service does)."""
    return run(existing=dict(previous.rows), was_in_sync=previous.in_sync, **kwargs)


def event_types(decision: Decision) -> list[str]:
    return [event_type for event_type, _ in decision.events]


def events_of(decision: Decision, event_type: str) -> list[dict]:
    return [payload for t, payload in decision.events if t == event_type]


def drift_names(payload: dict) -> list[str]:
    return sorted(item["name"] if isinstance(item, dict) else item for item in payload["drifting_sensors"])


def assert_shows(row: SensorRow, source: dict, *, config_version: int) -> None:
    """The row shows exactly ``source`` (running or desired config) at ``config_version``."""
    assert row.protocol == source["protocol"]
    assert row.enabled == source["enabled"]
    assert row.poll_interval == source["pollInterval"]
    assert row.connection == source["connection"]
    assert row.data_points == source["dataPoints"]
    assert row.metadata == source["metadata"]
    assert row.config_version == config_version


# --------------------------------------------------------------------------------------------------------------
# 1. every row of the SPEC section 6 table
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reported_version", [TARGET - 2, TARGET, TARGET + 1], ids=["V<T", "V==T", "V>T"])
def test_row_desired_and_running_same_is_deployed_showing_running_config(reported_version):
    d = sensor()
    r = running_copy(d, id=None, metadata={"firmware": "1.2.3"})  # agent-enriched metadata, no id

    decision = run(desired=[d], reported_version=reported_version, running=[r])

    row = decision.rows[NAME]
    assert row.deployment_status == Status.DEPLOYED
    assert row.running is True
    assert_shows(row, r, config_version=reported_version)
    assert row.synced_to_config is True
    assert row.deployment_error == ""
    assert row.desired == d
    assert row.sensor_id == d["id"]  # keeps the sensor's server-assigned id
    assert row.last_deployed_at == T0
    assert row.status_changed_at == T0
    assert row.deployment_attempts == 0


@pytest.mark.parametrize("reported_version", [TARGET - 3, TARGET - 1], ids=["V=T-3", "V=T-1"])
def test_row_desired_and_running_differs_before_applied_is_reconciling(reported_version):
    d = sensor(pollInterval=1000)
    r = running_copy(d, pollInterval=5000)  # the old config, update in flight

    decision = run(desired=[d], reported_version=reported_version, running=[r])

    row = decision.rows[NAME]
    assert row.deployment_status == Status.RECONCILING
    assert row.running is True
    assert_shows(row, r, config_version=reported_version)  # reality, not the desire
    assert row.poll_interval == 5000
    assert row.synced_to_config is False
    assert row.deployment_error == ""
    assert row.desired == d
    assert row.last_deployed_at is None
    assert row.deployment_attempts == 0


@pytest.mark.parametrize("reported_version", [TARGET, TARGET + 1], ids=["V==T", "V>T"])
def test_row_desired_and_running_differs_after_applied_is_failed_with_error(reported_version):
    d = sensor(pollInterval=1000)
    r = running_copy(d, pollInterval=5000)

    decision = run(desired=[d], reported_version=reported_version, running=[r])

    row = decision.rows[NAME]
    assert row.deployment_status == Status.FAILED
    assert row.running is True
    assert_shows(row, r, config_version=reported_version)
    assert row.synced_to_config is False
    assert row.deployment_error  # says why
    assert "pollInterval" in row.deployment_error  # names the field that differs
    assert row.desired == d
    assert row.deployment_attempts == 1


@pytest.mark.parametrize("enabled", [True, False], ids=["enabled", "disabled"])
@pytest.mark.parametrize("reported_version", [None, TARGET - 3, TARGET - 1], ids=["never", "V=T-3", "V=T-1"])
def test_row_desired_not_running_before_applied_is_pending_showing_desired_config(reported_version, enabled):
    d = sensor(enabled=enabled)

    decision = run(desired=[d], reported_version=reported_version, running=[])

    row = decision.rows[NAME]
    assert row.deployment_status == Status.PENDING
    assert row.running is False
    assert_shows(row, d, config_version=TARGET)
    assert row.synced_to_config is False
    assert row.deployment_error == ""
    assert row.desired == d
    assert row.sensor_id == d["id"]
    assert row.last_deployed_at is None
    assert row.deployment_attempts == 0


DEFAULT = object()


@pytest.mark.parametrize(
    ("sensor_health", "expected_error"),
    [
        ({}, DEFAULT),
        ({NAME: {"healthy": False, "lastError": "connection refused"}}, "connection refused"),
        ({NAME: {"healthy": True, "lastError": "stale error from before"}}, DEFAULT),
        ({NAME: {"healthy": False}}, DEFAULT),
        ({NAME: {"healthy": False, "lastError": ""}}, DEFAULT),
        ({"another-sensor": {"healthy": False, "lastError": "timeout"}}, DEFAULT),
    ],
    ids=["no-health", "unhealthy-with-error", "healthy", "unhealthy-no-error", "unhealthy-empty-error", "other"],
)
@pytest.mark.parametrize("reported_version", [TARGET, TARGET + 1], ids=["V==T", "V>T"])
def test_row_desired_enabled_not_running_after_applied_is_failed(reported_version, sensor_health, expected_error):
    d = sensor(enabled=True)

    decision = run(desired=[d], reported_version=reported_version, running=[], sensor_health=sensor_health)

    row = decision.rows[NAME]
    assert row.deployment_status == Status.FAILED
    assert row.running is False
    assert_shows(row, d, config_version=TARGET)
    assert row.synced_to_config is False
    assert row.desired == d
    assert row.deployment_attempts == 1
    if expected_error is DEFAULT:
        assert row.deployment_error, "a failed row must say why"
        assert "running" in row.deployment_error.lower()
        assert "stale error" not in row.deployment_error
        assert "timeout" not in row.deployment_error
    else:
        assert expected_error in row.deployment_error


@pytest.mark.parametrize("reported_version", [TARGET, TARGET + 1], ids=["V==T", "V>T"])
def test_row_desired_disabled_not_running_after_applied_is_deployed(reported_version):
    d = sensor(enabled=False)

    decision = run(desired=[d], reported_version=reported_version, running=[])

    row = decision.rows[NAME]
    assert row.deployment_status == Status.DEPLOYED  # correctly not running
    assert row.running is False
    assert_shows(row, d, config_version=TARGET)
    assert row.synced_to_config is True
    assert row.deployment_error == ""
    assert row.desired == d
    assert row.last_deployed_at == T0
    assert row.deployment_attempts == 0


@pytest.mark.parametrize("reported_version", [TARGET - 3, TARGET - 1], ids=["V=T-3", "V=T-1"])
def test_row_not_desired_but_running_before_applied_is_reconciling_removal(reported_version):
    r = sensor()

    decision = run(desired=[], reported_version=reported_version, running=[r])

    row = decision.rows[NAME]
    assert row.deployment_status == Status.RECONCILING
    assert row.running is True
    assert_shows(row, r, config_version=reported_version)
    assert row.synced_to_config is False
    assert row.deployment_error == ""
    assert row.desired is None
    assert row.sensor_id == r["id"]


@pytest.mark.parametrize("reported_version", [TARGET, TARGET + 1], ids=["V==T", "V>T"])
def test_row_not_desired_but_running_after_applied_is_failed_with_error(reported_version):
    r = sensor()

    decision = run(desired=[], reported_version=reported_version, running=[r])

    row = decision.rows[NAME]
    assert row.deployment_status == Status.FAILED
    assert row.running is True
    assert_shows(row, r, config_version=reported_version)
    assert row.synced_to_config is False
    assert row.deployment_error
    assert "removed" in row.deployment_error.lower()
    assert row.desired is None
    assert row.deployment_attempts == 1


@pytest.mark.parametrize(
    "reported_version", [None, TARGET - 1, TARGET, TARGET + 1], ids=["never", "V<T", "V==T", "V>T"]
)
def test_row_neither_desired_nor_running_is_deleted(reported_version):
    keep = sensor("keep-me")
    before = run(
        target_version=TARGET - 1, desired=[sensor(), keep], reported_version=TARGET - 1, running=[sensor(), keep]
    )
    assert set(before.rows) == {NAME, "keep-me"}

    decision = follow(
        before, desired=[keep], reported_version=reported_version, running=[keep] if reported_version else []
    )

    assert NAME not in decision.rows
    assert decision.removed == [NAME]
    assert "keep-me" in decision.rows


def test_removed_lists_only_names_that_existed_before():
    decision = run(desired=[sensor("a")], reported_version=None, running=[])
    assert decision.removed == []


# --------------------------------------------------------------------------------------------------------------
# 2. "same" ignores metadata (and ids), compares everything else
# --------------------------------------------------------------------------------------------------------------

CHANGES = {
    "protocol": "can",
    "enabled": False,
    "pollInterval": 250,
    "connection": {"host": "10.0.0.6", "port": 502, "unitId": 1},
    "dataPoints": [{"name": "humidity", "address": 40003, "type": "float32", "unit": "%"}],
}


def test_compared_fields_are_exactly_the_spec_list():
    assert set(COMPARED_FIELDS) == {"protocol", "enabled", "pollInterval", "connection", "dataPoints"}
    assert set(CHANGES) == set(COMPARED_FIELDS)


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_a_difference_in_a_compared_field_is_not_deployed(field):
    d = sensor()
    r = running_copy(d, **{field: CHANGES[field]})

    assert sensors_differences(d, r)
    assert sensors_differences(d, r) == [field]
    applied = run(desired=[d], reported_version=TARGET, running=[r]).rows[NAME]
    assert applied.deployment_status == Status.FAILED
    assert field in applied.deployment_error
    in_flight = run(desired=[d], reported_version=TARGET - 1, running=[r]).rows[NAME]
    assert in_flight.deployment_status == Status.RECONCILING


def test_nested_difference_in_connection_counts():
    d = sensor()
    r = running_copy(d, connection={**d["connection"], "unitId": 2})
    assert run(desired=[d], reported_version=TARGET, running=[r]).rows[NAME].deployment_status == Status.FAILED


def test_enriched_metadata_still_counts_as_deployed_and_the_row_shows_it():
    d = sensor(metadata={"site": "plant-a"})
    r = running_copy(d, metadata={"site": "plant-a", "firmware": "2.1", "serial": "XYZ"})

    assert not sensors_differences(d, r)
    assert sensors_differences(d, r) == []
    decision = run(desired=[d], reported_version=TARGET, running=[r])

    row = decision.rows[NAME]
    assert row.deployment_status == Status.DEPLOYED
    assert row.synced_to_config is True
    assert row.metadata == r["metadata"]  # reality, enriched
    assert row.desired["metadata"] == {"site": "plant-a"}  # the desire kept side by side
    assert decision.in_sync is True


# --------------------------------------------------------------------------------------------------------------
# 3. never reported
# --------------------------------------------------------------------------------------------------------------


def test_never_reported_every_desired_sensor_is_pending_and_device_not_in_sync():
    desired = [sensor("a"), sensor("b", enabled=False), sensor("c", protocol="mqtt")]

    decision = run(desired=desired, reported_version=None, running=[])

    assert set(decision.rows) == {"a", "b", "c"}
    for d in desired:
        row = decision.rows[d["name"]]
        assert row.deployment_status == Status.PENDING
        assert row.running is False
        assert row.synced_to_config is False
        assert_shows(row, d, config_version=TARGET)
        assert row.desired == d
    assert decision.in_sync is False
    assert decision.drifting == ["a", "b", "c"]
    assert not events_of(decision, Ev.SENSOR_DEPLOYED)
    assert not events_of(decision, Ev.SENSOR_FAILED)
    assert not events_of(decision, Ev.DEVICE_IN_SYNC)


def test_never_reported_with_no_sensors_is_not_in_sync():
    decision = run(target_version=1, desired=[], reported_version=None, running=[])
    assert decision.rows == {}
    assert decision.in_sync is False


# --------------------------------------------------------------------------------------------------------------
# 4. deployment_attempts, last_deployed_at, status_changed_at
# --------------------------------------------------------------------------------------------------------------


def test_failing_twice_at_the_same_version_counts_one_attempt():
    d = sensor()
    first = run(target_version=3, desired=[d], reported_version=3, running=[], now=T0)
    assert first.rows[NAME].deployment_attempts == 1

    second = follow(first, target_version=3, desired=[d], reported_version=3, running=[], now=T1)

    row = second.rows[NAME]
    assert row.deployment_status == Status.FAILED
    assert row.deployment_attempts == 1
    assert row.status_changed_at == T0
    assert not events_of(second, Ev.SENSOR_FAILED)


def test_failing_at_a_new_version_counts_again_and_emits_failed():
    d = sensor()
    first = run(target_version=3, desired=[d], reported_version=3, running=[], now=T0)
    d4 = sensor(pollInterval=1000)

    second = follow(first, target_version=4, desired=[d4], reported_version=4, running=[], now=T1)

    row = second.rows[NAME]
    assert row.deployment_status == Status.FAILED
    assert row.deployment_attempts == 2
    assert row.status_changed_at == T0  # still failed: the status did not change
    failed = events_of(second, Ev.SENSOR_FAILED)
    assert len(failed) == 1
    assert failed[0]["name"] == NAME


def test_attempts_survive_pending_and_reconciling_and_reset_on_deployed():
    d3 = sensor()
    failed_3 = run(target_version=3, desired=[d3], reported_version=3, running=[], now=T0)
    assert failed_3.rows[NAME].deployment_attempts == 1

    # staff change it (T=4); the agent still reports V=3 and does not run it: pending, count kept
    d4 = sensor(pollInterval=1000)
    pending = follow(failed_3, target_version=4, desired=[d4], reported_version=3, running=[], now=T1)
    assert pending.rows[NAME].deployment_status == Status.PENDING
    assert pending.rows[NAME].deployment_attempts == 1
    assert pending.rows[NAME].status_changed_at == T1

    # V=4 applied but still not running: a second distinct failing version
    failed_4 = follow(pending, target_version=4, desired=[d4], reported_version=4, running=[], now=T2)
    assert failed_4.rows[NAME].deployment_status == Status.FAILED
    assert failed_4.rows[NAME].deployment_attempts == 2
    assert failed_4.rows[NAME].status_changed_at == T2
    assert len(events_of(failed_4, Ev.SENSOR_FAILED)) == 1

    # T=5, agent at V=4 runs the old config: reconciling, count kept
    d5 = sensor(pollInterval=2000)
    reconciling = follow(
        failed_4, target_version=5, desired=[d5], reported_version=4, running=[running_copy(d4)], now=T3
    )
    assert reconciling.rows[NAME].deployment_status == Status.RECONCILING
    assert reconciling.rows[NAME].deployment_attempts == 2

    # V=5 applied, runs the wrong config: third distinct version
    failed_5 = follow(
        reconciling, target_version=5, desired=[d5], reported_version=5, running=[running_copy(d4)], now=T4
    )
    assert failed_5.rows[NAME].deployment_status == Status.FAILED
    assert failed_5.rows[NAME].deployment_attempts == 3
    assert failed_5.rows[NAME].last_deployed_at is None

    # finally runs as desired: deployed, count reset, last_deployed_at set
    deployed = follow(failed_5, target_version=5, desired=[d5], reported_version=5, running=[running_copy(d5)], now=T5)
    row = deployed.rows[NAME]
    assert row.deployment_status == Status.DEPLOYED
    assert row.deployment_attempts == 0
    assert row.last_deployed_at == T5
    assert row.status_changed_at == T5
    assert [p["name"] for p in events_of(deployed, Ev.SENSOR_DEPLOYED)] == [NAME]

    # staying deployed changes neither timestamp
    again = follow(deployed, target_version=5, desired=[d5], reported_version=5, running=[running_copy(d5)], now=T6)
    assert again.rows[NAME].last_deployed_at == T5
    assert again.rows[NAME].status_changed_at == T5
    assert again.rows[NAME] == row


def test_after_deployed_a_new_failure_starts_counting_from_one():
    d = sensor()
    failed = run(target_version=3, desired=[d], reported_version=3, running=[], now=T0)
    failed = follow(failed, target_version=4, desired=[d], reported_version=4, running=[], now=T1)
    assert failed.rows[NAME].deployment_attempts == 2
    deployed = follow(failed, target_version=4, desired=[d], reported_version=4, running=[running_copy(d)], now=T2)
    assert deployed.rows[NAME].deployment_attempts == 0

    d5 = sensor(pollInterval=1000)
    failed_again = follow(deployed, target_version=5, desired=[d5], reported_version=5, running=[], now=T3)

    row = failed_again.rows[NAME]
    assert row.deployment_status == Status.FAILED
    assert row.deployment_attempts == 1
    assert row.last_deployed_at == T2  # when it was last deployed, kept while failed
    assert row.status_changed_at == T3


def test_last_deployed_at_is_none_until_first_deployed():
    d = sensor()
    pending = run(desired=[d], reported_version=None, running=[], now=T0)
    assert pending.rows[NAME].last_deployed_at is None
    deployed = follow(pending, desired=[d], reported_version=TARGET, running=[running_copy(d)], now=T1)
    assert deployed.rows[NAME].last_deployed_at == T1
    assert deployed.rows[NAME].status_changed_at == T1


# --------------------------------------------------------------------------------------------------------------
# 5. idempotency
# --------------------------------------------------------------------------------------------------------------

IDEMPOTENCY_CASES = {
    "never-reported": dict(desired=[sensor("a"), sensor("b")], reported_version=None, running=[]),
    "all-deployed": dict(
        desired=[sensor("a"), sensor("b")],
        reported_version=TARGET,
        running=[running_copy(sensor("a"), id=None, metadata={"fw": "1"}), running_copy(sensor("b"))],
    ),
    "mixed-applied": dict(
        desired=[sensor("same"), sensor("differs", pollInterval=1000), sensor("missing"), sensor("off", enabled=False)],
        reported_version=TARGET,
        running=[running_copy(sensor("same")), running_copy(sensor("differs")), sensor("removed", id=None)],
        sensor_health={"missing": {"healthy": False, "lastError": "connection refused"}},
    ),
    "mixed-in-flight": dict(
        desired=[sensor("same"), sensor("differs", pollInterval=1000), sensor("new")],
        reported_version=TARGET - 2,
        running=[running_copy(sensor("same")), running_copy(sensor("differs")), sensor("removed")],
    ),
    "ahead-of-target": dict(desired=[sensor("a")], reported_version=TARGET + 1, running=[running_copy(sensor("a"))]),
}


@pytest.mark.parametrize("case", sorted(IDEMPOTENCY_CASES))
def test_deciding_again_from_the_same_inputs_changes_nothing(case):
    inputs = IDEMPOTENCY_CASES[case]
    first = run(now=T0, **inputs)
    assert first.rows, "the case must produce rows to be meaningful"

    second = follow(first, now=T1, **inputs)
    third = follow(second, now=T2, **inputs)

    assert second.rows == first.rows
    assert second.events == []
    assert second.removed == []
    assert second.in_sync == first.in_sync
    assert second.drifting == first.drifting
    assert third.rows == first.rows
    assert third.events == []


# --------------------------------------------------------------------------------------------------------------
# 6. events
# --------------------------------------------------------------------------------------------------------------


def test_sensor_deployed_event_only_on_entering_deployed():
    d = sensor()
    pending = run(desired=[d], reported_version=TARGET - 1, running=[])
    assert not events_of(pending, Ev.SENSOR_DEPLOYED)

    deployed = follow(pending, desired=[d], reported_version=TARGET, running=[running_copy(d)], now=T1)
    payloads = events_of(deployed, Ev.SENSOR_DEPLOYED)
    assert [p["name"] for p in payloads] == [NAME]

    stays = follow(deployed, desired=[d], reported_version=TARGET, running=[running_copy(d)], now=T2)
    assert not events_of(stays, Ev.SENSOR_DEPLOYED)


def test_sensor_failed_event_on_entering_failed_not_on_staying_failed():
    d = sensor()
    pending = run(desired=[d], reported_version=TARGET - 1, running=[])
    assert not events_of(pending, Ev.SENSOR_FAILED)

    failed = follow(
        pending,
        desired=[d],
        reported_version=TARGET,
        running=[],
        sensor_health={NAME: {"healthy": False, "lastError": "connection refused"}},
        now=T1,
    )
    payloads = events_of(failed, Ev.SENSOR_FAILED)
    assert len(payloads) == 1
    assert payloads[0]["name"] == NAME
    assert not events_of(failed, Ev.SENSOR_DEPLOYED)

    stays = follow(failed, desired=[d], reported_version=TARGET, running=[], now=T2)
    assert not events_of(stays, Ev.SENSOR_FAILED)


def test_in_sync_event_when_device_becomes_in_sync():
    a, b = sensor("a"), sensor("b")
    drifting = run(desired=[a, b], reported_version=TARGET - 1, running=[running_copy(a)])
    assert drifting.in_sync is False
    assert not events_of(drifting, Ev.DEVICE_IN_SYNC)

    synced = follow(drifting, desired=[a, b], reported_version=TARGET, running=[running_copy(a), running_copy(b)])

    assert synced.in_sync is True
    assert synced.drifting == []
    payloads = events_of(synced, Ev.DEVICE_IN_SYNC)
    assert len(payloads) == 1
    assert payloads[0]["target_version"] == TARGET
    assert payloads[0]["reported_version"] == TARGET
    assert not events_of(synced, Ev.DEVICE_CONFIG_DRIFT)

    again = follow(synced, desired=[a, b], reported_version=TARGET, running=[running_copy(a), running_copy(b)])
    assert not events_of(again, Ev.DEVICE_IN_SYNC)


def test_drift_starts_changes_and_repeats():
    a = sensor("a")
    in_sync = run(target_version=3, desired=[a], reported_version=3, running=[running_copy(a)], was_in_sync=True)
    assert in_sync.in_sync is True
    assert event_types(in_sync) == [Ev.SENSOR_DEPLOYED]  # was already in sync: no device event

    # drift starts: staff add b at T=4, the agent still at V=3
    b = sensor("b")
    started = follow(in_sync, target_version=4, desired=[a, b], reported_version=3, running=[running_copy(a)])
    drift = events_of(started, Ev.DEVICE_CONFIG_DRIFT)
    assert len(drift) == 1
    assert drift[0]["target_version"] == 4
    assert drift[0]["reported_version"] == 3
    assert drift_names(drift[0]) == ["b"]
    assert started.in_sync is False

    # a repeated report with the same V < T: nothing changed, no drift event
    repeated = follow(started, target_version=4, desired=[a, b], reported_version=3, running=[running_copy(a)])
    assert repeated.events == []

    # the set of drifting sensors changes: c added at T=5
    c = sensor("c")
    changed = follow(repeated, target_version=5, desired=[a, b, c], reported_version=3, running=[running_copy(a)])
    drift = events_of(changed, Ev.DEVICE_CONFIG_DRIFT)
    assert len(drift) == 1
    assert drift[0]["target_version"] == 5
    assert drift[0]["reported_version"] == 3
    assert drift_names(drift[0]) == ["b", "c"]

    # V=5 applied: b now runs (deployed), c does not (failed); the drifting set shrinks to c
    shrunk = follow(
        changed, target_version=5, desired=[a, b, c], reported_version=5, running=[running_copy(a), running_copy(b)]
    )
    drift = events_of(shrunk, Ev.DEVICE_CONFIG_DRIFT)
    assert len(drift) == 1
    assert drift[0]["reported_version"] == 5
    assert drift_names(drift[0]) == ["c"]
    assert [p["name"] for p in events_of(shrunk, Ev.SENSOR_FAILED)] == ["c"]
    assert [p["name"] for p in events_of(shrunk, Ev.SENSOR_DEPLOYED)] == ["b"]

    # drift ends
    ended = follow(
        shrunk,
        target_version=5,
        desired=[a, b, c],
        reported_version=5,
        running=[running_copy(a), running_copy(b), running_copy(c)],
    )
    assert event_types(ended).count(Ev.DEVICE_IN_SYNC) == 1
    assert not events_of(ended, Ev.DEVICE_CONFIG_DRIFT)


def test_same_drifting_names_with_a_different_status_is_not_a_new_drift_event():
    d = sensor()
    pending = run(target_version=4, desired=[d], reported_version=3, running=[])
    assert len(events_of(pending, Ev.DEVICE_CONFIG_DRIFT)) == 1
    failed = follow(pending, target_version=4, desired=[d], reported_version=4, running=[])
    assert failed.drifting == [NAME]
    assert not events_of(failed, Ev.DEVICE_CONFIG_DRIFT)
    assert len(events_of(failed, Ev.SENSOR_FAILED)) == 1


@pytest.mark.parametrize("reported_version", [TARGET - 1, TARGET + 1], ids=["V<T", "V>T"])
def test_not_in_sync_when_versions_differ_even_if_every_row_is_deployed(reported_version):
    d = sensor()
    previous = run(desired=[d], reported_version=TARGET, running=[running_copy(d)], was_in_sync=False)
    assert previous.in_sync is True

    decision = follow(previous, desired=[d], reported_version=reported_version, running=[running_copy(d)])

    assert decision.rows[NAME].deployment_status == Status.DEPLOYED
    assert decision.in_sync is False
    assert not events_of(decision, Ev.DEVICE_IN_SYNC)
    drift = events_of(decision, Ev.DEVICE_CONFIG_DRIFT)
    assert len(drift) == 1  # drift starts (was in sync), even with no sensor drifting
    assert drift[0]["target_version"] == TARGET
    assert drift[0]["reported_version"] == reported_version
    assert drift_names(drift[0]) == []

    repeated = follow(decision, desired=[d], reported_version=reported_version, running=[running_copy(d)])
    assert repeated.events == []


def test_in_sync_requires_every_row_deployed():
    a, b = sensor("a"), sensor("b")
    decision = run(desired=[a, b], reported_version=TARGET, running=[running_copy(a)])
    assert decision.rows["a"].deployment_status == Status.DEPLOYED
    assert decision.in_sync is False
    assert decision.drifting == ["b"]


def test_empty_device_that_applied_the_target_is_in_sync():
    decision = run(target_version=2, desired=[], reported_version=2, running=[])
    assert decision.rows == {}
    assert decision.in_sync is True
    assert event_types(decision) == [Ev.DEVICE_IN_SYNC]


# --------------------------------------------------------------------------------------------------------------
# 7. ids of running sensors that come without one
# --------------------------------------------------------------------------------------------------------------


def test_running_sensor_without_id_gets_a_deterministic_id():
    r = sensor("unknown-sensor", id=None)

    first = run(desired=[], reported_version=TARGET - 1, running=[r])
    second = run(desired=[], reported_version=TARGET, running=[copy.deepcopy(r)], now=T1)
    other = run(desired=[], reported_version=TARGET, running=[sensor("another", id=None)])

    sensor_id = first.rows["unknown-sensor"].sensor_id
    assert sensor_id
    assert str(uuid.UUID(sensor_id)) == sensor_id  # a canonical UUID string
    assert second.rows["unknown-sensor"].sensor_id == sensor_id
    assert other.rows["another"].sensor_id != sensor_id


def test_running_sensor_without_id_keeps_its_previous_rows_id():
    d = sensor()
    was_desired = run(target_version=3, desired=[d], reported_version=3, running=[running_copy(d)])
    assert was_desired.rows[NAME].sensor_id == d["id"]

    # removed from the target (T=4); the agent, still at V=3, reports it without an id
    decision = follow(was_desired, target_version=4, desired=[], reported_version=3, running=[running_copy(d, id=None)])

    row = decision.rows[NAME]
    assert row.deployment_status == Status.RECONCILING
    assert row.sensor_id == d["id"]
    assert row.desired is None


def test_desired_and_running_without_id_takes_the_desired_id():
    d = sensor()
    decision = run(desired=[d], reported_version=TARGET, running=[running_copy(d, id=None)])
    assert decision.rows[NAME].sensor_id == d["id"]


# --------------------------------------------------------------------------------------------------------------
# 8. SEED.md data-flow examples at the decision level
# --------------------------------------------------------------------------------------------------------------


def test_seed_example_1_user_adds_a_sensor():
    old = sensor("can-sensor-0", protocol="can")
    steady = run(target_version=42, desired=[old], reported_version=42, running=[running_copy(old)], now=T0)
    assert steady.in_sync is True

    # 1-3: saved to config, version 43; the table shows it pending at config_version 43
    new = sensor("modbus-sensor-1")
    saved = follow(
        steady, target_version=43, desired=[old, new], reported_version=42, running=[running_copy(old)], now=T1
    )
    row = saved.rows["modbus-sensor-1"]
    assert row.deployment_status == Status.PENDING
    assert row.config_version == 43
    assert row.running is False
    assert saved.in_sync is False
    assert drift_names(events_of(saved, Ev.DEVICE_CONFIG_DRIFT)[0]) == ["modbus-sensor-1"]

    # 4-6: agent deploys 43 and reports it
    reported = follow(
        saved,
        target_version=43,
        desired=[old, new],
        reported_version=43,
        running=[running_copy(old), running_copy(new)],
        now=T2,
    )
    row = reported.rows["modbus-sensor-1"]
    assert row.deployment_status == Status.DEPLOYED
    assert row.running is True
    assert row.config_version == 43
    assert row.synced_to_config is True
    assert row.last_deployed_at == T2
    assert reported.rows["can-sensor-0"].config_version == 43
    assert reported.in_sync is True
    assert [p["name"] for p in events_of(reported, Ev.SENSOR_DEPLOYED)] == ["modbus-sensor-1"]
    assert len(events_of(reported, Ev.DEVICE_IN_SYNC)) == 1


def test_seed_example_2_agent_runs_only_two_of_three_sensors():
    s1, s2, s3 = sensor("modbus-sensor-1"), sensor("can-sensor-2", protocol="can"), sensor("opcua-sensor-3")
    saved = run(desired=[s1, s2, s3], reported_version=None, running=[], now=T0)
    assert {r.deployment_status for r in saved.rows.values()} == {Status.PENDING}

    reported = follow(
        saved,
        desired=[s1, s2, s3],
        reported_version=TARGET,
        running=[running_copy(s1), running_copy(s2)],
        sensor_health={"opcua-sensor-3": {"healthy": False, "lastError": "BadCertificateInvalid"}},
        now=T1,
    )

    assert set(reported.rows) == {"modbus-sensor-1", "can-sensor-2", "opcua-sensor-3"}  # not hidden
    for name in ("modbus-sensor-1", "can-sensor-2"):
        assert reported.rows[name].deployment_status == Status.DEPLOYED
        assert reported.rows[name].running is True
    third = reported.rows["opcua-sensor-3"]
    assert third.deployment_status == Status.FAILED
    assert third.running is False
    assert "BadCertificateInvalid" in third.deployment_error
    assert_shows(third, s3, config_version=TARGET)
    assert third.desired == s3
    assert reported.removed == []
    assert reported.in_sync is False  # needs_deployment stays true
    assert reported.drifting == ["opcua-sensor-3"]
    assert [p["name"] for p in events_of(reported, Ev.SENSOR_FAILED)] == ["opcua-sensor-3"]
    assert sorted(p["name"] for p in events_of(reported, Ev.SENSOR_DEPLOYED)) == ["can-sensor-2", "modbus-sensor-1"]
    drift = events_of(reported, Ev.DEVICE_CONFIG_DRIFT)
    assert len(drift) == 1  # the drifting set changed from all three to the third
    assert drift_names(drift[0]) == ["opcua-sensor-3"]


def test_seed_example_3_agent_restart_on_an_old_version():
    # at version 40 the agent ran: unchanged, changed (pollInterval 5000), old-sensor (removed later)
    unchanged_40 = sensor("unchanged")
    changed_40 = sensor("changed", pollInterval=5000)
    old_40 = sensor("old-sensor", protocol="mqtt")
    running_40 = [running_copy(unchanged_40), running_copy(changed_40), running_copy(old_40)]
    # target 43: changed has pollInterval 1000, old-sensor removed, added-sensor new
    changed_43 = sensor("changed", pollInterval=1000)
    added_43 = sensor("added-sensor", protocol="opcua")
    desired_43 = [unchanged_40, changed_43, added_43]

    restarted = run(target_version=43, desired=desired_43, reported_version=40, running=running_40, now=T0)

    rows = restarted.rows
    assert rows["unchanged"].deployment_status == Status.DEPLOYED
    assert rows["unchanged"].config_version == 40
    assert rows["changed"].deployment_status == Status.RECONCILING
    assert rows["changed"].running is True
    assert_shows(rows["changed"], running_40[1], config_version=40)  # what runs, not what is desired
    assert rows["changed"].desired == changed_43
    assert rows["added-sensor"].deployment_status == Status.PENDING
    assert rows["added-sensor"].running is False
    assert rows["added-sensor"].config_version == 43
    assert rows["old-sensor"].deployment_status == Status.RECONCILING
    assert rows["old-sensor"].running is True
    assert rows["old-sensor"].desired is None
    assert restarted.in_sync is False
    assert restarted.drifting == ["added-sensor", "changed", "old-sensor"]
    assert not events_of(restarted, Ev.SENSOR_FAILED)

    # the agent deploys 43 and reports it
    running_43 = [running_copy(s) for s in desired_43]
    updated = follow(restarted, target_version=43, desired=desired_43, reported_version=43, running=running_43, now=T1)

    assert set(updated.rows) == {"unchanged", "changed", "added-sensor"}
    assert updated.removed == ["old-sensor"]
    for name, row in updated.rows.items():
        assert row.deployment_status == Status.DEPLOYED, name
        assert row.running is True
        assert row.config_version == 43
        assert row.synced_to_config is True
    assert updated.rows["changed"].poll_interval == 1000
    assert updated.rows["unchanged"].last_deployed_at == T0  # stayed deployed
    assert updated.rows["changed"].last_deployed_at == T1
    assert updated.in_sync is True
    assert sorted(p["name"] for p in events_of(updated, Ev.SENSOR_DEPLOYED)) == ["added-sensor", "changed"]
    assert len(events_of(updated, Ev.DEVICE_IN_SYNC)) == 1
    assert not events_of(updated, Ev.DEVICE_CONFIG_DRIFT)


# What the real agents report ------------------------------------------------------------------------------------


def test_a_disabled_sensor_the_agent_lists_as_configured_is_deployed_and_not_running():
    d = sensor(enabled=False)
    decision = run(desired=[d], reported_version=TARGET, running=[running_copy(d)])
    row = decision.rows[NAME]
    assert (row.deployment_status, row.running) == ("deployed", False)
    assert decision.in_sync is True


def test_a_field_the_agent_did_not_report_is_no_difference_and_shows_the_desired_value():
    d = sensor()
    decision = run(desired=[d], reported_version=TARGET, running=[running_copy(d, dataPoints=None, pollInterval=None)])
    row = decision.rows[NAME]
    assert (row.deployment_status, row.running) == ("deployed", True)
    assert row.unreported_fields == ["pollInterval", "dataPoints"]
    assert (row.poll_interval, row.data_points) == (d["pollInterval"], d["dataPoints"])


def test_a_reported_difference_still_counts_when_other_fields_went_unreported():
    d = sensor()
    decision = run(desired=[d], reported_version=TARGET, running=[running_copy(d, dataPoints=None, pollInterval=9)])
    row = decision.rows[NAME]
    assert row.deployment_status == "failed"
    assert "pollInterval" in row.deployment_error and "dataPoints" not in row.deployment_error
