import logging

import pytest
from django.db import connection

from events.models import Event

# Loggers that set their own level in settings.LOGGING; caplog's root level alone would not reach them.
LOGGERS = ("", "django", "django.request", "django.server", "django.security", "django.db.backends", "sensorsync")


@pytest.fixture
def secret_watch(caplog):
    """Records every log line at DEBUG (SQL included) for the whole test; at the end, no secret registered with
    ``secret_watch.append(key)`` may appear in a log line, an exception text, or an event's data or metadata."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    forced = connection.force_debug_cursor
    connection.force_debug_cursor = True  # SQL statements are logged too: a key must never be a query parameter
    secrets: list[str] = []
    yield secrets
    connection.force_debug_cursor = forced
    assert secrets, "the test registered no secret to look for"
    records = caplog.get_records("setup") + caplog.get_records("call") + caplog.get_records("teardown")
    assert any(r.name == "django.db.backends" for r in records), "SQL logging was not captured"
    for record in records:
        texts = [record.getMessage(), record.exc_text or "", repr(record.args)]
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(repr(record.exc_info[1]))
        for secret in secrets:
            leaked = [text for text in texts if secret in text]
            assert not leaked, f"a device key appears in a {record.name} log line: {leaked[0][:300]}"
    for data, metadata in Event.objects.values_list("data", "metadata"):
        for secret in secrets:
            assert secret not in repr(data) and secret not in repr(metadata), "a device key appears in an event"
