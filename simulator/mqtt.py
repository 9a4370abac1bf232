"""Agents that report over MQTT as the 2025-11-22 agent does (``simulate_fleet --transport mqtt``).

Each device has its own connection (client id ``device_<uuid>``, its uuid and MQTT password, MQTT 3.1.1, clean
session, keepalive 60 s) and publishes each report, the PATCH's JSON uncompressed, to ``iot/device/<uuid>/state`` at
QoS 1. When the broker is unreachable, refuses the device or does not acknowledge the publish in time, the report
goes over HTTP (the gzip PATCH) instead, as the agent falls back. A PUBACK is delivery: MQTT 3.1.1 has no refusal
in it (the broker acknowledges a publish its ACL refuses). Polls always go over HTTP. The credentials come from the
server (the command issues them, as registration does).
"""

import gzip
import threading
import time
from dataclasses import dataclass, field

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from .agent import REPORT, Request, Response
from .fleet import Transport

RECONNECT_AFTER = 30.0  # seconds before trying a broker that was unreachable again


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False


@dataclass(frozen=True)
class MqttCredentials:
    device_uuid: str
    password: str


@dataclass
class MqttStats:
    published: int = 0
    fell_back: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fallback(self, reason: str) -> None:
        with self.lock:
            self.fell_back += 1
            self.reasons[reason] = self.reasons.get(reason, 0) + 1


class _DeviceConnection:
    def __init__(self, address: Broker, credentials: MqttCredentials, timeout: float) -> None:
        self.address, self.credentials, self.timeout = address, credentials, timeout
        self.client: mqtt.Client | None = None
        self.retry_at = 0.0
        self.acks: set[int] = set()
        self.acked = threading.Condition()

    def _on_publish(
        self, client: mqtt.Client, userdata: object, mid: int, reason_code: ReasonCode, properties: object
    ) -> None:
        with self.acked:
            self.acks.add(mid)
            self.acked.notify_all()

    def connected(self) -> mqtt.Client | None:
        if self.client is not None and self.client.is_connected():
            return self.client
        if self.client is not None or time.monotonic() < self.retry_at:
            return None  # reconnecting in the background, or the broker was unreachable a moment ago
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"device_{self.credentials.device_uuid}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.username_pw_set(self.credentials.device_uuid, self.credentials.password)
        if self.address.tls:
            client.tls_set()
        client.on_publish = self._on_publish
        client.reconnect_delay_set(5, 60)
        ready = threading.Event()
        client.on_connect = lambda c, u, flags, rc, p: ready.set() if not rc.is_failure else None
        try:
            client.connect(self.address.host, self.address.port, keepalive=60)
        except OSError:
            self.retry_at = time.monotonic() + RECONNECT_AFTER
            return None
        client.loop_start()
        if not ready.wait(self.timeout):
            client.disconnect()
            client.loop_stop()
            self.retry_at = time.monotonic() + RECONNECT_AFTER
            return None
        self.client = client
        return client

    def publish(self, topic: str, payload: bytes) -> str | None:
        """None once the broker acknowledged it, else why not."""
        client = self.connected()
        if client is None:
            return "broker unreachable"
        info = client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return f"publish failed ({mqtt.error_string(info.rc)})"
        with self.acked:
            if not self.acked.wait_for(lambda: info.mid in self.acks, timeout=self.timeout):
                return "no PUBACK in time"
            self.acks.discard(info.mid)
        return None

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None


class MqttFallbackTransport:
    """Reports over MQTT for the devices in ``credentials`` (by API key); everything else, and every report MQTT
    could not take, over ``http``."""

    def __init__(
        self,
        http: Transport,
        *,
        broker: Broker,
        credentials: dict[str, MqttCredentials],
        stats: MqttStats,
        timeout: float = 5.0,
    ) -> None:
        self.http = http
        self.address = broker
        self.credentials = credentials
        self.stats = stats
        self.timeout = timeout
        self.devices: dict[str, _DeviceConnection] = {}

    @property
    def connections(self) -> int:
        return getattr(self.http, "connections", 0)

    def send(self, request: Request) -> Response:
        credentials = self.credentials.get(request.headers.get("X-Device-API-Key", ""))
        if request.method != "PATCH" or credentials is None:
            return self.http.send(request)
        device = self.devices.get(credentials.device_uuid)
        if device is None:
            device = self.devices[credentials.device_uuid] = _DeviceConnection(self.address, credentials, self.timeout)
        body = request.body or b""
        raw = gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body
        problem = device.publish(f"iot/device/{credentials.device_uuid}/state", raw)
        if problem is not None:
            self.stats.fallback(problem)
            return self.http.send(request)
        with self.stats.lock:
            self.stats.published += 1
        # No verdict comes back over MQTT: the agent counts an acknowledged publish as a report sent.
        outcome = "mqtt" if request.kind == REPORT else "mqtt (queued)"
        return Response(200, {}, orjson.dumps({credentials.device_uuid: {"outcome": outcome}}))

    def close(self) -> None:
        for device in self.devices.values():
            device.close()
        self.http.close()


def mqtt_summary(stats: MqttStats) -> str:
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.reasons.items()))
    return f"MQTT: {stats.published} reports published, {stats.fell_back} sent over HTTP instead" + (
        f" ({reasons})" if reasons else ""
    )
