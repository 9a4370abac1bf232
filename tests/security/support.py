"""Helpers shared by the security and reliability suites (plain functions; fixtures live in each conftest).

Agent calls are raw bytes with explicit headers, as a device sends them; staff calls carry a real DRF token
(``Authorization: Token <key>``), as a script does, so authentication is exercised, not bypassed.
"""

import contextlib
import copy
import json
import logging
from io import StringIO

from django.conf import settings
from django.core.management import call_command
from django.db import connection
from rest_framework.authtoken.models import Token

from devices.models import Device, DeviceTargetState, DeviceTargetStateVersion
from events.models import Event
from reconciliation.services.sensors import sensor_create
from tests.factories import DeviceFactory

API = "/api/v1"
REPORT_URL = f"{API}/device/state"
IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

# ---------------------------------------------------------------------------------------------------------------
# URLs and payloads
# ---------------------------------------------------------------------------------------------------------------


def state_url(uuid) -> str:
    return f"{API}/device/{uuid}/state"


def device_url(uuid) -> str:
    return f"{API}/devices/{uuid}"


def sensors_url(uuid) -> str:
    return f"{API}/devices/{uuid}/sensors"


def sensor_url(uuid, name: str) -> str:
    return f"{API}/devices/{uuid}/sensors/{name}"


def target_state_url(uuid) -> str:
    return f"{API}/devices/{uuid}/target-state"


def sensor_payload(name: str, **overrides) -> dict:
    """A valid sensor object as staff send it (SPEC section 3)."""
    data = {
        "name": name,
        "protocol": "modbus",
        "enabled": True,
        "pollInterval": 5000,
        "connection": {"host": "10.0.0.5", "port": 502, "unitId": 1},
        "dataPoints": [{"name": "temperature", "address": 40001, "type": "float32", "unit": "C"}],
        "metadata": {},
    }
    data.update(overrides)
    return data


def report_entry(version, sensors: list[dict], *, seq: int | None = None, **extra) -> dict:
    entry = {
        "version": version,
        "config": {"sensors": sensors},
        "apps": {},
        "os_version": "Debian GNU/Linux 12",
        "agent_version": "2.4.1",
        "local_ip": "192.168.1.20",
        "uptime": 3600,
    }
    if seq is not None:
        entry["seq"] = seq
    entry.update(extra)
    return entry


def report_body(device, version, sensors: list[dict], **kwargs) -> bytes:
    return json.dumps({str(device.uuid): report_entry(version, sensors, **kwargs)}).encode()


def target_sensors(device) -> list[dict]:
    """What an agent runs after deploying the current target (ids included)."""
    return copy.deepcopy(DeviceTargetState.objects.get(device_id=device.pk).config["sensors"])


def target_version(device) -> int:
    return DeviceTargetState.objects.get(device_id=device.pk).version


def device_with_sensors(*names: str, user=None, **device_fields):
    """A device (with ``.api_key``) whose target holds the named sensors (target version 1 + len(names))."""
    device = DeviceFactory(**device_fields)
    for name in names:
        sensor_create(device_uuid=device.uuid, data=sensor_payload(name), user=user)
    key = device.api_key
    device = Device.objects.select_related("target_state").get(pk=device.pk)
    device.api_key = key
    return device


def token_for(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def staff_headers(token: str) -> dict:
    return {"Authorization": f"Token {token}"}


def agent_headers(key: str) -> dict:
    return {"X-Device-API-Key": key}


def send_report(client, raw: bytes, *, key: str | None, content_type="application/json", **headers):
    if key is not None:
        headers = {**agent_headers(key), **headers}
    return client.generic("PATCH", REPORT_URL, data=raw, content_type=content_type, headers=headers)


# ---------------------------------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------------------------------


class _ServerErrors(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.causes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            self.causes.append(f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]}")


@contextlib.contextmanager
def server_errors():
    """The exceptions the server logged meanwhile (what is behind a 500 or a 503), for assertion messages."""
    handler = _ServerErrors()
    logging.getLogger().addHandler(handler)
    try:
        yield handler.causes
    finally:
        logging.getLogger().removeHandler(handler)


def assert_error_shape(response, statuses, causes: list[str] | None = None) -> dict:
    """SPEC section 7: every refusal is JSON ``{"error": code, "message": sentence[, "fields": {...}]}``."""
    statuses = {statuses} if isinstance(statuses, int) else set(statuses)
    body_head = response.content[:400]
    assert response.status_code in statuses, (response.status_code, sorted(statuses), body_head, causes or [])
    content_type = response.get("Content-Type", "")
    assert content_type.startswith("application/json"), (response.status_code, content_type, body_head)
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if "fields" in body:
        assert isinstance(body["fields"], dict), body
    return body


def read_model_and_log_consistent() -> list[str]:
    """``rebuild_read_model --check`` and ``replay_events --check``; their complaints, or [] when both pass."""
    problems = []
    for command in ("rebuild_read_model", "replay_events"):
        out = StringIO()
        try:
            call_command(command, "--check", stdout=out, stderr=StringIO())
        except Exception as exc:  # CommandError on a difference; anything else is as much a failure
            problems.append(f"{command} --check: {type(exc).__name__}: {exc}\n{out.getvalue()[-3000:]}")
    return problems


def event_sequences(device_uuid) -> list[int]:
    return list(
        Event.objects.filter(aggregate_type="device", aggregate_id=str(device_uuid))
        .order_by("sequence")
        .values_list("sequence", flat=True)
    )


def assert_gapless(device_uuid) -> None:
    sequences = event_sequences(device_uuid)
    assert sequences == list(range(1, len(sequences) + 1)), sequences


def assert_target_history_contiguous(device) -> None:
    """Target versions strictly increase, none reused, every version kept (SPEC section 2)."""
    versions = list(
        DeviceTargetStateVersion.objects.filter(device_id=device.pk).order_by("id").values_list("version", flat=True)
    )
    assert versions == sorted(versions), f"history rows not in increasing version order: {versions}"
    assert len(versions) == len(set(versions)), f"a target version was written twice: {versions}"
    current = DeviceTargetState.objects.get(device_id=device.pk).version
    assert versions == list(range(1, current + 1)), (current, versions)


# ---------------------------------------------------------------------------------------------------------------
# "Nothing was written"
# ---------------------------------------------------------------------------------------------------------------


SNAPSHOT_APPS = ("devices", "sensors", "reconciliation", "events")


def world_snapshot() -> dict:
    """Every row of every model the product owns (devices with their liveness, target states and their history,
    current states, read-model rows, events, drift records, ...), by model label: what "nothing was written"
    compares. Built from the app registry, so a model added later is covered too."""
    from django.apps import apps

    snapshot = {}
    for label in SNAPSHOT_APPS:
        for model in apps.get_app_config(label).get_models():
            rows = model.objects.order_by("pk").values()
            snapshot[model._meta.label] = [tuple(sorted(row.items())) for row in rows]
    return snapshot


def snapshot_diff(before: dict, after: dict) -> list[str]:
    """Which parts of the world changed (for a readable assertion message)."""
    return [name for name in before if before[name] != after[name]]


def database_text() -> str:
    """Every row of every table the project owns or uses, as text (sessions decoded): for secret scans."""
    from django.apps import apps
    from django.contrib.sessions.backends.db import SessionStore
    from django.contrib.sessions.models import Session

    chunks = []
    for model in apps.get_models():
        if model is Session:
            for session in Session.objects.all():
                chunks.append(session.session_data)
                chunks.append(repr(SessionStore().decode(session.session_data)))
            continue
        chunks.extend(repr(row) for row in model.objects.values_list())
    return "\n".join(chunks)


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


# ---------------------------------------------------------------------------------------------------------------
# Real server processes against the (committed) test database, and a plain HTTP client for them
# ---------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The test database (as the test process sees it) as a DATABASE_URL for a subprocess."""
    from urllib.parse import quote

    db = connection.settings_dict
    auth = quote(db["USER"] or "postgres") + (f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class ServerProcesses:
    """``manage.py runserver --noreload`` processes on free 127.0.0.1 ports, against the test database; with
    ``server="gunicorn"``, the production server instead (``gunicorn -c gunicorn.conf.py``, its workers set by
    ``GUNICORN_WORKERS`` in ``env``).

    Use as a context manager (or call ``stop``): the processes are always terminated."""

    def __init__(self, count: int, *, env: dict | None = None, log_dir=None, server: str = "runserver"):
        assert server in ("runserver", "gunicorn"), server
        self.count = count
        self.extra_env = env or {}
        self.log_dir = log_dir
        self.server = server
        self.processes = []
        self.ports: list[int] = []

    def start(self) -> "ServerProcesses":
        import os
        import subprocess
        import sys
        import tempfile
        from pathlib import Path

        base = Path(settings.BASE_DIR)
        log_dir = Path(self.log_dir or tempfile.mkdtemp(prefix="sensorsync-servers-"))
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SENSORSYNC_", "PYTEST"))},
            "DATABASE_URL": database_url(),
            "DJANGO_SETTINGS_MODULE": "sensorsync_project.settings",
            "DJANGO_SECRET_KEY": "reliability-test-secret-key-not-for-production-0123456789abcdef",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_DEBUG": "false",
            "DJANGO_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        try:
            for index in range(self.count):
                port = free_port()
                log = open(log_dir / f"server-{index}.log", "wb")  # noqa: SIM115 (closed with the process)
                if self.server == "gunicorn":
                    command = [str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py"]
                    server_env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
                else:
                    command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
                    server_env = env
                process = subprocess.Popen(
                    command,
                    cwd=base,
                    env=server_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
                process.log = log
                self.processes.append(process)
                self.ports.append(port)
            for port, process in zip(self.ports, self.processes, strict=True):
                self._wait_ready(port, process)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, port: int, process, timeout: float = 60.0) -> None:
        import time
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server on port {port} exited with {process.returncode}: {self.log_of(process)}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server on port {port} not ready after {timeout} s: {self.log_of(process)}")

    @staticmethod
    def log_of(process) -> str:
        try:
            with open(process.log.name, "rb") as log:
                return log.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def logs(self) -> str:
        return "\n".join(f"--- server {i}\n{self.log_of(p)}" for i, p in enumerate(self.processes))

    def stop(self) -> None:
        import subprocess

        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            process.log.close()

    def url(self, index: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[index % self.count]}{path}"

    def __enter__(self) -> "ServerProcesses":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def http(method: str, url: str, *, body: bytes | None = None, headers: dict | None = None, timeout: float = 30.0):
    """(status, headers, body bytes) over plain HTTP; HTTP errors are answers, not exceptions."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if body is not None and "Content-Type" not in (headers or {}):
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()
