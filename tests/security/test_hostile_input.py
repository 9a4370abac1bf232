"""Hostile input on the agent report and the management API: oversized bodies, decompression bombs, deep nesting,
huge sensor lists, bytes that are not UTF-8, wrong media types, duplicate keys, floats for integers, NaN and
Infinity, integers past every column, uuids that are not uuids, control characters and lone surrogates.

Each must be a clear 4xx in the error shape ``{"error", "message"}``, answered in bounded time, and write nothing
(devices, target versions and history, current states, rows, events, drift episodes compared before and after).
"""

import gzip
import json
import time

import pytest
from django.test import Client

from devices.models import Device, DeviceCurrentState
from reconciliation.agent_protocol import report_parse
from reconciliation.services.reports import state_report_apply
from sensors.models import DeviceSensor
from tests.factories import UserFactory
from tests.helpers import (
    API,
    REPORT_URL,
    agent_headers,
    assert_error_shape,
    device_with,
    read_model_and_log_consistent,
    sensor_payload,
    server_errors,
    snapshot_diff,
    staff_headers,
    state_url,
    target_sensors,
    target_state_url,
    token_for,
    world_snapshot,
)

pytestmark = pytest.mark.django_db

MB = 1024 * 1024
HUGE = 2**70  # past every integer column (and past 64 bits)
FAST = 10.0  # seconds: every refusal below must come at least this fast


class Victim:
    """A device with two sensors that reported once (current state, rows and events to protect), and staff."""

    def __init__(self):
        self.device = device_with("s-1", "s-2", name="victim")
        fresh = Device.objects.select_related("target_state").get(pk=self.device.pk)
        state_report_apply(
            device=fresh,
            report=report_parse({"version": 3, "config": {"sensors": target_sensors(self.device)}}),
        )
        self.uuid = str(self.device.uuid)
        self.key = self.device.api_key
        self.staff = staff_headers(token_for(UserFactory(is_superuser=True)))


@pytest.fixture
def victim() -> Victim:
    return Victim()


def _send(method: str, url: str, raw: bytes, content_type: str, headers: dict):
    """The response and its duration; ``response.causes`` lists what the server logged as errors meanwhile."""
    client = Client(raise_request_exception=False)
    started = time.monotonic()
    with server_errors() as causes:
        response = client.generic(method, url, data=raw, content_type=content_type, headers=headers)
    response.causes = causes
    return response, time.monotonic() - started


def _report(victim: Victim, entry_json: str) -> bytes:
    """A report body for the victim with ``entry_json`` as its (raw, possibly malformed) report entry."""
    return f'{{"{victim.uuid}": {entry_json}}}'.encode()


def _good_entry(**extra) -> dict:
    entry = {"version": 3, "config": {"sensors": []}, "seq": 10}
    entry.update(extra)
    return entry


def _j(value) -> str:
    return json.dumps(value)


def _deep(levels: int, opener: str = "[", closer: str = "]") -> str:
    return opener * levels + closer * levels


def _deep_object(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


# Agent report cases: (id, body builder, content type, extra headers, statuses allowed)
AGENT_CASES = [
    ("oversized-identity", lambda v: _report(v, _j(_good_entry(apps={"blob": "x" * (MB + 10)}))), None, {}, {413}),
    (
        "gzip-bomb-100MB",
        lambda v: gzip.compress(b"[" + b" " * (100 * MB) + b"]", compresslevel=1),
        None,
        {"Content-Encoding": "gzip"},
        {413},
    ),
    (
        "gzip-many-members",
        lambda v: b"".join(gzip.compress(b" " * (200 * 1024)) for _ in range(8)) + gzip.compress(b"{}"),
        None,
        {"Content-Encoding": "gzip"},
        {413},
    ),
    (
        "gzip-truncated",
        lambda v: gzip.compress(_report(v, _j(_good_entry())))[:-12],
        None,
        {"Content-Encoding": "gzip"},
        {400},
    ),
    ("gzip-garbage", lambda v: b"\x1f\x8b\x08\x00garbage", None, {"Content-Encoding": "gzip"}, {400}),
    ("encoding-br", lambda v: _report(v, _j(_good_entry())), None, {"Content-Encoding": "br"}, {415}),
    ("nested-10000-arrays", lambda v: _deep(10_000).encode(), None, {}, {400}),
    ("nested-10000-objects", lambda v: _deep_object(10_000).encode(), None, {}, {400}),
    (
        "nested-10000-in-apps",
        lambda v: _report(v, f'{{"version": 3, "apps": {_deep_object(10_000)}}}'),
        None,
        {},
        {400},
    ),
    (
        "not-utf8",
        lambda v: _report(v, '{"version": 3, "os_version": "XX"}').replace(b"XX", b"\xff\xfe"),
        None,
        {},
        {400},
    ),
    ("utf16-bom", lambda v: _report(v, _j(_good_entry())).decode().encode("utf-16"), None, {}, {400}),
    ("text-plain", lambda v: _report(v, _j(_good_entry())), "text/plain", {}, {415}),
    ("form-urlencoded", lambda v: b"version=3&seq=10", "application/x-www-form-urlencoded", {}, {415}),
    ("multipart", lambda v: b"--x\r\n\r\n{}\r\n--x--", "multipart/form-data; boundary=x", {}, {415}),
    ("duplicate-version", lambda v: _report(v, '{"version": 1, "version": 2, "seq": 10}'), None, {}, {400}),
    (
        "duplicate-device-key",
        lambda v: f'{{"{v.uuid}": {{"version": 3}}, "{v.uuid}": {{"version": 4}}}}'.encode(),
        None,
        {},
        {400},
    ),
    (
        "duplicate-key-in-sensor",
        lambda v: _report(
            v,
            '{"version": 3, "config": {"sensors": [{"name": "s-1", "name": "s-2", "protocol": "can"}]}}',
        ),
        None,
        {},
        {400},
    ),
    ("float-version", lambda v: _report(v, '{"version": 3.0}'), None, {}, {400}),
    ("float-seq", lambda v: _report(v, '{"version": 3, "seq": 11.5}'), None, {}, {400}),
    (
        "float-poll-interval",
        lambda v: _report(
            v,
            _j(_good_entry(config={"sensors": [{"name": "x", "protocol": "can", "pollInterval": 5000.0}]})),
        ),
        None,
        {},
        {400},
    ),
    ("nan-version", lambda v: _report(v, '{"version": NaN}'), None, {}, {400}),
    ("infinity-uptime", lambda v: _report(v, '{"version": 3, "uptime": Infinity}'), None, {}, {400}),
    ("minus-infinity-seq", lambda v: _report(v, '{"version": 3, "seq": -Infinity}'), None, {}, {400}),
    ("nan-in-apps", lambda v: _report(v, '{"version": 3, "apps": {"x": NaN}}'), None, {}, {400}),
    ("huge-version", lambda v: _report(v, f'{{"version": {HUGE}}}'), None, {}, {400}),
    ("huge-seq", lambda v: _report(v, f'{{"version": 3, "seq": {HUGE}}}'), None, {}, {400}),
    ("huge-uptime", lambda v: _report(v, f'{{"version": 3, "uptime": {HUGE}}}'), None, {}, {400}),
    (
        "huge-poll-interval",
        lambda v: _report(
            v,
            _j(_good_entry(config={"sensors": [{"name": "x", "protocol": "can", "pollInterval": 2**70}]})),
        ),
        None,
        {},
        {400},
    ),
    ("negative-version", lambda v: _report(v, '{"version": -1}'), None, {}, {400}),
    ("body-key-not-a-uuid", lambda v: b'{"not-a-uuid": {"version": 3}}', None, {}, {400}),
    ("body-key-unknown-uuid", lambda v: b'{"00000000-0000-4000-8000-000000000000": {"version": 3}}', None, {}, {403}),
    (
        "reported-at-impossible-minute",
        lambda v: _report(v, '{"version": 3, "reported_at": "2024-01-01T12:99:00Z"}'),
        None,
        {},
        {400},
    ),
    (
        "reported-at-month-13",
        lambda v: _report(v, '{"version": 3, "reported_at": "2024-13-01T12:00:00Z"}'),
        None,
        {},
        {400},
    ),
    ("nul-in-os-version", lambda v: _report(v, _j(_good_entry(os_version="a\x00b"))), None, {}, {400}),
    (
        "nul-in-sensor-name",
        lambda v: _report(v, _j(_good_entry(config={"sensors": [{"name": "a\x00b", "protocol": "can"}]}))),
        None,
        {},
        {400},
    ),
    (
        "bell-in-sensor-name",
        lambda v: _report(v, _j(_good_entry(config={"sensors": [{"name": "a\x07b", "protocol": "can"}]}))),
        None,
        {},
        {400},
    ),
    (
        "newline-in-sensor-name",
        lambda v: _report(v, _j(_good_entry(config={"sensors": [{"name": "a\nb", "protocol": "can"}]}))),
        None,
        {},
        {400},
    ),
    (
        "nul-in-connection",
        lambda v: _report(
            v,
            _j(_good_entry(config={"sensors": [{"name": "x", "protocol": "can", "connection": {"h": "\x00"}}]})),
        ),
        None,
        {},
        {400},
    ),
    ("nul-in-apps", lambda v: _report(v, _j(_good_entry(apps={"k": "\x00"}))), None, {}, {400}),
    (
        "nul-in-health-key",
        lambda v: _report(v, _j(_good_entry(sensor_health={"a\x00": {"healthy": False}}))),
        None,
        {},
        {400},
    ),
    ("lone-surrogate-os-version", lambda v: _report(v, '{"version": 3, "os_version": "\\ud800"}'), None, {}, {400}),
    ("lone-surrogate-apps", lambda v: _report(v, '{"version": 3, "apps": {"k": "\\udfff"}}'), None, {}, {400}),
    ("lone-surrogate-unknown-field", lambda v: _report(v, '{"version": 3, "extra": "\\ud800"}'), None, {}, {400}),
]


@pytest.mark.parametrize(
    ("build", "content_type", "headers", "statuses"),
    [pytest.param(*case[1:], id=case[0]) for case in AGENT_CASES],
)
def test_hostile_agent_report_is_a_clear_4xx_and_writes_nothing(victim, build, content_type, headers, statuses):
    raw = build(victim)
    before = world_snapshot()

    response, elapsed = _send(
        "PATCH", REPORT_URL, raw, content_type or "application/json", {**agent_headers(victim.key), **headers}
    )

    assert elapsed < FAST, f"took {elapsed:.1f} s"
    assert_error_shape(response, statuses, response.causes)
    after = world_snapshot()
    assert after == before, f"a refused report wrote: {snapshot_diff(before, after)}"


# Management cases: (id, method, path under the device, raw body builder, content type, headers, statuses)
SENSOR = sensor_payload("new-1")


def _sensor_with(**overrides) -> bytes:
    return json.dumps({**SENSOR, **overrides}).encode()


MANAGEMENT_CASES = [
    ("oversized-sensor", "POST", "sensors", lambda: _sensor_with(metadata={"blob": "x" * (3 * MB)}), None, {}, {413}),
    (
        "oversized-target",
        "PUT",
        "target-state",
        lambda: json.dumps({"config": {"sensors": []}, "apps": {"blob": "x" * (3 * MB)}}).encode(),
        None,
        {},
        {413},
    ),
    (
        "gzip-body",
        "POST",
        "sensors",
        lambda: gzip.compress(_sensor_with()),
        None,
        {"Content-Encoding": "gzip"},
        {400, 415},
    ),
    (
        "gzip-bomb",
        "PUT",
        "target-state",
        lambda: gzip.compress(b" " * (50 * MB), 1),
        None,
        {"Content-Encoding": "gzip"},
        {400, 413, 415},
    ),
    (
        "nested-10000",
        "PUT",
        "target-state",
        lambda: f'{{"config": {_deep_object(10_000)}}}'.encode(),
        None,
        {},
        {400},
    ),
    ("nested-10000-arrays", "POST", "sensors", lambda: _deep(10_000).encode(), None, {}, {400}),
    ("not-utf8", "POST", "sensors", lambda: _sensor_with(name="n").replace(b'"n"', b'"\xff\xfe"'), None, {}, {400}),
    ("text-plain", "POST", "sensors", _sensor_with, "text/plain", {}, {415}),
    (
        "form-urlencoded",
        "POST",
        "sensors",
        lambda: b"name=x&protocol=can",
        "application/x-www-form-urlencoded",
        {},
        {415},
    ),
    (
        "form-urlencoded-patch",
        "PATCH",
        "sensors/s-1",
        lambda: b"pollInterval=200",
        "application/x-www-form-urlencoded",
        {},
        {415},
    ),
    (
        "multipart",
        "PUT",
        "target-state",
        lambda: b"--x\r\n\r\n{}\r\n--x--",
        "multipart/form-data; boundary=x",
        {},
        {415},
    ),
    ("duplicate-key", "PATCH", "sensors/s-1", lambda: b'{"pollInterval": 200, "pollInterval": 300}', None, {}, {400}),
    (
        "duplicate-key-rollback",
        "POST",
        "target-state/rollback",
        lambda: b'{"version": 1, "version": 2}',
        None,
        {},
        {400},
    ),
    ("float-poll-interval", "PATCH", "sensors/s-1", lambda: b'{"pollInterval": 5000.0}', None, {}, {400}),
    ("float-rollback-version", "POST", "target-state/rollback", lambda: b'{"version": 1.0}', None, {}, {400}),
    ("nan", "PATCH", "sensors/s-1", lambda: b'{"pollInterval": NaN}', None, {}, {400}),
    ("infinity-in-metadata", "PATCH", "sensors/s-1", lambda: b'{"metadata": {"x": Infinity}}', None, {}, {400}),
    ("huge-poll-interval", "PATCH", "sensors/s-1", lambda: b'{"pollInterval": %d}' % 2**70, None, {}, {400}),
    ("huge-rollback-version", "POST", "target-state/rollback", lambda: b'{"version": %d}' % 2**70, None, {}, {400}),
    (
        "sensor-id-not-a-uuid",
        "PUT",
        "target-state",
        lambda: json.dumps({"config": {"sensors": [{**SENSOR, "id": "nope"}]}}).encode(),
        None,
        {},
        {400},
    ),
    ("nul-in-sensor-name", "POST", "sensors", lambda: _sensor_with(name="a\x00b"), None, {}, {400}),
    ("tab-in-sensor-name", "POST", "sensors", lambda: _sensor_with(name="a\tb"), None, {}, {400}),
    (
        "nul-in-connection",
        "PATCH",
        "sensors/s-1",
        lambda: json.dumps({"connection": {"host": "\x00"}}).encode(),
        None,
        {},
        {400},
    ),
    (
        "nul-in-apps",
        "PUT",
        "target-state",
        lambda: json.dumps({"config": {"sensors": []}, "apps": {"k": "\x00"}}).encode(),
        None,
        {},
        {400},
    ),
    (
        "nul-in-metadata-key",
        "PATCH",
        "sensors/s-1",
        lambda: json.dumps({"metadata": {"\x00": 1}}).encode(),
        None,
        {},
        {400},
    ),
    ("lone-surrogate-metadata", "PATCH", "sensors/s-1", lambda: b'{"metadata": {"k": "\\ud800"}}', None, {}, {400}),
    ("lone-surrogate-name", "PATCH", "sensors/s-1", lambda: b'{"name": "\\udc00"}', None, {}, {400}),
]

DEVICE_CASES = [
    ("device-name-nul", "POST", "", lambda: b'{"name": "a\\u0000b"}', None, {}, {400}),
    ("device-name-bell", "POST", "", lambda: b'{"name": "a\\u0007b"}', None, {}, {400}),
    ("device-name-escape-sequence", "POST", "", lambda: b'{"name": "\\u001b[31mred"}', None, {}, {400}),
    ("device-name-lone-surrogate", "POST", "", lambda: b'{"name": "\\ud800"}', None, {}, {400}),
    ("device-description-nul", "PATCH", "{uuid}", lambda: b'{"description": "a\\u0000"}', None, {}, {400}),
    ("device-rename-newline", "PATCH", "{uuid}", lambda: b'{"name": "a\\nb"}', None, {}, {400}),
    ("device-duplicate-key", "PATCH", "{uuid}", lambda: b'{"isActive": true, "isActive": false}', None, {}, {400}),
    (
        "device-oversized",
        "POST",
        "",
        lambda: json.dumps({"name": "n", "description": "d" * (3 * MB)}).encode(),
        None,
        {},
        {413},
    ),
    ("device-text-plain", "POST", "", lambda: b'{"name": "n"}', "text/plain", {}, {415}),
]


@pytest.mark.parametrize(
    ("method", "path", "build", "content_type", "headers", "statuses"),
    [pytest.param(*case[1:], id=case[0]) for case in MANAGEMENT_CASES],
)
def test_hostile_management_write_is_a_clear_4xx_and_writes_nothing(
    victim, method, path, build, content_type, headers, statuses
):
    raw = build()
    before = world_snapshot()

    response, elapsed = _send(
        method,
        f"{API}/devices/{victim.uuid}/{path}",
        raw,
        content_type or "application/json",
        {**victim.staff, "If-Match": '"3"', **headers},
    )

    assert elapsed < FAST, f"took {elapsed:.1f} s"
    assert_error_shape(response, statuses, response.causes)
    after = world_snapshot()
    assert after == before, f"a refused write wrote: {snapshot_diff(before, after)}"


@pytest.mark.parametrize(
    ("method", "path", "build", "content_type", "headers", "statuses"),
    [pytest.param(*case[1:], id=case[0]) for case in DEVICE_CASES],
)
def test_hostile_device_write_is_a_clear_4xx_and_writes_nothing(
    victim, method, path, build, content_type, headers, statuses
):
    raw = build()
    before = world_snapshot()

    response, elapsed = _send(
        method, f"{API}/devices/{path.format(uuid=victim.uuid)}", raw, content_type or "application/json", victim.staff
    )

    assert elapsed < FAST, f"took {elapsed:.1f} s"
    assert_error_shape(response, statuses, response.causes)
    after = world_snapshot()
    assert after == before, f"a refused write wrote: {snapshot_diff(before, after)}"


QUERY_CASES = [
    ("sensors?device=not-a-uuid", {400}),
    (f"sensors?limit={HUGE}", {200, 400}),
    (f"devices?offset={HUGE}", {200, 400}),
    (f"devices?limit={2**63}&offset={2**63}", {200, 400}),
    (f"devices/{{uuid}}/sensors?offset={2**64}", {200, 400}),
    (f"devices/{{uuid}}/target-state/versions?offset={HUGE}", {200, 400}),
    (f"drift-episodes?offset={HUGE}", {200, 400}),
    ("events?correlationId=not-a-uuid", {400}),
    ("events?cursor=%ff%fe", {400, 404}),
    ("events?since=2024-01-01T00:00:00%2B17:37", {200, 400}),
    ("events?until=0001-01-01T00:00:00%2B14:00", {200, 400}),
    ("drift-episodes?since=2024-01-01T00:00:00%2B17:00", {200, 400}),
    ("drift-episodes/stats?since=2024-01-01T00:00:00%2B17:00", {200, 400}),
    ("drift-episodes/stats?since=9999-12-31T23:59:59-23:00", {200, 400}),
    ("devices?name=%00", {200, 400}),
    ("sensors?enabled=maybe", {400}),
]


@pytest.mark.parametrize(("query", "statuses"), [pytest.param(q, s, id=q) for q, s in QUERY_CASES])
def test_hostile_query_parameters_are_answered_without_a_server_error(victim, query, statuses):
    before = world_snapshot()
    client = Client(raise_request_exception=False)

    with server_errors() as causes:
        response = client.get(f"{API}/{query.format(uuid=victim.uuid)}", headers=victim.staff)

    if response.status_code != 200:
        assert_error_shape(response, statuses, causes)
    assert response.status_code in statuses, (response.status_code, response.content[:300])
    assert world_snapshot() == before


# ----------------------------------------------------------------------------------------------------------------
# Size: huge sensor lists are refused clearly or handled correctly, in bounded time
# ----------------------------------------------------------------------------------------------------------------


def _compact_sensors(count: int) -> list[dict]:
    return [{"name": f"s{i}", "protocol": "can"} for i in range(count)]


@pytest.mark.parametrize("compressed", [False, True], ids=["identity", "gzip"])
def test_a_report_of_50000_sensors_is_refused_clearly_and_quickly(victim, compressed):
    raw = _report(victim, _j(_good_entry(config={"sensors": _compact_sensors(50_000)})))
    headers = {**agent_headers(victim.key)}
    if compressed:
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    before = world_snapshot()

    response, elapsed = _send("PATCH", REPORT_URL, raw, "application/json", headers)

    assert elapsed < FAST, f"took {elapsed:.1f} s"
    assert_error_shape(response, {413}, response.causes)
    assert world_snapshot() == before


def test_a_report_of_more_sensors_than_a_device_may_have_is_refused_before_any_work(victim, settings):
    """~5,000 compact sensors fit in the size cap; reconciling them (and appending their events) would stall the
    device's lock for seconds, slowing every other device's requests. The limit refuses them up front."""
    sensors = _compact_sensors(5000)
    raw = _report(victim, _j(_good_entry(config={"sensors": sensors})))
    assert len(raw) < 1024 * 1024
    before = world_snapshot()

    response, _ = _send("PATCH", REPORT_URL, raw, "application/json", agent_headers(victim.key))

    assert response.status_code == 400, (response.status_code, response.content[:300])
    assert response.json()["fields"] == {
        "config.sensors": [
            f"At most {settings.SENSORSYNC_MAX_SENSORS_PER_DEVICE} "
            "sensors per device (SENSORSYNC_MAX_SENSORS_PER_DEVICE)."
        ]
    }
    assert world_snapshot() == before


def test_a_report_of_as_many_sensors_as_a_device_may_have_is_applied_correctly_in_bounded_time(victim, settings):
    limit = settings.SENSORSYNC_MAX_SENSORS_PER_DEVICE
    sensors = _compact_sensors(limit - 2)  # plus the two desired ones, not running
    raw = _report(victim, _j(_good_entry(config={"sensors": sensors})))

    response, elapsed = _send("PATCH", REPORT_URL, raw, "application/json", agent_headers(victim.key))

    assert elapsed < 60, f"took {elapsed:.1f} s"
    assert response.status_code == 200, (response.status_code, response.content[:300])
    verdict = response.json()[victim.uuid]
    assert verdict["outcome"] == "applied"
    assert len(verdict["sensors"]) == limit
    assert DeviceSensor.objects.filter(device=victim.device).count() == limit
    assert DeviceCurrentState.objects.get(device=victim.device).seq == 10
    assert read_model_and_log_consistent() == []


def test_a_target_of_10000_sensors_is_refused_clearly_or_applied_correctly_in_bounded_time(victim):
    """(Bodies past any sane size are covered above: they must be a 413. This one is under 2 MB.)"""
    sensors = [sensor_payload(f"s{i}", dataPoints=[], connection={}) for i in range(10_000)]
    raw = json.dumps({"config": {"sensors": sensors}}).encode()
    before = world_snapshot()

    response, elapsed = _send("PUT", target_state_url(victim.uuid), raw, "application/json", victim.staff)

    assert elapsed < 30, f"took {elapsed:.1f} s"
    if response.status_code == 200:
        assert DeviceSensor.objects.filter(device=victim.device).count() >= 10_000
        assert read_model_and_log_consistent() == []
    else:
        assert_error_shape(response, {400, 413}, response.causes)
        assert world_snapshot() == before


# ----------------------------------------------------------------------------------------------------------------
# Free-form JSON (apps, metadata) the write paths accept must survive every later step: the agent's poll, the
# report's digest, the verdict. Refusing it (400) is as good; a 500 later is not.
# ----------------------------------------------------------------------------------------------------------------

FREE_FORM = {
    "int-2**70": lambda: {"n": 2**70},
    "int-minus-2**64": lambda: {"n": -(2**64)},
    "nested-300": lambda: json.loads(_deep_object(300)),
    "nested-900": lambda: json.loads(_deep_object(900)),
}


@pytest.mark.parametrize("where", ["apps", "metadata"])
@pytest.mark.parametrize("value", list(FREE_FORM))
def test_free_form_json_staff_may_store_is_refused_or_reaches_the_agent(victim, value, where):
    stored = FREE_FORM[value]()
    sensors = target_sensors(victim.device)
    body = {"config": {"sensors": sensors}}
    if where == "apps":
        body["apps"] = stored
    else:
        sensors[0]["metadata"] = stored
    before = world_snapshot()

    response, _ = _send(
        "PUT", target_state_url(victim.uuid), json.dumps(body).encode(), "application/json", victim.staff
    )

    if response.status_code != 200:
        assert_error_shape(response, {400, 413}, response.causes)
        assert world_snapshot() == before
        return
    with server_errors() as causes:
        polled = Client(raise_request_exception=False).get(state_url(victim.uuid), headers=agent_headers(victim.key))
    assert polled.status_code == 200, (
        f"staff could store {value} in {where}, and now the agent's poll answers "
        f"{polled.status_code}: {polled.content[:120]} {causes}"
    )
    delivered = json.loads(polled.content)[victim.uuid]
    got = delivered["apps"] if where == "apps" else delivered["config"]["sensors"][0]["metadata"]
    assert got == stored


@pytest.mark.parametrize("where", ["apps", "metadata"])
@pytest.mark.parametrize("value", list(FREE_FORM))
def test_free_form_json_in_a_report_is_refused_or_applied(victim, value, where):
    nested = FREE_FORM[value]()
    if where == "apps":
        entry = _good_entry(apps=nested)
    else:
        entry = _good_entry(config={"sensors": [{"name": "x", "protocol": "can", "metadata": nested}]})
    before = world_snapshot()

    response, elapsed = _send(
        "PATCH", REPORT_URL, _report(victim, _j(entry)), "application/json", agent_headers(victim.key)
    )

    assert elapsed < FAST
    if response.status_code == 200:
        assert response.json()[victim.uuid]["outcome"] == "applied"
        assert DeviceCurrentState.objects.get(device=victim.device).seq == 10
    else:
        assert_error_shape(response, {400, 413}, response.causes)
        assert world_snapshot() == before
