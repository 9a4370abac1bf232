import uuid
from typing import TYPE_CHECKING, Any

from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import BooleanField, Case, F, Func, PositiveBigIntegerField, QuerySet, Value, When
from django.db.models.sql.compiler import SQLCompiler

from .models import AggregateSnapshot, Event
from .services import DEVICE_AGGREGATE

if TYPE_CHECKING:
    from django.db.models.sql.compiler import _AsSqlType  # (sql, params), as the stubs name it


class JSONTextBytes(Func):
    """The size in bytes of a JSON column's stored text (PostgreSQL: the jsonb value written out as text).

    Measured by the database, so that a list can leave large documents where they are instead of reading
    megabytes only to drop them."""

    template = "length(%(expressions)s)"
    output_field = PositiveBigIntegerField()

    def as_postgresql(
        self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any
    ) -> "_AsSqlType":
        return self.as_sql(compiler, connection, template="octet_length((%(expressions)s)::text)", **extra_context)

    def as_sqlite(self, compiler: SQLCompiler, connection: BaseDatabaseWrapper, **extra_context: Any) -> "_AsSqlType":
        return self.as_sql(compiler, connection, template="length(CAST(%(expressions)s AS BLOB))", **extra_context)


def aggregate_id_normalize(value: str) -> str:
    """Aggregate ids are stored as ``str(uuid)``, lowercase; a uuid reads the same in any case."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def event_list(
    *, device_uuid: uuid.UUID | str | None = None, data_inline_max_bytes: int | None = None
) -> QuerySet[Event]:
    """Events with ``data_size`` (bytes of stored data), ``data_truncated`` and ``data_inline``: the data, or
    None when it is larger than ``data_inline_max_bytes`` (None: never truncated). ``data`` itself is deferred:
    read ``data_inline``."""
    queryset = Event.objects.defer("data").annotate(data_size=JSONTextBytes("data"))
    if data_inline_max_bytes is None:
        queryset = queryset.annotate(data_inline=F("data"), data_truncated=Value(False))
    else:
        queryset = queryset.annotate(
            data_inline=Case(
                When(data_size__lte=data_inline_max_bytes, then=F("data")),
                output_field=Event._meta.get_field("data"),
            ),
            data_truncated=Case(
                When(data_size__gt=data_inline_max_bytes, then=Value(True)),
                default=Value(False),
                output_field=BooleanField(),
            ),
        )
    if device_uuid is not None:
        queryset = queryset.filter(
            aggregate_type=DEVICE_AGGREGATE, aggregate_id=aggregate_id_normalize(str(device_uuid))
        )
    return queryset


def snapshot_get(*, aggregate_id: str, aggregate_type: str = DEVICE_AGGREGATE) -> AggregateSnapshot | None:
    """What retention kept of an aggregate's dropped events (``events.retention``); None if none were dropped."""
    return AggregateSnapshot.objects.filter(aggregate_type=aggregate_type, aggregate_id=aggregate_id).first()
