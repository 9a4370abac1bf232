"""The pages during a database outage: the admin and /fleet/ answer 503 with ``Retry-After`` (a short HTML page),
logged as a warning, as the API answers a JSON 503; not an HTML 500 logged as a server error per request.

The outages are real on PostgreSQL: the server refusing connections (the configured port has nothing listening),
and the request's connection killed mid-page (``pg_terminate_backend``, as in ``test_faults``). A statement the
database refuses is no outage: it stays a 500 with its traceback.
"""

import contextlib
import logging
import socket

import pytest
from django.db import InterfaceError, connection
from django.test import Client

from tests.helpers import device_with

from .test_faults import Fault, _in_own_thread

PAGES = ["/admin/", "/admin/devices/device/", "/admin/devices/device/{pk}/change/", "/fleet/"]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def logged():
    """Every record logged meanwhile, Django's request log included (the "django" logger does not propagate)."""
    handler = _Records()
    loggers = [logging.getLogger(), logging.getLogger("django")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def assert_outage_page(response, records) -> None:
    body = response.content[:300]
    assert response.status_code == 503, (response.status_code, body)
    assert response["Content-Type"].startswith("text/html"), response["Content-Type"]
    assert b"Temporarily unavailable" in response.content
    retry_after = response.get("Retry-After", "")
    assert retry_after.isdigit() and int(retry_after) > 0, retry_after
    errors = [f"{r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR]
    assert not errors, f"an outage was logged as a server error: {errors}"
    assert any(r.levelno == logging.WARNING and "Database unavailable" in r.getMessage() for r in records), [
        r.getMessage() for r in records
    ]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def staff_client(superuser) -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(superuser)
    return client


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_pages_answer_503_while_the_database_refuses_connections(staff_client):
    device = device_with("s-0")
    settings_dict = connection.settings_dict
    saved = settings_dict["HOST"], settings_dict["PORT"]
    connection.close()
    settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", closed_port()
    try:
        for page in PAGES:
            with logged() as records:
                response = staff_client.get(page.format(pk=device.pk))
            assert_outage_page(response, records)
        with logged() as records:  # a write, too (nothing can be written)
            response = staff_client.post(f"/admin/devices/device/{device.pk}/reconcile/")
        assert_outage_page(response, records)
    finally:
        connection.close()
        settings_dict["HOST"], settings_dict["PORT"] = saved
    assert staff_client.get(f"/admin/devices/device/{device.pk}/change/").status_code == 200  # and back


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("page", "point"),
    [
        ("/admin/devices/device/{pk}/change/", "devices.admin.panels.drift_explain"),
        ("/fleet/", "reconciliation.views.fleet.fleet_device_counts"),
    ],
)
def test_the_connection_dropping_mid_page_answers_503(superuser, monkeypatch, page, point):
    device = device_with("s-0", "s-1")
    fault = Fault(monkeypatch, point)

    def get(client):
        client.force_login(superuser)
        with logged() as records:
            return client.get(page.format(pk=device.pk)), records

    (response, records), _ = _in_own_thread(get)

    assert fault.fired == 1, "the fault point was not on the page's path"
    assert_outage_page(response, records)


@pytest.mark.django_db
def test_a_connection_closed_under_the_page_answers_503(staff_client, monkeypatch):
    """What Django raises when the server closed the connection it holds (``InterfaceError``): on SQLite too."""
    device = device_with("s-0")

    def closed(**kwargs):
        raise InterfaceError("connection already closed")

    monkeypatch.setattr("devices.admin.panels.drift_explain", closed)
    with logged() as records:
        response = staff_client.get(f"/admin/devices/device/{device.pk}/change/")

    assert_outage_page(response, records)


@pytest.mark.django_db
def test_a_statement_the_database_refuses_is_no_outage_but_a_server_error(superuser, monkeypatch):
    """A bug in a query fails the same way on every retry: a 500 with its traceback, not "retry later"."""
    device = device_with("s-0")
    client = Client(raise_request_exception=False)
    client.force_login(superuser)

    def broken_query(**kwargs):
        with connection.cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM no_such_table")

    monkeypatch.setattr("devices.admin.panels.drift_explain", broken_query)
    with logged() as records:
        response = client.get(f"/admin/devices/device/{device.pk}/change/")

    assert response.status_code == 500
    assert "Retry-After" not in response
    assert any(r.levelno >= logging.ERROR and r.exc_info for r in records)
