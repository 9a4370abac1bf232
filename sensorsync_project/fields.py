"""Model fields shared by the apps."""

from collections.abc import Sequence
from typing import Any

import orjson
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Expression
from django.db.models.fields.json import KeyTransform


def concrete_field(model: type[models.Model], name: str) -> models.Field:
    """``model``'s field ``name`` that has a column, for SQL written from the models' metadata.

    ``_meta.get_field`` also finds reverse relations, which have no column: naming one here is a bug in the caller.
    """
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field):
        raise FieldDoesNotExist(f"{model.__name__}.{name} is a relation without a column")
    return field


class JSONField(models.JSONField):
    """Django's ``JSONField``, stored the same way, read with orjson.

    Every agent report reads JSON documents back (a device's target config, each sensor row's connection, data
    points and metadata): measured on a 20-sensor report, ``json.loads`` of those values was the largest single
    cost of reading the rows, and orjson reads them ~2-3x faster. A value orjson refuses but the standard reader
    takes (an integer beyond 64 bits, NaN, a lone surrogate) is read by the standard reader, so what comes back is
    always exactly what ``models.JSONField`` would return.

    Migrations record it as ``models.JSONField``: the column is the same, and an ``AlterField`` to a new class
    would make SQLite rebuild every table that has one, for no change at all.
    """

    def deconstruct(self) -> tuple[str, str, Sequence[Any], dict[str, Any]]:
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs

    def from_db_value(self, value: Any, expression: Expression, connection: BaseDatabaseWrapper) -> Any:
        if self.decoder is None and isinstance(value, str) and not isinstance(expression, KeyTransform):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        return super().from_db_value(value, expression, connection)
