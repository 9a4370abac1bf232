"""Django's SQLite backend, with the connection's real bound-parameter limit (a backport of Django 6.0).

Django 5.2 assumes SQLite's old compile-time default of 999 variables per statement and splits a bulk upsert of
a few dozen sensor rows into batches; SQLite 3.32+ allows 32766. Reading the limit from the connection keeps
reconciliation at a constant number of statements on SQLite as it is on PostgreSQL.
"""

import sqlite3

from django.db.backends.sqlite3 import base, features
from django.utils.functional import cached_property


class DatabaseFeatures(features.DatabaseFeatures):
    # As in Django 6.0; the 5.2 stubs declare a plain (writable) attribute, which a cached property can override.
    @cached_property
    def max_query_params(self) -> int:  # type: ignore[override]
        self.connection.ensure_connection()
        return self.connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)


class DatabaseWrapper(base.DatabaseWrapper):
    features_class = DatabaseFeatures
