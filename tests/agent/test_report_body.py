"""The report body: gzip, size caps, media types, and every malformed report refused whole (400, the JSON error
shape naming the problem, nothing written)."""

import gzip
import json

import pytest
from django.conf import settings

from tests.helpers import (
    add_sensor,
    current_state_url,
    device_snapshot,
    report,
    report_entry,
    send_body,
    send_raw,
    sensor_payload,
    target_sensors,
    verdict,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def reported(admin_client, agent, device):
    """A device with one sensor that already reported once (so there is a current state and a row to protect)."""
    add_sensor(admin_client, device, sensor_payload("a"))
    verdict(report(agent, device, 2, target_sensors(device), seq=1), device)
    return device


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


# gzip and size caps ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "GZIP", " gzip "])
def test_a_gzip_report_is_applied(admin_client, agent, device, encoding):
    add_sensor(admin_client, device, sensor_payload("a"))
    body = {str(device.uuid): report_entry(2, target_sensors(device), seq=3)}
    response = send_raw(agent, gzip.compress(json.dumps(body).encode()), key=device.api_key, encoding=encoding)

    answer = verdict(response, device)
    assert answer["outcome"] == "applied"
    assert answer["sensors"]["a"]["status"] == "deployed"
    assert admin_client.get(current_state_url(device.uuid)).json()["seq"] == 3


def test_an_identity_encoded_report_is_applied(agent, device):
    body = {str(device.uuid): report_entry(1, [])}
    response = send_raw(agent, json.dumps(body).encode(), key=device.api_key, encoding="identity")
    assert verdict(response, device)["outcome"] == "applied"


def _padded(device, size: int) -> bytes:
    """A valid report whose JSON text is exactly ``size`` bytes (whitespace padding, still valid JSON)."""
    core = json.dumps(report_entry(1, [], seq=99)).encode()
    head, tail = f'{{"{device.uuid}": '.encode(), b"}"
    padding = size - len(head) - len(core) - len(tail)
    assert padding >= 0
    return head + b" " * padding + core + tail


def test_a_decompression_bomb_is_413_and_writes_nothing(agent, reported):
    before = device_snapshot(reported)
    bomb = gzip.compress(_padded(reported, 20 * 1024 * 1024))
    assert len(bomb) < 100 * 1024  # small on the wire

    response = send_raw(agent, bomb, key=reported.api_key, encoding="gzip")

    _error(response, 413, "payload_too_large")
    assert device_snapshot(reported) == before


def test_the_decompressed_cap_is_exact(agent, reported):
    limit = settings.SENSORSYNC_MAX_REPORT_BYTES
    before = device_snapshot(reported)
    over = send_raw(agent, gzip.compress(_padded(reported, limit + 1)), key=reported.api_key, encoding="gzip")
    _error(over, 413, "payload_too_large")
    assert device_snapshot(reported) == before

    at = send_raw(agent, gzip.compress(_padded(reported, limit)), key=reported.api_key, encoding="gzip")
    assert verdict(at, reported)["outcome"] == "applied"


def test_an_uncompressed_body_over_the_cap_is_413_and_writes_nothing(agent, reported):
    before = device_snapshot(reported)
    response = send_raw(agent, _padded(reported, settings.SENSORSYNC_MAX_REPORT_BYTES + 1), key=reported.api_key)
    _error(response, 413, "payload_too_large")
    assert device_snapshot(reported) == before


@pytest.mark.parametrize("encoding", ["br", "deflate", "compress", "gzip, br"])
def test_an_unsupported_content_encoding_is_415_and_writes_nothing(agent, reported, encoding):
    before = device_snapshot(reported)
    raw = json.dumps({str(reported.uuid): report_entry(2, [], seq=5)}).encode()
    body = _error(send_raw(agent, raw, key=reported.api_key, encoding=encoding), 415, "unsupported_encoding")
    assert "gzip" in body["message"]
    assert device_snapshot(reported) == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "application/x-www-form-urlencoded"])
def test_a_wrong_content_type_is_415_and_writes_nothing(agent, reported, content_type):
    before = device_snapshot(reported)
    raw = json.dumps({str(reported.uuid): report_entry(2, [], seq=5)}).encode()
    body = _error(send_raw(agent, raw, key=reported.api_key, content_type=content_type), 415, "unsupported_media_type")
    assert content_type in body["message"]
    assert device_snapshot(reported) == before


def test_json_with_a_charset_parameter_is_accepted(agent, device):
    raw = json.dumps({str(device.uuid): report_entry(1, [])}).encode()
    response = send_raw(agent, raw, key=device.api_key, content_type="application/json; charset=utf-8")
    assert verdict(response, device)["outcome"] == "applied"


@pytest.mark.parametrize(
    "raw",
    [b"plainly not gzip", b"\x1f\x8b\x08\x00garbage-after-magic"],
    ids=["not-gzip", "corrupt"],
)
def test_a_body_that_is_not_gzip_though_declared_is_400_and_writes_nothing(agent, reported, raw):
    before = device_snapshot(reported)
    _error(send_raw(agent, raw, key=reported.api_key, encoding="gzip"), 400, "malformed_request")
    assert device_snapshot(reported) == before


def test_a_truncated_gzip_body_is_400_and_writes_nothing(agent, reported):
    before = device_snapshot(reported)
    whole = gzip.compress(json.dumps({str(reported.uuid): report_entry(2, [], seq=5)}).encode())
    _error(send_raw(agent, whole[: len(whole) // 2], key=reported.api_key, encoding="gzip"), 400, "malformed_request")
    assert device_snapshot(reported) == before


# 400: malformed bodies ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"a": 1,}', b"\xff\xfe{}", b"{'single': 'quotes'}", b"NaN"],
    ids=["empty", "unterminated", "trailing-comma", "not-utf8", "single-quotes", "nan"],
)
def test_malformed_json_is_400_and_writes_nothing(agent, reported, raw):
    before = device_snapshot(reported)
    body = _error(send_raw(agent, raw, key=reported.api_key), 400, "malformed_json")
    assert "json" in body["message"].lower()
    assert device_snapshot(reported) == before


@pytest.mark.parametrize("body", [[], [{"version": 1}], "state", 42, None, True, {}], ids=repr)
def test_a_body_that_is_not_an_object_keyed_by_uuid_is_400_and_writes_nothing(agent, reported, body):
    before = device_snapshot(reported)
    answer = _error(send_body(agent, body, key=reported.api_key), 400, "validation_error")
    assert "uuid" in answer["message"].lower()
    assert device_snapshot(reported) == before


@pytest.mark.parametrize("key", ["not-a-uuid", "", "12345"])
def test_a_key_that_is_not_a_uuid_is_400_naming_it_and_writes_nothing(agent, reported, key):
    before = device_snapshot(reported)
    answer = _error(send_body(agent, {key: report_entry(2, [])}, key=reported.api_key), 400, "validation_error")
    assert key in answer["fields"]
    assert f"'{key}'" in answer["message"]
    assert device_snapshot(reported) == before


def _sensor_at(device, **changes) -> list[dict]:
    running = target_sensors(device)
    running[0].update(changes)
    return running


def _without(sensor: dict, key: str) -> dict:
    return {name: value for name, value in sensor.items() if name != key}


# (case id, how to break the report, the field the answer must name)
INVALID_REPORTS = [
    ("report-not-object", lambda d: [], "report"),
    ("report-string", lambda d: "x", "report"),
    ("version-negative", lambda d: report_entry(-1, []), "version"),
    ("version-float", lambda d: report_entry(1.5, []), "version"),
    ("version-integral-float", lambda d: report_entry(2.0, []), "version"),
    ("version-string", lambda d: report_entry("3", []), "version"),
    ("version-true", lambda d: report_entry(True, []), "version"),
    ("version-huge", lambda d: report_entry(2**31, []), "version"),
    ("config-list", lambda d: report_entry(2, []) | {"config": []}, "config"),
    ("config-string", lambda d: report_entry(2, []) | {"config": "{}"}, "config"),
    (
        "adapters-object",
        lambda d: report_entry(2, []) | {"config": {"sensors": {}}},
        "config.sensors",
    ),
    (
        "duplicate-names",
        lambda d: report_entry(2, [*target_sensors(d), *target_sensors(d)]),
        "config.sensors[1].name",
    ),
    ("sensor-not-object", lambda d: report_entry(2, ["a"]), "config.sensors[0]"),
    (
        "sensor-no-name",
        lambda d: report_entry(2, [{k: v for k, v in target_sensors(d)[0].items() if k != "name"}]),
        "config.sensors[0].name",
    ),
    ("sensor-empty-name", lambda d: report_entry(2, _sensor_at(d, name="")), "config.sensors[0].name"),
    (
        "poll-interval-string",
        lambda d: report_entry(2, _sensor_at(d, pollInterval="5000")),
        "config.sensors[0].pollInterval",
    ),
    (
        "poll-interval-negative",
        lambda d: report_entry(2, _sensor_at(d, pollInterval=-5)),
        "config.sensors[0].pollInterval",
    ),
    (
        "protocol-unknown",
        lambda d: report_entry(2, _sensor_at(d, protocol="zigbee")),
        "config.sensors[0].protocol",
    ),
    (
        "enabled-string",
        lambda d: report_entry(2, _sensor_at(d, enabled="yes")),
        "config.sensors[0].enabled",
    ),
    (
        "connection-list",
        lambda d: report_entry(2, _sensor_at(d, connection=[])),
        "config.sensors[0].connection",
    ),
    (
        "data-points-object",
        lambda d: report_entry(2, _sensor_at(d, dataPoints={})),
        "config.sensors[0].dataPoints",
    ),
    ("apps-list", lambda d: report_entry(2, []) | {"apps": []}, "apps"),
    ("health-list", lambda d: report_entry(2, [], health=[]), "sensor_health"),  # type: ignore[arg-type]
    ("health-string", lambda d: report_entry(2, []) | {"sensor_health": "ok"}, "sensor_health"),
    ("health-entry-string", lambda d: report_entry(2, [], health={"a": "down"}), "sensor_health"),
    ("local-ip-hostname", lambda d: report_entry(2, [], local_ip="gateway.local"), "local_ip"),
    ("local-ip-octets", lambda d: report_entry(2, [], local_ip="10.0.0.256"), "local_ip"),
    ("local-ip-number", lambda d: report_entry(2, [], local_ip=167772161), "local_ip"),
    ("uptime-negative", lambda d: report_entry(2, [], uptime=-1), "uptime"),
    ("uptime-string", lambda d: report_entry(2, [], uptime="1h"), "uptime"),
    ("os-version-number", lambda d: report_entry(2, [], os_version=12), "os_version"),
    ("enabled-two", lambda d: report_entry(2, _sensor_at(d, enabled=2)), "config.sensors[0].enabled"),
    (
        "connection-string-not-json",
        lambda d: report_entry(2, [_without(target_sensors(d)[0], "connection") | {"connectionString": "host=x"}]),
        "config.sensors[0].connectionString",
    ),
    (
        "connection-string-a-list",
        lambda d: report_entry(2, [_without(target_sensors(d)[0], "connection") | {"connectionString": "[1]"}]),
        "config.sensors[0].connectionString",
    ),
    ("uptime-bool", lambda d: report_entry(2, [], uptime=True), "uptime"),
    ("cpu-usage-string", lambda d: report_entry(2, [], cpu_usage="52%"), "cpu_usage"),
    ("memory-negative", lambda d: report_entry(2, [], memory_usage=-1), "memory_usage"),
    ("temperature-below-absolute-zero", lambda d: report_entry(2, [], temperature=-300), "temperature"),
    ("is-online-string", lambda d: report_entry(2, [], is_online="yes"), "is_online"),
    ("processes-object", lambda d: report_entry(2, [], top_processes={}), "top_processes"),
    ("processes-too-many", lambda d: report_entry(2, [], top_processes=[{}] * 101), "top_processes"),
    ("process-pid-string", lambda d: report_entry(2, [], top_processes=[{"pid": "1"}]), "top_processes[0].pid"),
    (
        "interface-default-string",
        lambda d: report_entry(2, [], network_interfaces=[{"default": "y"}]),
        "network_interfaces[0].default",
    ),
    ("endpoints-health-list", lambda d: report_entry(2, []) | {"endpoints_health": []}, "endpoints_health"),
    (
        "endpoints-health-entry-string",
        lambda d: report_entry(2, []) | {"endpoints_health": {"a": "up"}},
        "endpoints_health.a",
    ),
    (
        "endpoints-health-connected-string",
        lambda d: report_entry(2, []) | {"endpoints_health": {"a": {"connected": "yes"}}},
        "endpoints_health.a.connected",
    ),
    (
        "endpoints-health-error-count-negative",
        lambda d: report_entry(2, []) | {"endpoints_health": {"a": {"errorCount": -1}}},
        "endpoints_health.a.errorCount",
    ),
    (
        "endpoints-health-last-seen-garbage",
        lambda d: report_entry(2, []) | {"endpoints_health": {"a": {"lastSeen": "yesterday"}}},
        "endpoints_health.a.lastSeen",
    ),
    (
        "adapters-health-not-lists",
        lambda d: report_entry(2, []) | {"protocol_adapters_health": {"modbus": {}}},
        "protocol_adapters_health",
    ),
    (
        "adapters-health-no-name",
        lambda d: report_entry(2, []) | {"protocol_adapters_health": {"modbus": [{}]}},
        "protocol_adapters_health.modbus[0].deviceName",
    ),
    ("agent-version-too-long", lambda d: report_entry(2, [], agent_version="v" * 256), "agent_version"),
    ("seq-negative", lambda d: report_entry(2, [], seq=-1), "seq"),
    ("seq-string", lambda d: report_entry(2, [], seq="7"), "seq"),
    ("reported-at-naive", lambda d: report_entry(2, [], reported_at="2025-11-02T10:00:00"), "reported_at"),
    ("reported-at-garbage", lambda d: report_entry(2, [], reported_at="yesterday"), "reported_at"),
]


@pytest.mark.parametrize(("make", "field"), [case[1:] for case in INVALID_REPORTS], ids=[c[0] for c in INVALID_REPORTS])
def test_an_invalid_report_is_400_naming_the_field_and_writes_nothing(agent, reported, make, field):
    before = device_snapshot(reported)

    response = send_body(agent, {str(reported.uuid): make(reported)}, key=reported.api_key)

    answer = _error(response, 400, "validation_error")
    assert field in answer["fields"], answer
    assert answer["fields"][field] and all(isinstance(m, str) and m for m in answer["fields"][field])
    assert field in answer["message"], answer["message"]
    assert device_snapshot(reported) == before


def test_every_problem_of_an_invalid_report_is_named(agent, reported):
    # Several problems at once are all named, so the agent's developer fixes them in one go.
    entry = report_entry(-1, [], uptime=-1, local_ip="nope")
    answer = _error(send_body(agent, {str(reported.uuid): entry}, key=reported.api_key), 400, "validation_error")
    assert {"version", "uptime", "local_ip"} <= set(answer["fields"])


def test_unknown_top_level_report_keys_and_extra_sensor_fields_are_tolerated(admin_client, agent, device):
    # Reality is not refused for fields the server does not store (the agent may be newer than the server).
    add_sensor(admin_client, device, sensor_payload("a"))
    running = _sensor_at(device, vendorExtension={"x": 1})
    answer = verdict(report(agent, device, 2, running, kernel="6.1"), device)
    assert answer["outcome"] == "applied"
    assert answer["sensors"]["a"]["status"] == "deployed"


def test_a_multi_member_gzip_body_is_decompressed_whole(agent, device):
    # RFC 1952: a gzip stream is a series of members; streaming compressors flush one member per chunk.
    raw = json.dumps({str(device.uuid): report_entry(1, [], seq=8)}).encode()
    half = len(raw) // 2
    body = gzip.compress(raw[:half]) + gzip.compress(raw[half:])
    assert gzip.decompress(body) == raw

    response = send_raw(agent, body, key=device.api_key, encoding="gzip")

    assert verdict(response, device)["outcome"] == "applied"


@pytest.mark.parametrize("value", ["2026-11-26T10:60:00Z", "2026-02-30T10:00:00Z", "2026-11-26T10:00:00", 17])
def test_an_impossible_or_zoneless_reported_at_is_400_naming_it(agent, device, value):
    response = report(agent, device, 1, [], reported_at=value)

    assert response.status_code == 400, response.content
    assert "reported_at" in response.json()["fields"]
