"""The agent's hot lookups: one SELECT by an indexed key each, its SQL written once from the models' metadata.

Building and compiling a queryset (``select_related`` + ``defer``) costs ~0.5 ms per lookup, more than the rest
of a 304 poll: measured on PostgreSQL, 0.66 ms for the poll's lookup as a queryset against 0.18 ms as here. So
the statement is written once per database from ``Model._meta`` (columns quoted by the backend), run with the
key, and its row turned into what the queryset would return:

- values through the converters Django applies to a queryset's columns: the backend's
  (``connection.ops.get_db_converters``: SQLite's for datetimes, booleans and UUIDs) and then the field's own
  (``from_db_value``, e.g. JSON);
- instances through ``Model.from_db`` (deferred fields stay deferred and load on access, as with ``defer``); a
  one-to-one row joined in is put in the relation's cache on both sides (``set_cached_value``, as
  ``select_related`` does), and so is a missing one, so neither costs a query later.

The database is the router's choice for the model. No compiler internals are involved: ``tests/agent`` and
``tests/reliability`` exercise every lookup built here, on SQLite and on PostgreSQL.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from django.db import connections, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, JSONField, Model
from django.db.models.fields.reverse_related import OneToOneRel
from django.utils.functional import cached_property

from .fields import concrete_field

M = TypeVar("M", bound=Model)


def _columns(model: type[Model], *, deferred: Sequence[str] = (), only: Sequence[str] | None = None) -> list[Field]:
    """The concrete fields a statement reads, in the model's order (``from_db`` wants that order), or in ``only``'s."""
    if only is not None:
        return [concrete_field(model, name) for name in only]
    unknown = set(deferred) - {field.name for field in model._meta.concrete_fields}
    if unknown:
        raise ValueError(f"{model.__name__} has no field {sorted(unknown)}")
    return [field for field in model._meta.concrete_fields if field.name not in deferred]


@dataclass(frozen=True)
class _Plan:
    """A statement written for one database, with what turns its rows into values."""

    sql: str
    # (column index, converters, the column as an expression): only the columns that need converting.
    converters: tuple[tuple[int, tuple[Callable, ...], Any], ...]
    key_field: Field

    def fetch(self, alias: str, value: Any, *, many: bool) -> list[Sequence[Any]]:
        """The rows for one key ``value``; with ``many``, every row (else the first), converted."""
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [self.key_field.get_db_prep_value(value, connection)])
            found = cursor.fetchall() if many else [row for row in [cursor.fetchone()] if row is not None]
        return self._converted(connection, found)

    def fetch_in(self, alias: str, values: Sequence[Any]) -> list[Sequence[Any]]:
        """The rows for any of the key ``values`` (a plan written for that many), converted."""
        connection = connections[alias]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, [self.key_field.get_db_prep_value(value, connection) for value in values])
            found = cursor.fetchall()
        return self._converted(connection, found)

    def _converted(self, connection: BaseDatabaseWrapper, found: list) -> list[Sequence[Any]]:
        if not self.converters:
            return found
        rows: list[Sequence[Any]] = []
        for row in found:
            converted = list(row)
            for index, converters, expression in self.converters:
                value = converted[index]
                for converter in converters:
                    value = converter(value, expression, connection)
                converted[index] = value
            rows.append(converted)
        return rows


def _plan(
    alias: str, *, model: type[Model], key: str, columns: list[Field], joins: str = "", count: int | None = None
) -> _Plan:
    """The statement for one key value, or (``count``) for any of that many (``IN``)."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    key_field = concrete_field(model, key)
    select = ", ".join(f"{quote(field.model._meta.db_table)}.{quote(field.column)}" for field in columns)
    condition = "= %s" if count is None else f"IN ({', '.join(['%s'] * count)})"
    sql = f"SELECT {select} FROM {table}{joins} WHERE {table}.{quote(key_field.column)} {condition}"
    converters = []
    for index, field in enumerate(columns):
        expression = field.get_col(field.model._meta.db_table)
        found = (*connection.ops.get_db_converters(expression), *expression.get_db_converters(connection))
        if found:
            converters.append((index, found, expression))
    return _Plan(sql=sql, converters=tuple(converters), key_field=key_field)


@dataclass(frozen=True)
class _Part:
    """The columns of one model in a ``KeyedInstance`` row: the looked-up model's, or a joined one-to-one's."""

    model: type[Model]
    fields: list[Field]

    @property
    def attnames(self) -> list[str]:
        return [field.attname for field in self.fields]


@dataclass(frozen=True)
class _JoinedPart(_Part):
    relation: OneToOneRel  # the reverse one-to-one relation it is joined through


class KeyedInstance(Generic[M]):
    """One instance of ``model`` by an indexed ``key`` (or None), with one-to-one rows joined in, in one SELECT.

    ``deferred`` names the model's fields left out; ``related`` maps each reverse one-to-one relation to load
    (``"target_state"``) to the fields of its model left out. Like
    ``model.objects.select_related(*related).defer(...).filter(key=value).first()`` without the compiling.
    """

    def __init__(
        self,
        model: type[M],
        *,
        key: str,
        deferred: Sequence[str] = (),
        related: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.model = model
        self.key = key
        self.deferred = tuple(deferred)
        self.related = dict(related or {})
        self._plans: dict[tuple[str, int | None], _Plan] = {}

    @cached_property
    def joined(self) -> list[_JoinedPart]:
        """Read on first use, once the app registry is ready (reverse relations need it)."""
        joined = []
        for name, left_out in self.related.items():
            relation = self.model._meta.get_field(name)
            if not isinstance(relation, OneToOneRel):
                raise ValueError(f"{self.model.__name__}.{name} is not a reverse one-to-one relation")
            related_model = relation.field.model  # the model whose one-to-one field points here
            joined.append(_JoinedPart(related_model, _columns(related_model, deferred=left_out), relation))
        return joined

    @cached_property
    def parts(self) -> list[_Part]:
        """The looked-up model's part, then the joined ones, in the row's order."""
        return [_Part(self.model, _columns(self.model, deferred=self.deferred)), *self.joined]

    @cached_property
    def _layout(self) -> list[tuple[int, int, list[str], int]]:
        """Per part: its slice of the row, its fields' attnames, and where its primary key is among them."""
        layout, start = [], 0
        for part in self.parts:
            attnames = part.attnames
            pk_index = attnames.index(part.model._meta.pk.attname)
            layout.append((start, start + len(attnames), attnames, pk_index))
            start += len(attnames)
        return layout

    def _plan_for(self, alias: str, count: int | None = None) -> _Plan:
        plan = self._plans.get((alias, count))
        if plan is None:
            quote = connections[alias].ops.quote_name
            table = quote(self.model._meta.db_table)
            joins = "".join(
                f" LEFT OUTER JOIN {quote(part.model._meta.db_table)} ON ({table}."
                f"{quote(part.relation.field.target_field.column)} = {quote(part.model._meta.db_table)}."
                f"{quote(part.relation.field.column)})"
                for part in self.joined
            )
            columns = [field for part in self.parts for field in part.fields]
            plan = self._plans[(alias, count)] = _plan(
                alias, model=self.model, key=self.key, columns=columns, joins=joins, count=count
            )
        return plan

    def get(self, value: Any) -> M | None:
        alias = router.db_for_read(self.model)
        found = self._plan_for(alias).fetch(alias, value, many=False)
        return self._instance(alias, found[0]) if found else None

    def get_in(self, values: Sequence[Any]) -> list[M]:
        """The instances whose key is any of ``values`` (each once), in one SELECT ... WHERE key IN (...)."""
        if not values:
            return []
        alias = router.db_for_read(self.model)
        return [self._instance(alias, row) for row in self._plan_for(alias, len(values)).fetch_in(alias, values)]

    def _instance(self, alias: str, row: Sequence[Any]) -> M:
        (start, end, attnames, _), *joined_layout = self._layout
        obj = self.model.from_db(alias, attnames, row[start:end])
        for part, (start, end, attnames, pk_index) in zip(self.joined, joined_layout, strict=True):
            values = row[start:end]
            related = None
            if values[pk_index] is not None:
                related = part.model.from_db(alias, attnames, values)
                part.relation.field.set_cached_value(related, obj)
            part.relation.set_cached_value(obj, related)  # None: known absent, so reading it raises without a query
        return obj


class KeyedRows:
    """Some fields of every row of ``model`` with an indexed ``key``, in ``fields``' order, in one
    SELECT: like ``model.objects.filter(key=value).values_list(*fields)`` without the compiling."""

    def __init__(self, model: type[Model], *, key: str, fields: Sequence[str]) -> None:
        self.model = model
        self.key = key
        self.fields = tuple(fields)
        self._plans: dict[str, _Plan] = {}

    def rows(self, value: Any) -> list[Sequence[Any]]:
        alias = router.db_for_read(self.model)
        plan = self._plans.get(alias)
        if plan is None:
            columns = _columns(self.model, only=self.fields)
            plan = self._plans[alias] = _plan(alias, model=self.model, key=self.key, columns=columns)
        return plan.fetch(alias, value, many=True)


def json_field(field: Field) -> bool:
    return isinstance(field, JSONField)


def db_param(field: Field, value: Any, connection: BaseDatabaseWrapper) -> tuple[str, Any]:
    """A value's placeholder and parameter in a statement written by hand. JSON is written as orjson's text (cast
    to jsonb on PostgreSQL): for a report's stored parts or a device's facts ~30 us less per value than Django's
    encoder and adapter. A value orjson cannot write, and JSON null, go Django's way."""
    if value is not None and json_field(field):
        try:
            text = orjson.dumps(value).decode()
        except orjson.JSONEncodeError:
            pass
        else:
            return ("%s::jsonb" if connection.vendor == "postgresql" else "%s"), text
    return "%s", field.get_db_prep_save(value, connection)


def set_terms(model: type[Model], values: Mapping[str, Any], connection: Any) -> tuple[list[str], list[Any]]:
    """The ``column = %s`` terms of an UPDATE's SET for ``values`` (model field names), and their parameters as the
    backend stores them."""
    quote = connection.ops.quote_name
    assignments, params = [], []
    for name, new in values.items():
        field = concrete_field(model, name)
        placeholder, param = db_param(field, new, connection)
        assignments.append(f"{quote(field.column)} = {placeholder}")
        params.append(param)
    return assignments, params


def row_update(model: type[Model], *, key: str, value: Any, values: Mapping[str, Any]) -> int:
    """``model.objects.filter(key=value).update(**values)`` (plain values only) without compiling a queryset: one
    UPDATE of just these columns. The number of rows written."""
    alias = router.db_for_write(model)
    connection = connections[alias]
    quote = connection.ops.quote_name
    assignments, params = set_terms(model, values, connection)
    key_field = model._meta.pk if key == "pk" else concrete_field(model, key)
    assert key_field is not None
    params.append(key_field.get_db_prep_value(value, connection))
    sql = f"UPDATE {quote(model._meta.db_table)} SET {', '.join(assignments)} WHERE {quote(key_field.column)} = %s"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount
