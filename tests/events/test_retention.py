"""Retention (``manage.py prune_events``): old events go, what they established stays in per-device snapshots,
``replay_events --check`` still checks the whole target history, and new events go on numbering after the dropped
ones. On PostgreSQL the log is partitioned by month and whole months are dropped."""

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from devices.models import DeviceTargetStateVersion
from events import partitions
from events.models import AggregateSnapshot, Event
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


def test_days_must_be_positive(db):
    assert _run("prune_events", "--days", "0") == (1, "--days must be at least 1.")


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
    device, _ = history
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


def _in(table: str, device) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {connection.ops.quote_name(table)} WHERE aggregate_id = %s", [str(device.uuid)]
        )
        return cursor.fetchone()[0]
