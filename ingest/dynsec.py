"""A client of Mosquitto's dynamic-security API: JSON commands published to ``$CONTROL/dynamic-security/v1`` with
the admin account, answers read from ``$CONTROL/dynamic-security/v1/response`` (matched by correlationData, since
every admin connection receives every answer)."""

import json
import ssl
import threading
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{CONTROL_TOPIC}/response"


class DynsecError(RuntimeError):
    """The broker answered a command with an error."""

    def __init__(self, command: str, error: str) -> None:
        super().__init__(f"{command}: {error}")
        self.command, self.error = command, error


class BrokerUnreachable(RuntimeError):
    """No answer: the broker is down, refused the admin credentials, or did not answer in time."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, url: str) -> "BrokerAddress":
        """``mqtt://host:1883`` or ``mqtts://host:8883`` (also ``tcp://``, ``ssl://``, or a bare ``host:port``)."""
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl", "tls") or not parts.hostname:
            raise ValueError(f"not an MQTT broker URL: {url!r} (expected mqtt://host:port or mqtts://host:port)")
        tls = parts.scheme in ("mqtts", "ssl", "tls")
        return cls(parts.hostname, parts.port or (8883 if tls else 1883), tls)

    @property
    def url(self) -> str:
        """``mqtt://host:port`` or ``mqtts://host:port``, every part spelled out: the form mqtt.js, the agents' MQTT
        client, reads as meant (given a bare ``host:port`` it takes the port for the host's name)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def client_connect(
    address: BrokerAddress,
    *,
    client_id: str,
    username: str,
    password: str,
    timeout: float,
    clean_start: bool = True,
    properties: Properties | None = None,
) -> mqtt.Client:
    """A connected MQTT v5 client with its network loop running; BrokerUnreachable if the broker refused or did
    not answer within ``timeout``."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    if address.tls:
        client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
    connected = threading.Event()
    outcome: dict = {}

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, reason_code: ReasonCode, properties: object
    ) -> None:
        outcome["reason"] = reason_code
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(address.host, address.port, keepalive=30, clean_start=clean_start, properties=properties)
    except OSError as exc:
        raise BrokerUnreachable(f"cannot connect to {address.host}:{address.port}: {exc}") from exc
    client.loop_start()
    if not connected.wait(timeout) or outcome["reason"].is_failure:
        client.loop_stop()
        client.disconnect()
        reason = outcome.get("reason", "no CONNACK in time")
        raise BrokerUnreachable(f"{address.host}:{address.port} refused the connection: {reason}")
    client.on_connect = None
    return client


class DynsecControl:
    """One admin connection; use as a context manager. ``run`` sends commands and returns their answers."""

    def __init__(self, url: str, *, username: str, password: str, timeout: float = 5.0) -> None:
        self.address = BrokerAddress.parse(url)
        self.username, self.password, self.timeout = username, password, timeout
        self._client: mqtt.Client | None = None
        self._answers: dict[str, dict] = {}
        self._arrived = threading.Condition()

    def __enter__(self) -> "DynsecControl":
        self._client = client_connect(
            self.address,
            client_id=f"sensorsync-control-{uuid.uuid4().hex[:12]}",
            username=self.username,
            password=self.password,
            timeout=self.timeout,
        )
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        granted: list = []

        def on_subscribe(
            client: mqtt.Client, userdata: object, mid: int, reason_codes: list[ReasonCode], properties: object
        ) -> None:
            granted.extend(reason_codes)
            subscribed.set()

        self._client.on_subscribe = on_subscribe
        self._client.subscribe(RESPONSE_TOPIC, qos=1)
        if not subscribed.wait(self.timeout) or any(code.is_failure for code in granted):
            self.__exit__(None, None, None)
            raise BrokerUnreachable(f"the broker refused {self.username!r} the dynamic-security answers: {granted}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            answers = json.loads(message.payload).get("responses", [])
        except (ValueError, AttributeError):
            return
        with self._arrived:
            for answer in answers:
                if isinstance(answer, dict) and answer.get("correlationData"):
                    self._answers[answer["correlationData"]] = answer
            self._arrived.notify_all()

    def run(self, commands: list[dict], *, raise_errors: bool = True) -> list[dict]:
        """Send ``commands`` in one message; the answers in the same order. An answer with ``error`` raises
        DynsecError unless ``raise_errors`` is false."""
        if not commands:
            return []
        ids = [uuid.uuid4().hex for _ in commands]
        payload = {
            "commands": [{**command, "correlationData": id_} for command, id_ in zip(commands, ids, strict=True)]
        }
        if self._client is None:
            raise BrokerUnreachable("the dynamic-security control is not connected (use it as a context manager)")
        info = self._client.publish(CONTROL_TOPIC, json.dumps(payload), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise BrokerUnreachable(f"publishing a dynamic-security command failed: {mqtt.error_string(info.rc)}")
        with self._arrived:
            if not self._arrived.wait_for(lambda: all(i in self._answers for i in ids), timeout=self.timeout):
                raise BrokerUnreachable("the broker did not answer a dynamic-security command in time")
            answers = [self._answers.pop(i) for i in ids]
        if raise_errors:
            for command, answer in zip(commands, answers, strict=True):
                if answer.get("error"):
                    raise DynsecError(command["command"], answer["error"])
        return answers

    def run_one(self, command: str, **fields: object) -> dict:
        return self.run([{"command": command, **fields}])[0]

    def run_one_quiet(self, command: str, **fields: object) -> str | None:
        """Run one command; its error text, or None."""
        return self.run([{"command": command, **fields}], raise_errors=False)[0].get("error")

    def clients(self) -> list[str]:
        """Every client's username."""
        answer = self.run_one("listClients", verbose=False, count=-1, offset=0)
        return [c if isinstance(c, str) else c["username"] for c in answer.get("data", {}).get("clients", [])]

    def clients_verbose(self, *, page: int = 1000) -> list[dict]:
        """Every client: ``username``, ``disabled``, ``roles``, ..."""
        found: list[dict] = []
        while True:
            answer = self.run_one("listClients", verbose=True, count=page, offset=len(found))
            batch = answer.get("data", {}).get("clients", [])
            found += batch
            if len(batch) < page:
                return found
