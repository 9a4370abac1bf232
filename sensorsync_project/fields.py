"""Model fields shared by the apps."""

import orjson
from django.db import models
from django.db.models.fields.json import KeyTransform


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

    def deconstruct(self):
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.JSONField", args, kwargs

    def from_db_value(self, value, expression, connection):
        if self.decoder is None and isinstance(value, str) and not isinstance(expression, KeyTransform):
            try:
                return orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
        return super().from_db_value(value, expression, connection)
