"""The real agent over MQTT, against this server over real HTTP, the project's broker and an ingestion worker.

The 2025-11-22 agent (Iotistica/iotistic ``agent/`` 1.0.84, commit 1a5b2b0d) was run against this build (README,
"MQTT"). On the wire it: registers with a provisioning key and keeps the answer's ``mqtt`` (username, password,
broker); connects with mqtt.js 5's defaults and its own options (MQTT 3.1.1, client id ``device_<uuid>``, clean
session, keepalive 60 s); subscribes to ``iot/device/<uuid>/agent/update`` (QoS 0, its self-updater); polls its
target over HTTP; publishes each report, the PATCH's JSON uncompressed, to ``iot/device/<uuid>/state`` at QoS 1,
taking the PUBACK as delivery (``publishNoQueue``, 5 s), and uses the gzip PATCH only while it is not connected or
when no PUBACK comes in time. ``RealAgent`` does the same; ``recorded/agent-2025-11-22-mqtt.json`` holds the
messages it published, replayed in its spelling (compact JSON). The 2025-11-06 agent publishes its reports the
same way (without the 5 s limit), so both agents' recorded report bodies (``../shared/agent-wire``) go over MQTT
here too.
"""

import contextlib
import gzip
import json
import secrets
import time
import uuid
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from devices.models import Device
from devices.provisioning import provisioning_key_create
from ingest.metrics import MESSAGES
from ingest.services import device_mqtt_credentials_issue
from ingest.worker import message_apply, now_us
from reconciliation.metrics import REPORTS
from reconciliation.services.sensors import sensor_create
from tests.agent.wire import FILES, exchange_body, exchanges
from tests.factories import DeviceFactory
from tests.helpers import add_sensor, rows, send_body
from tests.servers import http

from .support import InProcessWorker, MqttDevice, agent_connect, device_connect, publish, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RECORDED = Path(__file__).parent / "recorded" / "agent-2025-11-22-mqtt.json"
OUTCOMES = ("applied", "unchanged", "stale", "queued", "dropped")


@cache
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def recorded_entry(index: int) -> dict:
    """What the recorded message ``index`` reported for its device (the body's one entry)."""
    return recorded()["messages"][index]["payload"]["{uuid}"]


def worker_counts() -> dict[str, float]:
    return {outcome: MESSAGES.labels(outcome)._value.get() for outcome in OUTCOMES}


def patch_count() -> float:
    return sum(REPORTS.labels(outcome)._value.get() for outcome in ("applied", "unchanged", "stale", "queued"))


class RealAgent:
    """What the 2025-11-22 agent sends, in the order and shape it sends it (see the module's docstring)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.uuid = str(uuid.uuid4())
        self.key = secrets.token_hex(32)
        self.answer: dict = {}
        self.etag: str | None = None
        self.client = None

    def _call(self, method: str, path: str, *, body: bytes | None = None, headers: dict | None = None):
        return http(method, f"{self.base_url}/api/v1{path}", body=body, headers=headers)

    def provision(self, provisioning_key: str) -> dict:
        request = {
            "uuid": self.uuid,
            "deviceName": f"device-{self.uuid[:8]}",
            "deviceType": "standalone",
            "deviceApiKey": self.key,
            "macAddress": "02:fc:00:00:00:01",
            "osVersion": "Debian GNU/Linux 12 (bookworm)",
            "agentVersion": "1.0.84",
        }
        status, _, body = self._call(
            "POST",
            "/device/register",
            body=json.dumps(request).encode(),
            headers={"Authorization": f"Bearer {provisioning_key}"},
        )
        assert status == 201, body
        self.answer = json.loads(body)
        exchange = json.dumps({"uuid": self.uuid, "deviceApiKey": self.key}).encode()
        status, _, body = self._call(
            "POST", f"/device/{self.uuid}/key-exchange", body=exchange, headers={"Authorization": f"Bearer {self.key}"}
        )
        assert status == 200, body  # its answer is not read
        return self.answer

    def connect(self) -> int:
        """Connect with what registration answered and subscribe as its updater does; the QoS granted."""
        settings = self.answer["mqtt"]
        self.client = agent_connect(
            settings["broker"],
            username=settings["username"],
            password=settings["password"],
            client_id=f"device_{self.uuid}",
        )
        granted: list = []
        self.client.on_subscribe = lambda client, userdata, mid, codes, properties: granted.extend(codes)
        self.client.subscribe(f"iot/device/{self.uuid}/agent/update", qos=0)
        wait_until(lambda: granted, timeout=5, message="no SUBACK")
        return granted[0].value

    def poll(self) -> dict | None:
        headers = {"X-Device-API-Key": self.key, **({"If-None-Match": self.etag} if self.etag else {})}
        status, answer_headers, body = self._call("GET", f"/device/{self.uuid}/state", headers=headers)
        if status == 304:
            return None
        assert status == 200, body
        self.etag = answer_headers["ETag"]
        return json.loads(body)[self.uuid]

    def report(self, entry: dict) -> str:
        """ "mqtt" once the broker acknowledged the report within 5 s; else it goes over the PATCH: its status."""
        text = json.dumps({self.uuid: entry}, separators=(",", ":"))  # JSON.stringify's spelling
        if self.client is not None and self.client.is_connected():
            sent = self.client.publish(f"iot/device/{self.uuid}/state", text.encode(), qos=1)
            with contextlib.suppress(RuntimeError):  # the connection went while it waited
                sent.wait_for_publish(timeout=5)
            if sent.is_published():
                return "mqtt"
        status, _, _ = self._call(
            "PATCH",
            "/device/state",
            body=gzip.compress(text.encode()),
            headers={"X-Device-API-Key": self.key, "Content-Type": "application/json", "Content-Encoding": "gzip"},
        )
        return str(status)

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


@pytest.fixture
def real_agent(live_server):
    made = RealAgent(live_server.url)
    yield made
    made.close()


def _wait_for(counts_before: dict, **expected: int) -> None:
    def arrived() -> bool:
        now = worker_counts()
        return all(now[outcome] - counts_before[outcome] >= count for outcome, count in expected.items())

    wait_until(arrived, timeout=20, message=f"the worker did not apply {expected}: {worker_counts()}")


def test_the_agent_registers_reports_over_mqtt_alone_and_the_sensor_it_runs_converges(broker, real_agent, admin_client):
    answer = real_agent.provision(provisioning_key_create(name="mqtt roll-out").secret)
    assert isinstance(answer["id"], int)  # it stores id.toString()
    mqtt = answer["mqtt"]
    assert (mqtt["username"], mqtt["broker"]) == (real_agent.uuid, broker.url)
    assert urlsplit(mqtt["broker"]).scheme in ("mqtt", "mqtts")  # a URL mqtt.js connects to as it is
    device = Device.objects.get(uuid=real_agent.uuid)
    patches, counts = patch_count(), worker_counts()

    with InProcessWorker(broker):
        assert real_agent.connect() == 0  # its updater's subscription is granted
        assert real_agent.poll() == {"apps": {}, "config": {"sensors": []}, "version": 1}
        assert real_agent.report(recorded_entry(0)) == "mqtt"
        _wait_for(counts, applied=1)

        add_sensor(
            admin_client,
            device,
            {
                "name": "modbus-sensor-1",
                "protocol": "modbus",
                "enabled": True,
                "pollInterval": 5000,
                "connection": {"host": "127.0.0.1", "port": 5020, "unitId": 1},
                "dataPoints": [{"name": "temperature", "address": 40001, "type": "float32", "unit": "C"}],
            },
        )
        served = real_agent.poll()
        assert served["version"] == 2 and [s["name"] for s in served["config"]["sensors"]] == ["modbus-sensor-1"]
        assert real_agent.poll() is None  # 304 with the ETag it was given

        # Deployed; after its restart, running with its PLC unreachable; its next metrics: the same again.
        for index in (1, 2, 3):
            assert real_agent.report(recorded_entry(index)) == "mqtt"
        _wait_for(counts, applied=3, unchanged=1)

    assert patch_count() == patches  # not one report over HTTP while the broker was up
    assert worker_counts()["dropped"] == counts["dropped"]
    row = rows(admin_client, device)["modbus-sensor-1"]
    assert (row["deploymentStatus"], row["running"], row["configVersion"]) == ("deployed", True, 2)
    assert (row["healthStatus"], row["connected"], row["communicationQuality"]) == ("offline", None, "offline")
    assert row["unreportedFields"] == ["dataPoints"]
    reported = Device.objects.get(pk=device.pk)
    assert (reported.agent_version, reported.ip_address, reported.uptime) == ("1.0.84", "192.0.2.2", 2314.24)
    assert reported.target_state.needs_deployment is False


def test_the_agent_reports_over_the_patch_while_the_broker_is_down_and_over_mqtt_once_it_is_back(broker, real_agent):
    real_agent.provision(provisioning_key_create(name="k").secret)
    counts = worker_counts()
    with InProcessWorker(broker) as worker:
        real_agent.connect()
        real_agent.poll()
        assert real_agent.report(recorded_entry(0)) == "mqtt"
        _wait_for(counts, applied=1)

        patches = patch_count()
        broker.stop()
        wait_until(lambda: not real_agent.client.is_connected(), timeout=5)
        assert real_agent.report({**recorded_entry(3), "version": 1}) == "200"
        assert patch_count() == patches + 1

        generation = worker.ingestor.generation
        broker.start()
        # Both come back by themselves (paho reconnects as mqtt.js's manager does, the worker within 2 s).
        wait_until(lambda: real_agent.client.is_connected(), timeout=20, message="the agent did not reconnect")
        wait_until(lambda: worker.ingestor.generation > generation, timeout=10, message="the worker did not")
        wait_until(lambda: worker.ingestor.client.is_connected(), timeout=5)
        time.sleep(0.3)  # the worker's SUBSCRIBE: until then the broker takes reports that nobody receives
        assert real_agent.report({**recorded_entry(0), "uptime": 1400.5}) == "mqtt"
        _wait_for(counts, applied=2)
    assert patch_count() == patches + 1
    assert Device.objects.get(uuid=real_agent.uuid).uptime == 1400.5


@pytest.mark.parametrize("name", FILES)
def test_every_recorded_report_of_both_agents_is_taken_over_mqtt_as_over_the_patch(broker, device, name):
    """Each report body the agents were recorded sending, published as they publish it: the worker answers what the
    PATCH answers (tests/agent/test_real_agent_wire.py) and drops none."""
    mqtt_device = MqttDevice(device, device.api_key, device_mqtt_credentials_issue(device=device))
    reports = [exchange for exchange in exchanges(name) if exchange["method"] == "PATCH"]
    queued = sum("version" not in exchange_body(exchange, device)[str(device.uuid)] for exchange in reports)
    counts = worker_counts()
    with InProcessWorker(broker):
        client = device_connect(broker, mqtt_device)
        for exchange in reports:
            body = json.dumps(exchange_body(exchange, device), separators=(",", ":")).encode()
            assert not publish(client, mqtt_device.topic, body).is_failure
        client.disconnect()
        wait_until(lambda: sum(worker_counts()[o] - counts[o] for o in OUTCOMES) == len(reports), timeout=20)
    now = worker_counts()
    assert now["queued"] - counts["queued"] == queued
    assert now["applied"] + now["unchanged"] - counts["applied"] - counts["unchanged"] == len(reports) - queued
    assert now["dropped"] == counts["dropped"] and now["stale"] == counts["stale"]


@pytest.mark.django_db  # the test's transaction: savepoints, counted alike on every database
def test_the_agents_reports_over_mqtt_cost_what_they_cost_over_the_patch(broker, superuser, django_assert_num_queries):
    """The recorded messages through the worker's ``message_apply`` for one device and through the PATCH for its
    twin: statement for statement the same work (the receipt stamp rides in the UPDATE that writes liveness), and
    an unchanged report is one SELECT and one UPDATE."""
    over_mqtt, over_http = DeviceFactory(), DeviceFactory()
    device_mqtt_credentials_issue(device=over_mqtt)
    agent = Client()

    def body(device, index: int) -> dict:
        return {str(device.uuid): recorded_entry(index)}

    def publish(index: int) -> str:
        payload = json.dumps(body(over_mqtt, index)).encode()
        return message_apply(topic=f"iot/device/{over_mqtt.uuid}/state", payload=payload, received_us=now_us())

    def patch(index: int) -> str:
        answer = send_body(agent, body(over_http, index), key=over_http.api_key, gzip=True)
        assert answer.status_code == 200, answer.content
        return answer.json()[str(over_http.uuid)]["outcome"]

    statements: dict[str, list[int]] = {"mqtt": [], "patch": []}
    for index, outcome in ((0, "applied"), (1, "applied"), (2, "applied"), (3, "unchanged")):
        if index == 1:
            for device in (over_mqtt, over_http):
                sensor_create(
                    device_uuid=device.uuid,
                    user=superuser,
                    data={
                        "name": "modbus-sensor-1",
                        "protocol": "modbus",
                        "enabled": True,
                        "pollInterval": 5000,
                        "connection": {"host": "127.0.0.1", "port": 5020, "unitId": 1},
                        "dataPoints": [{"name": "temperature", "address": 40001}],
                    },
                )
        for path, send in (("mqtt", publish), ("patch", patch)):
            with CaptureQueriesContext(connection) as queries:
                assert send(index) == outcome, (path, index)
            statements[path].append(len(queries))
    assert statements["mqtt"] == statements["patch"] == [8, 11, 9, 2]  # the savepoints included
    with django_assert_num_queries(2):
        assert publish(3) == "unchanged"
