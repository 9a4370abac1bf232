"""A private Mosquitto for the MQTT tests, configured by the project's own files (``ingest.broker``), on a free
port; device credentials issued through the services; ingestion workers in this process (a thread) or as real
``manage.py mqtt_ingest`` processes against the test database."""

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import pytest
from django.conf import settings
from django.db import connection
from paho.mqtt.enums import CallbackAPIVersion

from devices.models import Device
from devices.services import device_create
from ingest.broker import BrokerUnavailable, PrivateBroker, missing_reason
from ingest.dynsec import BrokerAddress, BrokerUnreachable, client_connect
from ingest.services import device_mqtt_credentials_issue, dynsec_control
from ingest.worker import Ingestor, default_client_id


@pytest.fixture(scope="session")
def mosquitto_available():
    reason = missing_reason()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run the MQTT tests (.ci/run installs Mosquitto)")
        pytest.skip(reason)


@pytest.fixture
def broker(mosquitto_available, tmp_path, settings):
    """A fresh private broker, and the settings that point the server at it."""
    admin_password = secrets.token_urlsafe(24)
    private = PrivateBroker(tmp_path / "mosquitto", admin_username="sensorsync-admin", admin_password=admin_password)
    try:
        private.start()
    except BrokerUnavailable as exc:
        pytest.fail(str(exc))
    settings.SENSORSYNC_MQTT_BROKER_URL = private.url
    settings.SENSORSYNC_MQTT_URL = private.url
    settings.SENSORSYNC_MQTT_ADMIN_USERNAME = private.admin_username
    settings.SENSORSYNC_MQTT_ADMIN_PASSWORD = admin_password
    yield private
    private.stop()


@dataclass
class MqttDevice:
    device: Device
    api_key: str
    password: str

    @property
    def uuid(self) -> str:
        return str(self.device.uuid)

    @property
    def topic(self) -> str:
        return f"iot/device/{self.uuid}/state"


def mqtt_device(name: str | None = None) -> MqttDevice:
    created = device_create(name=name or f"mqtt-{uuid.uuid4().hex[:8]}")
    password = device_mqtt_credentials_issue(device=created.device)
    assert password, "the broker did not take the device's credentials"
    return MqttDevice(created.device, created.api_key, password)


def agent_connect(
    url: str,
    *,
    username: str,
    password: str,
    client_id: str | None = None,
    timeout: float = 5.0,
    reconnect_delay: float | None = None,
) -> mqtt.Client:
    """A connection made as the real agents make theirs (mqtt.js 5 with their options, agent/src/agent.ts and
    mqtt/manager.ts): client id device_<uuid>, MQTT 3.1.1 (mqtt.js's default protocol), clean session, keepalive
    60 s; BrokerUnreachable if the broker refuses it. MQTT 3.1.1 has no reason codes: a publish the broker refuses is
    acknowledged all the same. With ``reconnect_delay``, it reconnects by itself that many seconds after losing the
    broker."""
    address = BrokerAddress.parse(url)
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"device_{username}",
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    client.username_pw_set(username, password)
    if reconnect_delay is not None:
        client.reconnect_delay_set(reconnect_delay, reconnect_delay)
    connected = threading.Event()
    outcome: dict = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome["reason"] = reason_code
        connected.set()

    client.on_connect = on_connect
    client.connect(address.host, address.port, keepalive=60)
    client.loop_start()
    if not connected.wait(timeout) or outcome["reason"].is_failure:
        client.disconnect()
        client.loop_stop()
        raise BrokerUnreachable(f"{url} refused the connection: {outcome.get('reason', 'no CONNACK in time')}")
    client.on_connect = None
    return client


def device_connect(broker: PrivateBroker, device: MqttDevice, *, password: str | None = None, client_id=None):
    """Connect as the agent does (``agent_connect``: client id device_<uuid>, its uuid as username)."""
    return agent_connect(
        broker.url,
        username=device.uuid,
        password=device.password if password is None else password,
        client_id=client_id or f"device_{device.uuid}",
    )


def publish(client: mqtt.Client, topic: str, payload, *, timeout: float = 5.0) -> mqtt.ReasonCode:
    """Publish at QoS 1 and wait for the PUBACK: its reason code (success, or "Not authorized")."""
    done = threading.Event()
    codes: dict = {}

    def on_publish(client, userdata, mid, reason_code, properties):
        codes[mid] = reason_code
        done.set()

    client.on_publish = on_publish
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    info = client.publish(topic, body, qos=1)
    deadline = time.monotonic() + timeout
    while info.mid not in codes:
        assert time.monotonic() < deadline, "no PUBACK"
        done.wait(0.05)
        done.clear()
    return codes[info.mid]


class Observer:
    """A client of the test's own that may read every ``iot/...`` topic (a role created through dynamic security),
    collecting what the broker delivers: what a refused publish never reaches."""

    def __init__(self, broker: PrivateBroker) -> None:
        self.broker = broker
        self.messages: list[tuple[str, bytes]] = []
        self.client: mqtt.Client | None = None

    def __enter__(self) -> "Observer":
        password = secrets.token_urlsafe(16)
        allow = {"priority": 0, "allow": True}
        with dynsec_control() as control:
            control.run(
                [
                    {
                        "command": "createRole",
                        "rolename": "test-observer",
                        "acls": [
                            {"acltype": "subscribePattern", "topic": "iot/#", **allow},
                            {"acltype": "publishClientReceive", "topic": "iot/#", **allow},
                        ],
                    },
                    {
                        "command": "createClient",
                        "username": "test-observer",
                        "password": password,
                        "roles": [{"rolename": "test-observer"}],
                    },
                ]
            )
        self.client = client_connect(
            BrokerAddress.parse(self.broker.url),
            client_id="test-observer",
            username="test-observer",
            password=password,
            timeout=5,
        )
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *args: subscribed.set()
        self.client.on_message = lambda client, userdata, message: self.messages.append(
            (message.topic, bytes(message.payload))
        )
        self.client.subscribe("iot/#", qos=1)
        assert subscribed.wait(5), "the observer's subscription was not acknowledged"
        return self

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.messages]

    def __exit__(self, *exc) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()


def report(device: MqttDevice, *, version: int = 1, marker: int = 0, **fields) -> dict:
    """A 2025-11-22 agent's report body; ``marker`` lands in the stored apps, to tell reports apart."""
    return {device.uuid: {"version": version, "config": {"sensors": []}, "apps": {"marker": marker}, **fields}}


def wait_until(predicate, *, timeout: float = 20.0, message="condition not met") -> None:
    """Wait for ``predicate``; fail with ``message`` (a string, or a callable that says how things stand then)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.05)


class InProcessWorker:
    """The ingestion worker on a thread of the test process (the in-memory SQLite test database is shared)."""

    def __init__(self, broker: PrivateBroker, *, client_id: str = "ingest-test-1", **options) -> None:
        self.ingestor = Ingestor(
            url=broker.url,
            username=broker.admin_username,
            password=broker.admin_password,
            client_id=client_id,
            journal_dir=broker.data_dir.parent / "journal",
            converge_interval=0,
            **options,
        )
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.ingestor.run()
        finally:
            connection.close()

    def __enter__(self) -> "InProcessWorker":
        self.thread.start()
        wait_until(lambda: self.ingestor.generation > 0, message="the worker did not connect")
        time.sleep(0.2)  # its SUBSCRIBE
        return self

    def __exit__(self, *exc) -> None:
        self.ingestor.stop_event.set()
        self.thread.join(timeout=10)


class WorkerProcess:
    """``manage.py mqtt_ingest`` as a real process against the test database (PostgreSQL)."""

    def __init__(self, broker: PrivateBroker, log_dir: Path, *, worker: int, extra_env: dict | None = None):
        from tests.servers import database_url

        self.broker, self.worker = broker, worker
        self.log_path = log_dir / f"mqtt-ingest-{worker}.log"
        self.journal_dir = log_dir / "journal"  # kept across restarts of the same worker, as on a real machine
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SENSORSYNC_", "PYTEST"))},
            "DATABASE_URL": database_url(),
            "DJANGO_SETTINGS_MODULE": "sensorsync_project.settings",
            "DJANGO_SECRET_KEY": "mqtt-test-secret-key-not-for-production-0123456789abcdef",
            "DJANGO_LOG_LEVEL": os.environ.get("MQTT_TEST_WORKER_LOG_LEVEL", "INFO"),
            "DJANGO_DB_STATEMENT_TIMEOUT_MS": "5000",
            "PYTHONUNBUFFERED": "1",
            "SENSORSYNC_MQTT_BROKER_URL": broker.url,
            "SENSORSYNC_MQTT_ADMIN_USERNAME": broker.admin_username,
            "SENSORSYNC_MQTT_ADMIN_PASSWORD": broker.admin_password,
            **(extra_env or {}),
        }
        self.process: subprocess.Popen | None = None

    def _command(self, *options: str) -> list[str]:
        return [
            sys.executable,
            "manage.py",
            "mqtt_ingest",
            "--worker",
            str(self.worker),
            "--journal-dir",
            str(self.journal_dir),
            *options,
        ]

    def start(self) -> "WorkerProcess":
        connected = self.log().count("connected to")  # a restarted worker appends to the same log
        log = open(self.log_path, "ab")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            self._command("--converge-interval", "0"),
            cwd=settings.BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.process.log = log
        wait_until(lambda: self.log().count("connected to") > connected or self.process.poll() is not None, timeout=30)
        assert self.process.poll() is None, f"mqtt_ingest exited:\n{self.log()}"
        return self

    @property
    def client_id(self) -> str:
        return default_client_id(self.worker)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def retire(self) -> subprocess.CompletedProcess:
        """``mqtt_ingest --retire`` for this worker's client id, once it is stopped; its exit and output."""
        return subprocess.run(
            self._command("--retire"), cwd=settings.BASE_DIR, env=self.env, capture_output=True, text=True, timeout=120
        )

    def freeze(self) -> None:
        """SIGSTOP: the worker holds its connections and does nothing (a worker slow to come back)."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.process.log.close()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.log.close()
        return self.process.returncode


@pytest.fixture
def worker_processes(broker, tmp_path):
    started: list[WorkerProcess] = []

    def start(worker: int, **options) -> WorkerProcess:
        process = WorkerProcess(broker, tmp_path, worker=worker, **options).start()
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.stop()
