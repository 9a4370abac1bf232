"""The WSGI application (``sensorsync_project.wsgi.application``) serves the agents' routes through their own short
middleware chain and everything else through the full one; both keep request ids, error answers and logging."""

import io
import re
import sys

import orjson
import pytest
from django.core.checks import run_checks
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from sensorsync_project.wsgi import application
from tests.helpers import target_version

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def keep_the_test_transaction():
    # As Django's test client does: the handler would otherwise close the connection holding the test's transaction.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _call(method: str, path: str, *, headers: dict | None = None, body: bytes = b"") -> tuple[int, dict, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    started: list = []
    chunks = application(environ, lambda status, response_headers, *_: started.append((status, response_headers)))
    content = b"".join(chunks)
    chunks.close()
    status, response_headers = started[0]
    return int(status.split()[0]), dict(response_headers), content


def test_an_agent_poll_runs_on_the_short_chain_with_a_request_id(device):
    status, headers, content = _call(
        "GET",
        f"/api/v1/device/{device.uuid}/state",
        headers={"X-Device-API-Key": device.api_key, "X-Request-ID": "lb-1"},
    )

    assert status == 200
    assert orjson.loads(content)[str(device.uuid)]["version"] == target_version(device)
    assert headers["X-Request-ID"] == "lb-1"
    assert "X-Frame-Options" not in headers  # the clickjacking middleware is not on the agents' chain
    assert headers["X-Content-Type-Options"] == "nosniff"  # SecurityMiddleware is
    assert "Set-Cookie" not in headers and "Vary" not in headers  # no session, no CSRF cookie


def test_a_staff_page_runs_on_the_full_chain():
    status, headers, _ = _call("GET", "/admin/login/")

    assert status == 200
    assert headers["X-Frame-Options"] == "DENY"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])
    assert "csrftoken" in headers.get("Set-Cookie", "")


def test_an_unknown_agent_route_and_a_refusal_answer_in_the_json_error_shape(device):
    status, headers, content = _call("GET", "/api/v1/device/not-a-route")
    assert status == 404
    assert headers["Content-Type"] == "application/json"
    assert orjson.loads(content)["error"] == "not_found"

    status, _, content = _call("PATCH", "/api/v1/device/state", headers={"X-Device-API-Key": "nobody"}, body=b"{}")
    assert status == 401
    assert orjson.loads(content)["error"] == "not_authenticated"


def test_the_short_chain_may_only_leave_middleware_out(settings):
    assert [m for m in run_checks() if m.id == "sensorsync.E010"] == []

    settings.SENSORSYNC_AGENT_MIDDLEWARE = [*settings.SENSORSYNC_AGENT_MIDDLEWARE[::-1]]
    assert [m.id for m in run_checks() if m.id == "sensorsync.E010"] == ["sensorsync.E010"]

    settings.SENSORSYNC_AGENT_MIDDLEWARE = ["tests.somewhere.ExtraMiddleware"]
    assert [m.id for m in run_checks() if m.id == "sensorsync.E010"] == ["sensorsync.E010"]
