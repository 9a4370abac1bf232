"""PostgreSQL connections prepare the hot statements (server-side binding, psycopg's prepare_threshold), unless
DJANGO_DB_PREPARED_STATEMENTS=false restores Django's defaults."""

import json

import pytest
from django.db import connection

from devices.selectors import device_for_report
from tests.security.test_deploy_check import PRODUCTION, _run

_OPTIONS = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps(s.DATABASES['default'].get('OPTIONS', {})))"
)
_POSTGRES = {**PRODUCTION, "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/sensorsync"}


def _options(env: dict) -> dict:
    result = _run(["-c", _OPTIONS], env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_postgresql_connections_prepare_statements_by_default():
    options = _options(_POSTGRES)
    assert (options["server_side_binding"], options["prepare_threshold"]) == (True, 5)


def test_prepared_statements_can_be_turned_off():
    options = _options({**_POSTGRES, "DJANGO_DB_PREPARED_STATEMENTS": "false"})
    assert "server_side_binding" not in options and "prepare_threshold" not in options


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_report_lookup_is_prepared_after_five_runs(device):
    for _ in range(6):
        assert device_for_report(api_key=device.api_key).pk == device.pk
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any('"devices_device"."api_key_digest" = $1' in sql for sql in prepared), prepared
