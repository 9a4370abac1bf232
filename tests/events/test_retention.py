"""Retention (``manage.py prune_events``): old events go, what they established stays in per-device snapshots,
``replay_events --check`` still checks the whole target history, and new events go on numbering after the dropped
ones. On PostgreSQL the log is partitioned by month and whole months are dropped."""

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.utils import timezone

from devices.models import DeviceTargetStateVersion
from events import partitions
from events.models import AggregateSnapshot, Event
from events.retention import PRUNE_LOCK_KEY
from tests.factories import DeviceFactory
from tests.helpers import put_target, sensor_payload

pytestmark = pytest.mark.django_db

LONG_AGO = timedelta(days=200)  # older than the default retention (90 days) plus a month


def _run(command: str, *args) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command(command, *args, stdout=out, stderr=StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)
    return 0, out.getvalue()


def _events(device) -> list[tuple[int, str]]:
    return list(
        Event.objects.filter(aggregate_id=str(device.uuid)).order_by("sequence").values_list("sequence", "type")
    )


def _backdate(device, age: timedelta) -> None:
    """Make every event of ``device`` so far ``age`` old (on PostgreSQL the rows move to that month's partition,
    or to the default partition when the month has none)."""
    Event.objects.filter(aggregate_id=str(device.uuid)).update(created_at=timezone.now() - age)


@pytest.fixture
def history(admin_client):
    """A device with target versions 1 to 3, all recorded long ago; and another whose log is recent."""
    device = DeviceFactory()
    put_target(admin_client, device, [sensor_payload("a")])
    put_target(admin_client, device, [sensor_payload("a"), sensor_payload("b")])
    _backdate(device, LONG_AGO)
    recent = DeviceFactory()
    put_target(admin_client, recent, [sensor_payload("r")])
    return device, recent


def test_old_events_go_and_the_replay_still_checks_the_whole_history(admin_client, history):
    device, recent = history
    dropped, kept = _events(device), _events(recent)
    assert dropped and kept

    code, output = _run("prune_events")

    assert code == 0, output
    assert f"dropped {len(dropped)}" in output
    assert _events(device) == []
    assert _events(recent) == kept
    snapshot = AggregateSnapshot.objects.get(aggregate_id=str(device.uuid))
    assert snapshot.through_sequence == dropped[-1][0]
    assert sorted(snapshot.state["versions"]) == ["1", "2", "3"]
    assert not AggregateSnapshot.objects.filter(aggregate_id=str(recent.uuid)).exists()
    code, output = _run("replay_events", "--check")
    assert code == 0, output

    # A new change numbers its events after the dropped ones, and the replay goes on from the snapshot.
    put_target(admin_client, device, [sensor_payload("a")])
    assert _events(device)[0][0] == dropped[-1][0] + 1
    code, output = _run("replay_events", "--check")
    assert code == 0, output


def test_a_stored_version_that_differs_from_the_dropped_log_is_still_found(history):
    device, _ = history
    assert _run("prune_events")[0] == 0

    DeviceTargetStateVersion.objects.filter(device=device, version=2).update(config={"sensors": []})
    code, output = _run("replay_events", "--check")

    assert code == 1
    assert f"{device.uuid} v2: stored version differs from the snapshot of the dropped log" in output


def test_a_gap_after_the_snapshot_is_found(admin_client, history):
    device, _ = history
    assert _run("prune_events")[0] == 0
    put_target(admin_client, device, [sensor_payload("c")])
    first = Event.objects.filter(aggregate_id=str(device.uuid)).order_by("sequence").first()
    first.delete()  # lost, not retained

    code, output = _run("replay_events", "--check")

    assert code == 1
    assert f"{device.uuid}: event sequence jumps from" in output


def test_a_second_prune_folds_into_the_same_snapshot(admin_client, history):
    device, _ = history
    assert _run("prune_events")[0] == 0
    put_target(admin_client, device, [sensor_payload("d")])
    _backdate(device, LONG_AGO)

    assert _run("prune_events")[0] == 0

    snapshot = AggregateSnapshot.objects.get(aggregate_id=str(device.uuid))
    assert sorted(snapshot.state["versions"]) == ["1", "2", "3", "4"]
    assert _run("replay_events", "--check")[0] == 0


def test_a_dry_run_changes_nothing(history):
    device, _ = history
    before = _events(device)

    code, output = _run("prune_events", "--dry-run")

    assert code == 0
    assert f"would drop {len(before)}" in output
    assert _events(device) == before
    assert not AggregateSnapshot.objects.exists()


def test_events_within_the_retention_period_stay(history):
    device, _ = history
    before = _events(device)

    assert _run("prune_events", "--days", "365")[0] == 0

    assert _events(device) == before


def test_days_must_not_be_negative(db):
    assert _run("prune_events", "--days", "-1") == (1, "--days must be 0 (keep every event) or more.")


def test_zero_days_keeps_every_event(history):
    device, _ = history
    before = _events(device)

    code, output = _run("prune_events", "--days", "0")

    assert code == 0
    assert "Every event is kept" in output
    assert _events(device) == before


def test_a_sequence_kept_from_before_the_snapshot_is_no_gap(admin_client, history):
    """An event older by its sequence than the snapshot may be kept while a later one went (a server's clock a
    little behind at a month's end): the replay folds it, and sees no gap."""
    device, _ = history
    first = Event.objects.filter(aggregate_id=str(device.uuid)).order_by("sequence").first()
    Event.objects.filter(pk=first.pk).update(created_at=timezone.now())  # kept
    assert _run("prune_events")[0] == 0

    code, output = _run("replay_events", "--check")

    assert code == 0, output


# PostgreSQL: months as partitions ----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_log_is_partitioned_by_month_with_the_coming_months_ready(db):
    assert partitions.is_partitioned()
    months = [p.start for p in partitions.partitions()]
    this_month = partitions.month_start(datetime.now(UTC).date())
    ahead = this_month
    for _ in range(partitions.MONTHS_AHEAD):
        ahead = partitions.month_next(ahead)
    assert this_month in months and ahead in months


@pytest.mark.postgres
def test_a_month_without_a_partition_is_written_and_then_moved_into_its_own(admin_client, db):
    device = DeviceFactory()
    far = datetime.now(UTC) + timedelta(days=400)  # beyond the months created ahead
    Event.objects.filter(aggregate_id=str(device.uuid)).update(created_at=far)
    assert _in(partitions.default_partition_name(), device) > 0

    created = partitions.partitions_ensure()

    assert partitions.partition_name(partitions.month_start(far.date())) in created
    assert _in(partitions.default_partition_name(), device) == 0
    assert _in(partitions.partition_name(partitions.month_start(far.date())), device) == len(_events(device))


@pytest.mark.postgres
def test_old_months_are_dropped_as_partitions(history):
    old_month = partitions.partition_name(partitions.month_start((timezone.now() - LONG_AGO).date()))

    code, output = _run("prune_events")

    assert code == 0, output
    assert f"dropped partition {old_month}" in output
    assert old_month not in {p.name for p in partitions.partitions()}


@pytest.mark.postgres
def test_a_sequence_stays_unique_per_aggregate_within_a_month(db):
    from django.db import IntegrityError, transaction

    device = DeviceFactory()
    event = Event.objects.filter(aggregate_id=str(device.uuid)).first()
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.create(
            type=event.type,
            aggregate_type=event.aggregate_type,
            aggregate_id=event.aggregate_id,
            sequence=event.sequence,
            correlation_id=event.correlation_id,
            created_at=event.created_at + timedelta(seconds=1),
        )


@pytest.mark.postgres
def test_a_sequence_repeated_in_another_month_is_found(history):
    """The (device, sequence) index is unique per month: the replay finds a repeat across months."""
    device, _ = history
    event = Event.objects.filter(aggregate_id=str(device.uuid)).order_by("sequence").last()
    Event.objects.create(
        type=event.type,
        aggregate_type=event.aggregate_type,
        aggregate_id=event.aggregate_id,
        sequence=event.sequence,
        correlation_id=event.correlation_id,
        created_at=timezone.now(),  # another month's partition
    )

    code, output = _run("replay_events", "--check")

    assert code == 1
    assert f"{device.uuid}: event sequence {event.sequence} appears twice" in output


@pytest.mark.postgres
def test_an_event_that_reaches_a_month_while_it_is_folded_is_folded_too(admin_client, history, monkeypatch):
    """The month is folded before the log is locked; an event of that month written in between (a backdated
    clock) must be in the snapshot, or its sequence would be handed out again."""
    device, _ = history
    lock, ensure = partitions.log_lock, partitions.partitions_ensure

    def late_event_then_lock():
        put_target(admin_client, device, [sensor_payload("late")])
        _backdate(device, LONG_AGO)
        lock()

    def ensure_then_write_late(**kwargs):
        created = ensure(**kwargs)  # it locks the log too: the late event comes at the drop's lock only
        monkeypatch.setattr(partitions, "log_lock", late_event_then_lock)
        return created

    monkeypatch.setattr(partitions, "partitions_ensure", ensure_then_write_late)
    assert _run("prune_events")[0] == 0

    snapshot = AggregateSnapshot.objects.get(aggregate_id=str(device.uuid))
    assert _events(device) == []
    assert sorted(snapshot.state["versions"]) == ["1", "2", "3", "4"]
    put_target(admin_client, device, [sensor_payload("after")])
    assert _events(device)[0][0] == snapshot.through_sequence + 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_one_prune_at_a_time(history):
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [PRUNE_LOCK_KEY])
        code, output = _run("prune_events")
    finally:
        other.close()

    assert code == 1
    assert "Another prune_events is running. Nothing more was dropped" in output
    assert _events(history[0])  # nothing went
    assert _run("prune_events")[0] == 0  # the lock is free again


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_partition_is_created_while_writers_add_events_to_its_month(db):
    """Creating a month's partition moves that month's events out of the default partition; writers adding
    events of the same month meanwhile wait for it, and none is lost or refused."""
    far = datetime.now(UTC) + timedelta(days=400)
    stop, written, errors = threading.Event(), [], []

    def write():
        try:
            while not stop.is_set():
                event = Event.objects.create(
                    type="device.updated",
                    aggregate_type="device",
                    aggregate_id=str(uuid.uuid4()),
                    sequence=1,
                    correlation_id=uuid.uuid4(),
                    created_at=far,
                )
                written.append(event.pk)
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    writer = threading.Thread(target=write)
    writer.start()
    try:
        while len(written) < 20:
            time.sleep(0.01)
        created = partitions.partitions_ensure()
        time.sleep(0.1)
    finally:
        stop.set()
        writer.join(timeout=30)

    assert errors == []
    assert partitions.partition_name(partitions.month_start(far.date())) in created
    assert Event.objects.filter(pk__in=written).count() == len(written)
    assert _in(partitions.default_partition_name(), None) == 0


def _in(table: str, device) -> int:
    with connection.cursor() as cursor:
        if device is None:
            cursor.execute(f"SELECT count(*) FROM {connection.ops.quote_name(table)}")
        else:
            cursor.execute(
                f"SELECT count(*) FROM {connection.ops.quote_name(table)} WHERE aggregate_id = %s", [str(device.uuid)]
            )
        return cursor.fetchone()[0]
