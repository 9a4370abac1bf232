"""The MQTT ingestion worker (``manage.py mqtt_ingest``): one process, one connection to the broker, one member of
the shared subscription ``$share/sensorsync/iot/device/+/state``.

Each message goes through the PATCH's own parsing (``reports_parse``, the topic's uuid as the authenticated device)
and what ``state_report_apply`` would do with it, and is acknowledged (PUBACK, paho's ``manual_ack``) only after its
writes committed. Messages are taken in batches of what the client has buffered (``messages_apply``): one lookup for
the batch, one write for all its reports that repeat their device's stored report (unchanged, or new metrics), each
other message applied alone through ``state_report_apply``, in order; then the batch is acknowledged in the order
received. So:

- A worker killed mid-message loses nothing: the broker keeps the unacknowledged message in the worker's
  persistent session (clean start off, a session expiry) and redelivers it when the worker (the same client id)
  connects again; a message applied but not yet acknowledged is applied again, and the digest makes that a no-op.
- A message that can never be applied (bad topic, malformed or foreign body, unknown or inactive device, a
  validation error) is dropped: logged with the reason, counted, acknowledged; never redelivered for ever.
- The database unavailable: the message is not acknowledged, the worker backs off (0.5 s doubling to 30 s) and
  retries it; the broker sends at most ``receive_maximum`` unacknowledged messages, so nothing piles up in here.
- Order per device across workers: each message is stamped with its time of receipt (``received_at``, a report
  clock of its own, ``Device.last_report_received_us``), so a message received earlier never overwrites one
  received later by another worker. This costs an UPDATE per MQTT report, the unchanged ones included (one statement
  for all of a batch's).
- A message that comes back (the broker redelivers what was not acknowledged, to the same client id with the same
  packet id) keeps the time it was first received, from the worker's receipt journal (``ingest.journal``: in memory
  across reconnections, in a file per client id across a kill). Only when the journal does not know it (the
  machine crashed, or the worker moved to another machine or journal directory) is it stamped with the time this
  connection started, an upper bound of its first receipt: that stamp can let it overwrite a newer report of the
  same device another worker applied while this one was away, until the device's next report.
"""

import contextlib
import dataclasses
import logging
import queue
import re
import signal
import socket
import threading
import time
import uuid as uuid_lib
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from django.conf import settings
from django.db import DatabaseError, DataError, InterfaceError, close_old_connections, connection
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from devices.models import Device, DeviceAccessRevoked
from reconciliation.agent_protocol import (
    ProtocolError,
    RepeatedReport,
    Report,
    StoredReport,
    json_parse,
    reports_parse,
)
from reconciliation.services import reports
from sensorsync_project.database import database_unavailable

from .broker import SHARED_SUBSCRIPTION
from .dynsec import BrokerAddress, BrokerUnreachable, DynsecError
from .journal import ReceiptJournal, journal_path, message_digest
from .metrics import (
    DATABASE_RETRIES,
    DROPPED,
    IN_FLIGHT,
    LAG_SECONDS,
    MESSAGES,
    PROCESSING_SECONDS,
    REDELIVERIES,
)
from .selectors import device_for_mqtt_report, devices_for_mqtt_reports

logger = logging.getLogger("sensorsync.mqtt")

TOPIC = re.compile(r"^iot/device/([^/]+)/state$")
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
RETIRE_QUIET = 2.0  # seconds without a message before a retiring worker ends its session


class Dropped(Exception):
    """A message that can never be applied: acknowledged and counted, with a reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason, self.detail = reason, detail or reason


def now_us() -> int:
    return time.time_ns() // 1000


def _topic_device_uuid(topic: str) -> uuid_lib.UUID:
    """The device a state topic names (its uuid as the broker's ACL checked it), or ``Dropped``."""
    match = TOPIC.match(topic)
    try:
        device_uuid = uuid_lib.UUID(match[1]) if match else None
    except ValueError:
        device_uuid = None
    if device_uuid is None or match is None or str(device_uuid) != match[1].lower():
        raise Dropped("bad_topic", f"topic {topic[:200]!r} is not iot/device/<uuid>/state")
    return device_uuid


def _message_report(
    *, device_uuid: uuid_lib.UUID, device: Device | None, payload: bytes, received_us: int
) -> Report | RepeatedReport:
    """The message's report, validated as the PATCH validates it, stamped with its receipt; or ``Dropped``."""
    if len(payload) > settings.SENSORSYNC_MAX_REPORT_BYTES:
        raise Dropped("too_large", f"{len(payload)} bytes, over SENSORSYNC_MAX_REPORT_BYTES")
    if device is None:
        raise Dropped("unknown_device", f"no device {device_uuid}")
    if not device.is_active:
        raise Dropped("device_inactive", f"device {device_uuid} is deactivated")
    if getattr(device, "mqtt_key_digest", None) != device.api_key_digest:  # annotated by the selector
        # Published before a key rotation revoked the device's MQTT credentials: as a PATCH with a rotated key.
        raise Dropped("credentials_revoked", f"device {device_uuid} holds no MQTT credentials under its current key")
    current = device.current_state_or_none()
    stored = StoredReport(current.digest, current.parts) if current else None
    try:
        report = reports_parse(json_parse(payload), device_uuid=device.uuid, stored=stored)
    except ProtocolError as exc:
        reason = "foreign" if exc.status == 403 else exc.reason
        raise Dropped(reason, f"device {device_uuid}: {exc.message}") from exc
    return dataclasses.replace(report, clocks={**report.clocks, "received_at": received_us})


def message_apply(*, topic: str, payload: bytes, received_us: int) -> str:
    """Apply one MQTT report as the PATCH would; its outcome (applied, unchanged, stale, queued), or ``Dropped``.
    Database errors propagate (the caller retries those that say the database is unavailable)."""
    device_uuid = _topic_device_uuid(topic)
    if len(payload) > settings.SENSORSYNC_MAX_REPORT_BYTES:  # before any query
        raise Dropped("too_large", f"{len(payload)} bytes, over SENSORSYNC_MAX_REPORT_BYTES")
    device = device_for_mqtt_report(uuid=device_uuid)
    report = _message_report(device_uuid=device_uuid, device=device, payload=payload, received_us=received_us)
    assert device is not None  # _message_report dropped it otherwise
    try:
        verdict = reports.state_report_apply(device=device, report=report)
    except Device.DoesNotExist as exc:
        raise Dropped("unknown_device", f"device {device_uuid} was deleted") from exc
    except DeviceAccessRevoked as exc:
        raise Dropped(exc.code, f"device {device_uuid}: {exc.message}") from exc
    except DataError as exc:
        raise Dropped("invalid_value", f"device {device_uuid}: a value cannot be stored ({exc})") from exc
    return str(verdict.outcome)


def messages_apply(messages: list[tuple[str, bytes, int]]) -> list[str | Dropped | None]:
    """Apply a batch of MQTT reports ((topic, payload, received_us), in their order of receipt) in a few statements:
    one lookup of every device they name, and for the reports that repeat their device's stored report (a steady
    fleet's nearly all: unchanged, or new metrics) one write for all (``reports.repeated_reports_touch``). Per
    message: its outcome, its ``Dropped``, or None for one to be applied alone with ``message_apply``, after the
    batch's writes and in order: a changed report, a device's second message in the batch, a repeat that met
    another writer. Database errors propagate (the caller then applies each message alone)."""
    results: list[str | Dropped | None] = [None] * len(messages)
    named: dict[int, uuid_lib.UUID] = {}
    for index, (topic, payload, _received_us) in enumerate(messages):
        try:
            named[index] = _topic_device_uuid(topic)
            if len(payload) > settings.SENSORSYNC_MAX_REPORT_BYTES:
                raise Dropped("too_large", f"{len(payload)} bytes, over SENSORSYNC_MAX_REPORT_BYTES")
        except Dropped as exc:
            named.pop(index, None)
            results[index] = exc
    devices = devices_for_mqtt_reports(uuids=set(named.values())) if named else {}
    seen: set[uuid_lib.UUID] = set()
    repeats: list[tuple[Device, RepeatedReport]] = []
    repeat_indexes: list[int] = []
    for index, device_uuid in named.items():
        if device_uuid in seen:
            continue  # the device's later messages go alone, after this one is written
        seen.add(device_uuid)
        _topic, payload, received_us = messages[index]
        device = devices.get(device_uuid)
        try:
            report = _message_report(device_uuid=device_uuid, device=device, payload=payload, received_us=received_us)
        except Dropped as exc:
            results[index] = exc
            continue
        if isinstance(report, RepeatedReport) and device is not None:
            repeats.append((device, report))
            repeat_indexes.append(index)
    if repeats:
        for index, outcome in zip(repeat_indexes, reports.repeated_reports_touch(repeats), strict=True):
            results[index] = None if outcome is None else str(outcome)
    return results


@dataclass
class Delivery:
    generation: int
    topic: str
    payload: bytes
    mid: int
    qos: int
    digest: bytes  # of topic and payload: with ``mid``, the message's key in the receipt journal
    received_us: int
    received_at: float  # monotonic, for the lag


class Ingestor:
    """Connects, subscribes, applies and acknowledges until ``stop`` is set (SIGTERM, SIGINT)."""

    def __init__(
        self,
        *,
        url: str,
        username: str,
        password: str,
        client_id: str,
        journal_dir: Path,
        receive_maximum: int = 32,
        session_expiry: int = 86_400,
        converge_interval: float = 60.0,
        batch_size: int = 32,
        batch_wait: float = 0.05,
    ) -> None:
        self.address = BrokerAddress.parse(url)
        self.client_id = client_id
        self.receive_maximum = receive_maximum
        self.converge_interval = converge_interval
        self.batch_size = max(1, batch_size)  # messages applied together, of those the client has buffered
        # How long a batch waits for more after its first message: a steady fleet's reports arrive one by one, and
        # a batch of one costs a lookup, a write and a commit of its own. The receipt time is taken on arrival, so
        # waiting delays only the acknowledgement and the write, by at most this.
        self.batch_wait = max(0.0, batch_wait)
        # The broker should send at most receive_maximum unacknowledged messages per connection; Mosquitto 2.0.11
        # sends more once some are acknowledged (2.0.13 reworked its "inflight quota"). Then this queue fills, the
        # network thread waits to put the next one, and TCP holds the rest back in the broker: memory stays bounded.
        # The deliveries of an older connection are dropped here (the broker redelivers them).
        self.deliveries: queue.Queue[Delivery] = queue.Queue(maxsize=receive_maximum * 4)
        # Raises JournalLocked when a worker with this client id already runs here. What it must remember is what
        # the worker received and has not acknowledged: the queue, the message in hand and the one the network
        # thread waits to put, of this connection and the one before.
        self.journal = ReceiptJournal(journal_path(journal_dir, client_id), capacity=2 * (self.deliveries.maxsize + 2))
        self.stop_event = threading.Event()
        self.generation = 0
        self.connected_us = 0
        self.processed = 0
        self.retiring = False
        self.left_at: float | None = None  # when the broker confirmed this worker left the shared subscription
        self.retired = False
        self._lock = threading.Lock()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,
        )
        client.username_pw_set(username, password)
        if self.address.tls:
            client.tls_set()
        # Back quickly after a broker restart: Mosquitto 2.0 does not restore shared subscriptions from its
        # persistence file, so until a worker subscribes again the broker accepts reports that nobody receives.
        client.reconnect_delay_set(min_delay=1, max_delay=2)
        client.enable_logger(logging.getLogger("sensorsync.mqtt.client"))  # paho's own lines, at DEBUG
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        self.client = client
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry
        properties.ReceiveMaximum = receive_maximum
        self.connect_properties = properties

    # Network thread -------------------------------------------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: object,
    ) -> None:
        if reason_code.is_failure:
            logger.error("mqtt broker %s refused worker %s: %s", self.address.host, self.client_id, reason_code)
            return
        with self._lock:
            self.generation += 1
            self.connected_us = now_us()
        if not flags.session_present:
            self.journal.clear()  # a new session: nothing of the old one comes back, and packet ids start over
        logger.info(
            "mqtt worker %s connected to %s:%s (session present: %s)",
            self.client_id,
            self.address.host,
            self.address.port,
            flags.session_present,
        )
        if self.retiring:
            client.unsubscribe(SHARED_SUBSCRIPTION)
        else:
            client.subscribe(SHARED_SUBSCRIPTION, qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list[ReasonCode], properties: object
    ) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            logger.error("mqtt worker %s may not subscribe to %s: %s", self.client_id, SHARED_SUBSCRIPTION, failed)

    def _on_unsubscribe(
        self, client: mqtt.Client, userdata: object, mid: int, reason_codes: list[ReasonCode], properties: object
    ) -> None:
        logger.info("mqtt worker %s left %s", self.client_id, SHARED_SUBSCRIPTION)
        self.left_at = time.monotonic()

    def _on_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, reason_code: ReasonCode, properties: object
    ) -> None:
        if not self.stop_event.is_set():
            logger.warning("mqtt worker %s disconnected (%s); reconnecting", self.client_id, reason_code)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            generation, connected_us = self.generation, self.connected_us
        payload = bytes(message.payload)
        digest = message_digest(message.topic, payload)
        received_us = now_us()
        if message.qos > 0:  # a QoS 0 message is never redelivered (and has no packet id)
            first = self.journal.first_receipt(mid=message.mid, digest=digest)
            if first is not None:
                REDELIVERIES.labels("journal").inc()
                logger.info(
                    "mqtt message redelivered topic=%s packet=%d: stamped with its first receipt, %.1f s ago",
                    message.topic,
                    message.mid,
                    (received_us - first) / 1e6,
                )
                received_us = first
            elif message.dup:
                # Received before this connection started, by this process or one that died: no later than that.
                REDELIVERIES.labels("unknown").inc()
                logger.warning(
                    "mqtt message redelivered topic=%s packet=%d: not in the receipt journal, stamped with the "
                    "start of this connection",
                    message.topic,
                    message.mid,
                )
                received_us = connected_us
            # Before the message is handed on: a kill from here on finds its first receipt in the file.
            self.journal.receive(mid=message.mid, digest=digest, received_us=received_us)
        delivery = Delivery(
            generation=generation,
            topic=message.topic,
            payload=payload,
            mid=message.mid,
            qos=message.qos,
            digest=digest,
            received_us=received_us,
            received_at=time.monotonic(),
        )
        IN_FLIGHT.inc()
        self.deliveries.put(delivery)

    # Main thread ----------------------------------------------------------------------------------------------

    def _current(self, delivery: Delivery) -> bool:
        with self._lock:
            return delivery.generation == self.generation

    def _ack(self, delivery: Delivery) -> None:
        IN_FLIGHT.dec()
        if delivery.qos > 0 and self._current(delivery):
            self.client.ack(delivery.mid, delivery.qos)
            self.journal.acknowledge(mid=delivery.mid, digest=delivery.digest)

    def _settle(self, delivery: Delivery) -> bool:
        """Apply one delivery alone, retrying while the database is unavailable: True once it is to be
        acknowledged (applied or dropped); False if it must not be (its connection is gone, or stopping)."""
        backoff = BACKOFF_FIRST
        while True:
            if not self._current(delivery):
                # Its connection is gone: the broker redelivers it on the new one; acknowledging it here could
                # acknowledge another message with the same packet id.
                IN_FLIGHT.dec()
                return False
            started = time.perf_counter()
            try:
                close_old_connections()
                outcome = message_apply(
                    topic=delivery.topic, payload=delivery.payload, received_us=delivery.received_us
                )
            except Dropped as exc:
                self._dropped(delivery, exc)
                return True
            except (DatabaseError, InterfaceError) as exc:
                if not database_unavailable(exc):
                    logger.exception("mqtt message dropped reason=database_refused topic=%s", delivery.topic)
                    MESSAGES.labels("dropped").inc()
                    DROPPED.labels("database_refused").inc()
                    return True
                DATABASE_RETRIES.inc()
                logger.warning("database unavailable (%s); message not acknowledged, retry in %.1f s", exc, backoff)
                with contextlib.suppress(DatabaseError):
                    connection.close()
                if self.stop_event.wait(backoff):
                    IN_FLIGHT.dec()
                    return False  # stopping: not acknowledged, so the broker redelivers it
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            except Exception:  # a bug must not stop ingestion, nor make the broker redeliver the message for ever
                logger.exception("mqtt message dropped reason=error topic=%s", delivery.topic)
                MESSAGES.labels("dropped").inc()
                DROPPED.labels("error").inc()
                return True
            self._applied(delivery, outcome, time.perf_counter() - started)
            return True

    def _dropped(self, delivery: Delivery, exc: Dropped) -> None:
        MESSAGES.labels("dropped").inc()
        DROPPED.labels(exc.reason).inc()
        logger.warning("mqtt message dropped reason=%s topic=%s: %s", exc.reason, delivery.topic, exc.detail)

    def _applied(self, delivery: Delivery, outcome: str, seconds: float) -> None:
        MESSAGES.labels(outcome).inc()
        PROCESSING_SECONDS.observe(seconds)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("mqtt message %s topic=%s", outcome, delivery.topic)

    def _done(self, delivery: Delivery) -> None:
        self._ack(delivery)
        self.processed += 1
        LAG_SECONDS.observe(time.monotonic() - delivery.received_at)

    def _batch_apply(self, deliveries: list[Delivery]) -> list[str | Dropped | None]:
        try:
            close_old_connections()
            return messages_apply([(d.topic, d.payload, d.received_us) for d in deliveries])
        except Exception as exc:
            if not isinstance(exc, (DatabaseError, InterfaceError)) or not database_unavailable(exc):
                logger.exception("mqtt batch of %d failed; applying its messages one by one", len(deliveries))
            return [None] * len(deliveries)

    def _process_batch(self, batch: list[Delivery]) -> None:
        """Apply what the client had buffered in a few statements (``messages_apply``), the messages it leaves
        over alone (``_settle``), then acknowledge, in the order they were received, every one that is done.
        A batch the database fails (or any error) is applied message by message instead, with their retries."""
        current = []
        for delivery in batch:
            if self._current(delivery):
                current.append(delivery)
            else:
                IN_FLIGHT.dec()  # its connection is gone: the broker redelivers it
        if not current:
            return
        started = time.perf_counter()
        results = self._batch_apply(current)
        share = (time.perf_counter() - started) / len(current)
        settled = []
        for delivery, result in zip(current, results, strict=True):
            if result is None:
                if not self._settle(delivery):
                    continue
            elif isinstance(result, Dropped):
                self._dropped(delivery, result)
            else:
                self._applied(delivery, result, share)
            settled.append(delivery)
        for delivery in settled:
            self._done(delivery)

    def _converge(self) -> None:
        from .services import mqtt_access_converge, mqtt_enabled

        if not mqtt_enabled():
            return
        try:
            close_old_connections()
            mqtt_access_converge()
        except (BrokerUnreachable, DynsecError, DatabaseError, InterfaceError) as exc:
            logger.warning("mqtt access convergence skipped: %s", exc)

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop_event.set())

    def _drained(self, last_message_at: float) -> bool:
        """Retiring: out of the shared subscription, and nothing more came for a while (the broker sends what it
        holds for this client as fast as it is acknowledged)."""
        return self.left_at is not None and time.monotonic() - max(self.left_at, last_message_at) >= RETIRE_QUIET

    def run(self, *, max_messages: int | None = None, retire: bool = False) -> None:
        """Ingest until stopped. With ``retire``: leave the shared subscription instead of joining it, apply what
        the broker still holds for this client id, then end its session on the broker (``retired``): a stopped
        worker's session stays a member and takes its share of the reports until it expires, and they with it."""
        self.retiring = retire
        self.client.connect_async(
            self.address.host,
            self.address.port,
            keepalive=30,
            clean_start=False,
            properties=self.connect_properties,
        )
        self.client.loop_start()
        converging = self.converge_interval and not retire
        next_converge = time.monotonic() + min(self.converge_interval, 5.0) if converging else None
        last_message_at = time.monotonic()
        try:
            while not self.stop_event.is_set():
                if max_messages is not None and self.processed >= max_messages:
                    break
                if next_converge is not None and time.monotonic() >= next_converge:
                    self._converge()
                    next_converge = time.monotonic() + self.converge_interval
                try:
                    delivery = self.deliveries.get(timeout=0.2)
                except queue.Empty:
                    if retire and self._drained(last_message_at):
                        self.retired = True
                        break
                    continue
                batch = [delivery]
                room = self.batch_size if max_messages is None else min(self.batch_size, max_messages - self.processed)
                fill_until = time.monotonic() + self.batch_wait
                while len(batch) < room:
                    wait = fill_until - time.monotonic()
                    try:
                        batch.append(self.deliveries.get(timeout=wait) if wait > 0 else self.deliveries.get_nowait())
                    except queue.Empty:
                        break
                self._process_batch(batch)
                last_message_at = time.monotonic()
        finally:
            self._disconnect()

    def _disconnect(self) -> None:
        if self.retired:
            ended = Properties(PacketTypes.DISCONNECT)
            ended.SessionExpiryInterval = 0  # the broker forgets the session now
            self.client.disconnect(properties=ended)
        else:
            self.client.disconnect()  # the session, and every message not acknowledged, stays for this client id
        self.client.loop_stop()
        self.journal.close(discard=self.retired)
        connection.close()
        outcome = "retired (its session ended)" if self.retired else "stopped"
        logger.info("mqtt worker %s %s after %d messages", self.client_id, outcome, self.processed)


def default_client_id(index: int) -> str:
    return f"sensorsync-ingest-{socket.gethostname()}-{index}"
