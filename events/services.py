"""Appending to the event log.

Writers record events inside ``event_recording(aggregate_id)``; the outermost scope for an aggregate flushes
them in one ``INSERT`` that numbers them after the aggregate's last sequence. The caller must hold the
aggregate's lock (the device row, ``devices.locking``) for the whole scope: that is what keeps per-aggregate
sequences gapless under concurrent writers. The unique constraint on (aggregate, sequence) is the backstop.
"""

import contextlib
import contextvars
from collections.abc import Iterator

from django.db.models import Max, Subquery, Value
from django.db.models.functions import Coalesce

from .context import current_context
from .models import Event

DEVICE_AGGREGATE = "device"

_open: contextvars.ContextVar[dict[tuple[str, str], "EventRecorder"] | None] = contextvars.ContextVar(
    "open_event_recorders", default=None
)


class EventRecorder:
    def __init__(self, aggregate_type: str, aggregate_id: str) -> None:
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.pending: list[Event] = []

    def record(self, type: str, data: dict, *, actor: str) -> None:
        ctx = current_context()
        self.pending.append(
            Event(
                type=type,
                aggregate_type=self.aggregate_type,
                aggregate_id=self.aggregate_id,
                data=data,
                metadata=ctx.metadata(actor),
                correlation_id=ctx.correlation_id,
            )
        )

    def flush(self) -> list[Event]:
        """One INSERT; each event's sequence is the aggregate's current maximum plus its offset, computed by the
        database in the same statement (safe because the caller holds the aggregate's lock)."""
        if not self.pending:
            return []
        events, self.pending = self.pending, []
        last = Coalesce(
            Subquery(
                Event.objects.filter(aggregate_type=self.aggregate_type, aggregate_id=self.aggregate_id)
                .values("aggregate_id")
                .annotate(last=Max("sequence"))
                .values("last")
            ),
            Value(0),
        )
        for offset, event in enumerate(events, start=1):
            event.sequence = last + Value(offset)
        Event.objects.bulk_create(events)
        return events  # their ``sequence`` was assigned by the database; read events back to see it


@contextlib.contextmanager
def event_recording(aggregate_id: str, *, aggregate_type: str = DEVICE_AGGREGATE) -> Iterator[EventRecorder]:
    """Collect the events of one unit of work on one aggregate; nested scopes join the outer one."""
    key = (aggregate_type, str(aggregate_id))
    recorders = _open.get()
    if recorders is not None and key in recorders:
        yield recorders[key]
        return
    recorder = EventRecorder(*key)
    token = _open.set({**(recorders or {}), key: recorder})
    try:
        yield recorder
        recorder.flush()
    finally:
        _open.reset(token)
