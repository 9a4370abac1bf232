"""Retention of the event log: events older than the retention period are dropped, and what they established is
kept in one snapshot per aggregate (``AggregateSnapshot``), so that a replay still checks the whole history.

On PostgreSQL the log is partitioned by month (``events.partitions``) and a month goes when all of it is older than
the cut-off, by dropping its partition: nothing is deleted row by row, and no table is rewritten. Events are
therefore kept at least the retention period and at most one month more. SQLite deletes the rows instead.

Before a month goes, each aggregate's events in it are folded into the aggregate's snapshot by the folder the
aggregate's owner registered (``snapshot_folder_register``); an aggregate without one keeps only its last sequence.
The fold and the drop are one transaction: a crash leaves both or neither.
"""

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby

from django.db import connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from . import partitions
from .models import AggregateSnapshot, Event

# (sequence, type, data) of one aggregate's events, in sequence order
EventRows = Iterable[tuple[int, str, dict]]
# (the state so far, or None; the next events of the types asked for) -> the new state
Folder = Callable[[dict | None, EventRows], dict]


@dataclass(frozen=True)
class _Registration:
    event_types: frozenset[str]
    fold: Folder


_folders: dict[str, _Registration] = {}


def snapshot_folder_register(aggregate_type: str, *, event_types: Iterable[str], fold: Folder) -> None:
    """How the snapshots of ``aggregate_type`` keep what its dropped events established: ``fold`` gets the
    previous state and the dropped events of ``event_types``. Registered once, by the app that owns the
    aggregate (in its ``AppConfig.ready``)."""
    _folders[aggregate_type] = _Registration(frozenset(event_types), fold)


@dataclass
class PruneResult:
    cutoff: datetime
    events_dropped: int = 0
    snapshots_written: int = 0
    partitions_dropped: list[str] = field(default_factory=list)
    partitions_created: list[str] = field(default_factory=list)


def events_prune(*, before: datetime, dry_run: bool = False) -> PruneResult:
    """Drop the events created before ``before`` (on PostgreSQL: before the start of its month, so whole months
    go), after folding them into the snapshots. Also creates the partitions of the coming months. ``dry_run``:
    count, change nothing. The result's ``cutoff`` is the moment before which events went."""
    if not partitions.is_partitioned():
        older = Q(created_at__lt=before)
        result = PruneResult(cutoff=before, events_dropped=Event.objects.filter(older).count())
        if not dry_run:
            with transaction.atomic():
                result.snapshots_written = _snapshots_fold(older)
                Event.objects.filter(older).delete()
        return result
    cutoff = partitions.month_start(before.astimezone(UTC).date())
    result = PruneResult(cutoff=cutoff, events_dropped=Event.objects.filter(created_at__lt=cutoff).count())
    if dry_run:
        return result
    result.partitions_created = partitions.partitions_ensure()  # the default partition's events go to their month
    for month in partitions.partitions():
        if month.end > cutoff:
            break
        with transaction.atomic():
            _ddl_session()
            result.snapshots_written += _snapshots_fold(Q(created_at__gte=month.start, created_at__lt=month.end))
            partitions.partition_drop(month)
        result.partitions_dropped.append(month.name)
    return result


def _ddl_session() -> None:
    with connection.cursor() as cursor:
        partitions.ddl_session(cursor)


def _snapshots_fold(dropped: Q) -> int:
    """Fold the ``dropped`` events into their aggregates' snapshots; the number of snapshots written."""
    last = {
        (row["aggregate_type"], row["aggregate_id"]): row["last"]
        for row in Event.objects.filter(dropped)
        .order_by()
        .values("aggregate_type", "aggregate_id")
        .annotate(last=Max("sequence"))
    }
    if not last:
        return 0
    stored = {(s.aggregate_type, s.aggregate_id): s for s in _snapshots(last)}
    states = {key: snapshot.state for key, snapshot in stored.items()}
    for aggregate_type, registration in _folders.items():
        rows = (
            Event.objects.filter(dropped, aggregate_type=aggregate_type, type__in=registration.event_types)
            .order_by("aggregate_id", "sequence")
            .values_list("aggregate_id", "sequence", "type", "data")
            .iterator(chunk_size=2000)
        )
        for aggregate_id, events in groupby(rows, key=lambda row: row[0]):
            key = (aggregate_type, aggregate_id)
            states[key] = registration.fold(states.get(key), (row[1:] for row in events))
    now = timezone.now()
    snapshots = [
        AggregateSnapshot(
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            through_sequence=max(sequence, stored[key].through_sequence if key in stored else 0),
            state=states.get(key) or {},
            updated_at=now,
        )
        for key, sequence in last.items()
        for aggregate_type, aggregate_id in [key]
    ]
    AggregateSnapshot.objects.bulk_create(
        snapshots,
        batch_size=500,
        update_conflicts=True,
        unique_fields=["aggregate_type", "aggregate_id"],
        update_fields=["through_sequence", "state", "updated_at"],
    )
    return len(snapshots)


def _snapshots(keys: Iterable[tuple[str, str]]) -> Iterator[AggregateSnapshot]:
    by_type: dict[str, list[str]] = {}
    for aggregate_type, aggregate_id in keys:
        by_type.setdefault(aggregate_type, []).append(aggregate_id)
    for aggregate_type, ids in by_type.items():
        for start in range(0, len(ids), 500):
            yield from AggregateSnapshot.objects.filter(
                aggregate_type=aggregate_type, aggregate_id__in=ids[start : start + 500]
            )
