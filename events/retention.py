"""Retention of the event log: events older than the retention period are dropped, and what they established is
kept in one snapshot per aggregate (``AggregateSnapshot``), so that a replay still checks the whole history.

On PostgreSQL the log is partitioned by month (``events.partitions``) and a month goes when all of it is older than
the cut-off, by dropping its partition: nothing is deleted row by row, and no table is rewritten. Events are
therefore kept at least the retention period and at most one month more. SQLite deletes the rows instead.

Before a month goes, each aggregate's events in it are folded into the aggregate's snapshot by the folder the
aggregate's owner registered (``snapshot_folder_register``); an aggregate without one keeps only its last sequence.
The month is read and folded while writers go on; then, with the log locked (writers wait for an upsert and a
DROP), the fold is checked to cover every event of the month (folded again if one came since), and the snapshots
are written and the month dropped in one transaction: a crash leaves both or neither. One prune runs at a time.
"""

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby

from django.db import OperationalError, connection, transaction
from django.db.models import Count, Max, Q
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
    cutoff: datetime | None  # None: every event was kept
    events_dropped: int = 0
    snapshots_written: int = 0
    partitions_dropped: list[str] = field(default_factory=list)
    partitions_created: list[str] = field(default_factory=list)


class PruneBusy(Exception):
    """Another prune is running (the lock it holds is not granted), or writers held a lock longer than allowed."""


# The session-level advisory lock that keeps two prunes (a cron on every app server) from running at once.
PRUNE_LOCK_KEY = 0x5E5E_0E17


def events_prune(*, before: datetime | None, dry_run: bool = False) -> PruneResult:
    """Drop the events created before ``before`` (on PostgreSQL: before the start of its month, so whole months
    go), after folding them into the snapshots; None keeps every event. On PostgreSQL, also creates the partitions
    of the coming months. ``dry_run``: count, change nothing. The result's ``cutoff`` is the moment before which
    events went. Raises ``PruneBusy`` when another prune runs or writers hold a lock too long."""
    if not partitions.is_partitioned():
        result = PruneResult(cutoff=before)
        if before is not None:
            older = Q(created_at__lt=before)
            result.events_dropped = Event.objects.filter(older).count()
            if not dry_run:
                with transaction.atomic():
                    result.snapshots_written = _snapshots_write(_snapshots_fold(older))
                    Event.objects.filter(older).delete()
        return result
    with _prune_session():
        cutoff = None if before is None else partitions.month_start(before.astimezone(UTC).date())
        result = PruneResult(cutoff=cutoff)
        if cutoff is not None:
            result.events_dropped = Event.objects.filter(created_at__lt=cutoff).count()
        if dry_run:
            return result
        result.partitions_created = partitions.partitions_ensure()  # the default partition's events go to their month
        for month in partitions.partitions():
            if cutoff is None or month.end > cutoff:
                break
            in_month = Q(created_at__gte=month.start, created_at__lt=month.end)
            folded = _snapshots_fold(in_month)  # read while writers go on: a month past retention takes none
            with transaction.atomic():
                _ddl_session()
                partitions.log_lock()  # writers wait from here to the commit: an upsert and a DROP
                if _fingerprint(in_month) != folded.fingerprint:  # an event of that month came meanwhile
                    folded = _snapshots_fold(in_month)
                result.snapshots_written += _snapshots_write(folded)
                partitions.partition_drop(month)
            result.partitions_dropped.append(month.name)
        return result


@contextmanager
def _prune_session() -> Iterator[None]:
    """One prune at a time, without the application's statement timeout (counting and folding a month of a large
    log takes longer); both as they were afterwards."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [PRUNE_LOCK_KEY])
        if not cursor.fetchone()[0]:
            raise PruneBusy("Another prune_events is running.")
        cursor.execute("SHOW statement_timeout")
        (timeout,) = cursor.fetchone()
        try:
            cursor.execute("SET statement_timeout = 0")
            try:
                yield
            except OperationalError as exc:
                if getattr(exc.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                    raise PruneBusy(f"Writers held a lock past the lock timeout ({exc}).") from exc
                raise
        finally:
            cursor.execute("SELECT set_config('statement_timeout', %s, false)", [timeout])
            cursor.execute("SELECT pg_advisory_unlock(%s)", [PRUNE_LOCK_KEY])


LOCK_NOT_AVAILABLE = "55P03"


def _ddl_session() -> None:
    with connection.cursor() as cursor:
        partitions.ddl_session(cursor)


@dataclass(frozen=True)
class _Folded:
    snapshots: list[AggregateSnapshot]
    fingerprint: tuple  # of the events folded: (count, newest id)


def _fingerprint(events: Q) -> tuple:
    found = Event.objects.filter(events).aggregate(count=Count("pk"), newest=Max("pk"))
    return found["count"], found["newest"]


def _snapshots_fold(dropped: Q) -> _Folded:
    """The snapshots of the aggregates with ``dropped`` events, with those events folded in."""
    fingerprint = _fingerprint(dropped)
    last = {
        (row["aggregate_type"], row["aggregate_id"]): row["last"]
        for row in Event.objects.filter(dropped)
        .order_by()
        .values("aggregate_type", "aggregate_id")
        .annotate(last=Max("sequence"))
    }
    if not last:
        return _Folded([], fingerprint)
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
    return _Folded(snapshots, fingerprint)


def _snapshots_write(folded: _Folded) -> int:
    AggregateSnapshot.objects.bulk_create(
        folded.snapshots,
        batch_size=500,
        update_conflicts=True,
        unique_fields=["aggregate_type", "aggregate_id"],
        update_fields=["through_sequence", "state", "updated_at"],
    )
    return len(folded.snapshots)


def _snapshots(keys: Iterable[tuple[str, str]]) -> Iterator[AggregateSnapshot]:
    by_type: dict[str, list[str]] = {}
    for aggregate_type, aggregate_id in keys:
        by_type.setdefault(aggregate_type, []).append(aggregate_id)
    for aggregate_type, ids in by_type.items():
        for start in range(0, len(ids), 500):
            yield from AggregateSnapshot.objects.filter(
                aggregate_type=aggregate_type, aggregate_id__in=ids[start : start + 500]
            )
