"""What operators' tooling reads: Prometheus metrics (also across worker processes), the health check, and
request ids in responses and log lines."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from events.context import audit_context
from sensorsync_project.observability import JsonFormatter, RequestIdFilter
from tests.helpers import poll, report, sensors_url, target_sensors, verdict

ROOT = Path(__file__).resolve().parents[2]


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


def _scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    return response.content.decode()


@pytest.mark.django_db
def test_metrics_move_as_polls_and_reports_arrive(admin_client, device, settings):
    settings.SENSORSYNC_LIVENESS_WRITE_SECONDS = 0
    agent = Client()
    admin_client.post(
        sensors_url(device.uuid),
        {"name": "m1", "protocol": "mqtt", "connection": {"topic": "plant/1"}},
        format="json",
    )
    before = _scrape(agent)

    assert poll(agent, device).status_code == 200
    assert poll(agent, device, etag='"2"').status_code == 304
    running = target_sensors(device)
    assert verdict(report(agent, device, 2, running, seq=1), device)["outcome"] == "applied"
    assert verdict(report(agent, device, 2, running, seq=2), device)["outcome"] == "unchanged"
    assert verdict(report(agent, device, 2, running, seq=1), device)["outcome"] == "stale"
    assert verdict(report(agent, device, None, running), device)["outcome"] == "queued"
    assert report(agent, device, -1, running).status_code == 400
    assert report(agent, device, 2, [{**running[0], "enabled": "yes"}]).status_code == 400
    assert report(agent, device, 2, [{**running[0], "enabled": 7}]).status_code == 400
    assert report(agent, device, 2, running, endpoints_health={"m1": {"errorCount": -1}}).status_code == 400

    after = _scrape(agent)

    def moved(name, labels=""):
        # A labelled series appears with its first count: absent before means 0.
        absent = f"\n{name}{labels} " not in before
        return _metric(after, name, labels) - (0 if absent else _metric(before, name, labels))

    assert moved("sensorsync_polls_total", '{status="200"}') == 1
    assert moved("sensorsync_polls_total", '{status="304"}') == 1
    for outcome in ("applied", "unchanged", "stale", "queued"):
        assert moved("sensorsync_reports_total", f'{{outcome="{outcome}"}}') == 1, outcome
    assert moved("sensorsync_reports_total", '{outcome="rejected"}') == 4
    # Refusals by reason, so an operator sees what a fleet's agents keep re-sending (list indexes and sensor
    # names folded, so the label set stays small).
    rejected = "sensorsync_reports_rejected_total"
    assert moved(rejected, '{reason="validation_error:version"}') == 1
    assert moved(rejected, '{reason="validation_error:config.sensors[].enabled"}') == 2
    assert moved(rejected, '{reason="validation_error:endpoints_health.*.errorCount"}') == 1
    # The staff write reconciled once, the applied report once.
    assert moved("sensorsync_reconciliation_duration_seconds_count") == 1
    assert _metric(after, "sensorsync_sensors", '{protocol="mqtt",status="deployed"}') == 1
    assert _metric(after, "sensorsync_devices", '{state="in_sync"}') == 1


def test_counters_from_several_worker_processes_add_up(tmp_path):
    """Under gunicorn each worker counts in its own process; with PROMETHEUS_MULTIPROC_DIR one scrape sums them."""
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "sensorsync_project.settings_test",
        # Its own throwaway database: never the test database this session is using.
        "DATABASE_URL": "sqlite://:memory:",
    }
    worker = (
        "import django; django.setup(); from reconciliation.metrics import REPORTS; REPORTS.labels('applied').inc({n})"
    )
    for n in (3, 4):
        subprocess.run([sys.executable, "-c", worker.format(n=n)], env=env, cwd=ROOT, check=True, timeout=60)
    scrape = (
        "import django; django.setup()\n"
        "from django.test.utils import setup_test_environment; setup_test_environment()\n"
        "from django.test.runner import DiscoverRunner\n"
        "runner = DiscoverRunner(verbosity=0); old = runner.setup_databases()\n"
        "from django.test import Client\n"
        "print(Client().get('/metrics').content.decode())\n"
        "runner.teardown_databases(old)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", scrape], env=env, cwd=ROOT, check=True, timeout=120, capture_output=True, text=True
    ).stdout

    assert _metric(out, "sensorsync_reports_total", '{outcome="applied"}') == 7


@pytest.mark.django_db
def test_healthz_answers_ok_when_the_database_answers():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_healthz_answers_503_when_the_database_is_unreachable():
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sensorsync_project.settings_test",
        "DATABASE_URL": "postgres://nobody@127.0.0.1:1/nothing",  # nothing listens on port 1
        "DJANGO_ALLOWED_HOSTS": "testserver",
    }
    code = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "r = Client().get('/healthz'); print(r.status_code, r.content.decode())\n"
    )
    out = (
        subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=60, capture_output=True, text=True
        )
        .stdout.strip()
        .splitlines()[-1]
    )

    assert out.startswith("503 ")
    assert json.loads(out[4:]) == {"status": "unavailable", "database": "unreachable"}


@pytest.mark.django_db
def test_every_response_carries_a_request_id_and_keeps_a_sane_one_from_the_client():
    client = Client()
    generated = client.get("/healthz")["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42"})["X-Request-ID"] == "lb-7f3a.42"
    replaced = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"})["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)


def test_log_lines_carry_the_request_id_and_can_be_json():
    record = logging.LogRecord("sensorsync.test", logging.INFO, __file__, 1, "reconciled device=%s", ("d1",), None)
    with audit_context(request_id="req-123"):
        assert RequestIdFilter().filter(record)

    line = json.loads(JsonFormatter().format(record))

    assert line["request_id"] == "req-123"
    assert line["message"] == "reconciled device=d1"
    assert (line["level"], line["logger"]) == ("INFO", "sensorsync.test")
