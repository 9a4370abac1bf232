"""The agent's log upload, POST /api/v1/device/<uuid>/logs, as its CloudLogBackend sends it: NDJSON, gzipped, the
device key in X-Device-API-Key. Lines are kept per device within their bounds; the upload is authenticated and
rate-limited like the agent's other requests, on a budget of its own."""

import gzip
import time
import urllib.request
import uuid

import orjson
import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from devicelogs.models import DeviceLogLine
from tests.factories import DeviceFactory
from tests.helpers import agent_headers, assert_error, state_url


def logs_url(device_uuid) -> str:
    return f"/api/v1/device/{device_uuid}/logs"


def _ndjson(*messages: str, level: str = "info") -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "message": message,
                "timestamp": int(time.time() * 1000),
                "level": level,
                "source": {"type": "system", "name": "Agent"},
            }
        )
        + b"\n"
        for message in messages
    )


def upload(client, device, body: bytes, *, compress: bool = True, key: str | None = "own", path=None, **headers):
    if compress:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    headers |= agent_headers(device.api_key if key == "own" else key)
    return client.post(path or logs_url(device.uuid), data=body, content_type="application/x-ndjson", headers=headers)


def _messages(device) -> list[str]:
    return list(DeviceLogLine.objects.filter(device_id=device.pk).order_by("id").values_list("message", flat=True))


@pytest.mark.django_db
def test_the_agents_gzipped_ndjson_is_stored_and_counted(agent):
    device = DeviceFactory()
    response = upload(agent, device, _ndjson("started", "polling", level="warn"))
    assert response.status_code == 200, response.content
    assert response.json() == {"stored": 2, "skipped": 0, "problems": []}
    assert _messages(device) == ["started", "polling"]
    assert set(DeviceLogLine.objects.values_list("level", "source", "source_name")) == {("warn", "system", "Agent")}


@pytest.mark.django_db
def test_an_uncompressed_upload_is_read_as_well(agent):
    device = DeviceFactory()
    assert upload(agent, device, _ndjson("plain"), compress=False).json()["stored"] == 1


@pytest.mark.django_db
def test_bad_lines_are_skipped_and_named_while_the_good_ones_are_kept(agent):
    device = DeviceFactory()
    response = upload(agent, device, _ndjson("one") + b"garbage\n" + _ndjson("two"))
    assert response.status_code == 200
    body = response.json()
    assert (body["stored"], body["skipped"]) == (2, 1)
    assert body["problems"][0].startswith("line 2: not JSON")
    assert _messages(device) == ["one", "two"]


@pytest.mark.django_db
def test_an_upload_with_nothing_readable_is_a_400_and_writes_nothing(agent):
    device = DeviceFactory()
    assert_error(upload(agent, device, b"not\nlogs\n"), 400, "invalid_logs")
    assert not DeviceLogLine.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "status", "code"),
    [(None, 401, "not_authenticated"), ("wrong", 401, "not_authenticated")],
)
def test_an_upload_without_the_devices_key_is_refused(agent, key, status, code):
    device = DeviceFactory()
    assert_error(upload(agent, device, _ndjson("x"), key=key), status, code)
    assert not DeviceLogLine.objects.exists()


@pytest.mark.django_db
def test_a_device_cannot_write_into_another_devices_log(agent):
    device, other = DeviceFactory(), DeviceFactory()
    assert_error(upload(agent, other, _ndjson("x"), key=device.api_key), 403, "permission_denied")
    assert not DeviceLogLine.objects.exists()


@pytest.mark.django_db
def test_a_deactivated_device_is_refused(agent, superuser):
    from devices.services import device_update

    device = DeviceFactory()
    device_update(uuid=device.uuid, is_active=False, user=superuser)
    assert_error(upload(agent, device, _ndjson("x")), 403, "device_inactive")


@pytest.mark.django_db
def test_other_methods_get_405(agent):
    device = DeviceFactory()
    response = agent.get(logs_url(device.uuid), headers=agent_headers(device.api_key))
    assert_error(response, 405, "method_not_allowed")


@pytest.mark.django_db
@override_settings(SENSORSYNC_DEVICE_LOG_MAX_BYTES=1000)
def test_an_upload_that_inflates_past_the_limit_is_a_413(agent):
    device = DeviceFactory()
    body = assert_error(upload(agent, device, _ndjson("y" * 5000)), 413, "payload_too_large")
    assert "log upload" in body["message"]
    assert not DeviceLogLine.objects.exists()


@pytest.mark.django_db
def test_an_unknown_content_encoding_is_a_415(agent):
    device = DeviceFactory()
    response = upload(agent, device, _ndjson("x"), compress=False, Content_Encoding="br")
    assert_error(response, 415, "unsupported_encoding")


@pytest.mark.django_db
@override_settings(SENSORSYNC_DEVICE_LOG_KEEP=5)
def test_each_device_keeps_its_newest_lines_only(agent):
    device, other = DeviceFactory(), DeviceFactory()
    upload(agent, other, _ndjson("other"))
    for batch in range(3):
        upload(agent, device, _ndjson(*(f"{batch}-{n}" for n in range(3))))
    assert _messages(device) == ["1-1", "1-2", "2-0", "2-1", "2-2"]
    assert _messages(other) == ["other"]  # another device's log is not touched
    # One upload larger than the whole log keeps its newest lines.
    upload(agent, device, _ndjson(*(f"big-{n}" for n in range(8))))
    assert _messages(device) == [f"big-{n}" for n in range(3, 8)]


@pytest.mark.django_db
@override_settings(SENSORSYNC_DEVICE_LOGS=False)
def test_with_device_logs_off_uploads_are_answered_and_dropped(agent):
    device = DeviceFactory()
    response = upload(agent, device, _ndjson("x"))
    assert response.status_code == 200 and response.json()["stored"] == 0
    assert not DeviceLogLine.objects.exists()


@pytest.mark.django_db
@override_settings(SENSORSYNC_DEVICE_LOG_RATE_LIMIT="2/60", SENSORSYNC_AGENT_RATE_LIMIT="600/60")
def test_log_uploads_have_their_own_budget_and_never_cost_a_poll(agent):
    device = DeviceFactory()
    assert [upload(agent, device, _ndjson("x")).status_code for _ in range(2)] == [200, 200]
    limited = upload(agent, device, _ndjson("x"))
    assert_error(limited, 429, "rate_limited")
    assert "log uploads" in limited.json()["message"] and int(limited["Retry-After"]) > 0
    assert agent.get(state_url(device.uuid), headers=agent_headers(device.api_key)).status_code == 200


@pytest.mark.django_db
def test_an_upload_is_three_statements_whatever_its_size(agent):
    """The device (one slim lookup), the lines (one multi-row INSERT), the trim (one DELETE); the transaction's
    savepoint aside."""
    device = DeviceFactory()
    for size in (1, 50):
        with CaptureQueriesContext(connection) as captured:
            assert upload(agent, device, _ndjson(*(f"m{n}" for n in range(size)))).status_code == 200
        statements = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
        assert [sql.split()[0] for sql in statements] == ["SELECT", "INSERT", "DELETE"], statements


@pytest.mark.django_db
def test_dropped_summaries_are_kept_as_a_warning_line(agent):
    device = DeviceFactory()
    summary = {
        "droppedAt": int(time.time() * 1000),
        "timeRange": {"start": int(time.time() * 1000) - 60_000, "end": int(time.time() * 1000)},
        "totalCount": 40,
        "levelCounts": {"error": 1, "warn": 2, "info": 37, "debug": 0},
        "reason": "retry_exhausted",
    }
    body = orjson.dumps({"summaries": [summary], "deviceUuid": str(device.uuid), "reportedAt": 1})
    response = agent.post(
        logs_url(device.uuid) + "/dropped-summaries",
        data=body,
        content_type="application/json",
        headers=agent_headers(device.api_key),
    )
    assert response.status_code == 200, response.content
    (line,) = DeviceLogLine.objects.filter(device_id=device.pk)
    assert line.level == "warn" and line.source == "server"
    assert line.message.startswith("The agent dropped 40 log lines")


@pytest.mark.django_db(transaction=True)
def test_over_real_http_as_the_agent_sends_it(live_server):
    """The agent's own request: POST, gzip, application/x-ndjson, X-Device-API-Key, over a socket."""
    device = DeviceFactory()
    request = urllib.request.Request(
        live_server.url + logs_url(device.uuid),
        data=gzip.compress(_ndjson("over the wire", level="error")),
        method="POST",
        headers={
            "Content-Type": "application/x-ndjson",
            "Content-Encoding": "gzip",
            "X-Device-API-Key": device.api_key,
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        assert orjson.loads(response.read())["stored"] == 1
    assert _messages(device) == ["over the wire"]


@pytest.mark.django_db
def test_an_unknown_device_in_the_url_with_a_valid_key_is_403(agent):
    device = DeviceFactory()
    response = upload(agent, device, _ndjson("x"), path=logs_url(uuid.uuid4()))
    assert_error(response, 403, "permission_denied")
