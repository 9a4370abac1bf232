"""The workers' shared subscription written back into Mosquitto's persistence file before the broker starts
(``ingest.persistence``): for which sessions, and what a file it cannot read does. Through the real broker:
``test_workers.py`` (restarts) and the first test here."""

import logging
import struct
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from django.core.management import CommandError, call_command
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest.broker import SHARED_SUBSCRIPTION, worker_subscriptions_restore
from ingest.dynsec import BrokerAddress
from ingest.persistence import (
    MAGIC,
    PERSISTENCE_FILE,
    PersistenceUnreadable,
    persisted_state,
    shared_subscriptions_restore,
)

from .support import device_connect, mqtt_device, publish, report, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

NOW = 1_800_000_000


def _chunk(kind: int, body: bytes) -> bytes:
    return struct.pack(">II", kind, len(body)) + body


def _client(client_id: str, username: str, expires_at: int) -> bytes:
    cid, user = client_id.encode(), username.encode()
    fixed = struct.pack("=q", expires_at) + struct.pack(">IHHHH4x", 86_400, 0, len(cid), 1883, len(user))
    return _chunk(6, fixed + cid + user)


def _subscription(client_id: str, topic: str) -> bytes:
    cid, filter_ = client_id.encode(), topic.encode()
    return _chunk(5, struct.pack(">IHHBB2x", 0, len(cid), len(filter_), 1, 0) + cid + filter_)


def _file(tmp_path, *chunks: bytes, version: int = 6):
    path = tmp_path / PERSISTENCE_FILE
    config = _chunk(1, struct.pack(">QBB6x", 42, 1, 8))
    message = _chunk(2, b"\x00" * 57)  # a stored message: skipped unread
    path.write_bytes(MAGIC + struct.pack(">II", 0, version) + config + message + b"".join(chunks))
    path.chmod(0o600)
    return path


def _worker_connect(broker, on_message=None) -> mqtt.Client:
    """A worker's session: the ingestion account, clean start off, kept a minute after it disconnects."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ingest-probe", protocol=mqtt.MQTTv5)
    client.username_pw_set(broker.admin_username, broker.admin_password)
    client.on_message = on_message  # before the CONNACK, after which what waits in the session arrives
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 60
    address = BrokerAddress.parse(broker.url)
    client.connect(address.host, address.port, clean_start=False, properties=properties)
    client.loop_start()
    assert connected.wait(5)
    return client


def test_a_worker_session_saved_by_the_broker_gets_its_shared_subscription_back(broker):
    """With the broker's own file: the session of a worker (the ingestion account, clean start off) is restored
    with the shared subscription, and what a device publishes before the worker is back waits for it."""
    worker = _worker_connect(broker)
    subscribed = threading.Event()
    worker.on_subscribe = lambda *args: subscribed.set()
    worker.subscribe(SHARED_SUBSCRIPTION, qos=1)
    assert subscribed.wait(5)
    worker.disconnect()
    worker.loop_stop()
    device = mqtt_device()

    broker.stop()
    sessions, _ = persisted_state(broker.data_dir / PERSISTENCE_FILE)
    assert [(s.client_id, s.username) for s in sessions] == [("ingest-probe", broker.admin_username)]
    broker.start()
    assert broker.restored == ["ingest-probe"]

    client = device_connect(broker, device)
    assert not publish(client, device.topic, report(device, marker=1)).is_failure
    client.disconnect()
    received = []
    worker = _worker_connect(broker, on_message=lambda client, userdata, message: received.append(message.topic))
    wait_until(lambda: received == [device.topic], timeout=10, message=lambda: f"received {received}")
    worker.disconnect()
    worker.loop_stop()
    broker.stop()
    _, subscriptions = persisted_state(broker.data_dir / PERSISTENCE_FILE)
    assert ("ingest-probe", SHARED_SUBSCRIPTION) not in subscriptions  # Mosquitto 2.0 never saves it itself


def test_only_the_unexpired_sessions_of_the_ingestion_account_without_it_get_it(tmp_path):
    path = _file(
        tmp_path,
        _client("connected-when-saved", "sensorsync-admin", 0),
        _client("away-for-a-while", "sensorsync-admin", NOW + 60),
        _client("retired", "sensorsync-admin", NOW - 1),
        _client("someone-else", "other", 0),
        _client("has-it-already", "sensorsync-admin", 0),
        _subscription("has-it-already", SHARED_SUBSCRIPTION),
    )
    before = path.read_bytes()
    restored = shared_subscriptions_restore(
        data_dir=tmp_path, username="sensorsync-admin", topic=SHARED_SUBSCRIPTION, now=NOW
    )
    assert restored == ["connected-when-saved", "away-for-a-while"]
    after = path.read_bytes()
    assert after.startswith(before)  # appended, nothing else touched
    assert after[len(before) :] == _subscription("connected-when-saved", SHARED_SUBSCRIPTION) + _subscription(
        "away-for-a-while", SHARED_SUBSCRIPTION
    )
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [PERSISTENCE_FILE]
    # Once there, never twice.
    again = shared_subscriptions_restore(
        data_dir=tmp_path, username="sensorsync-admin", topic=SHARED_SUBSCRIPTION, now=NOW
    )
    assert again == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda path: path.write_bytes(b"\x00\xb5\x00not a mosquitto db" + bytes(16)),
        lambda path: path.write_bytes(path.read_bytes()[:-3]),  # ends inside a chunk
        lambda path: path.write_bytes(path.read_bytes() + b"\x00\x00"),  # ends inside a chunk header
        lambda path: path.write_bytes(path.read_bytes().replace(struct.pack(">II", 0, 6), struct.pack(">II", 0, 7))),
    ],
    ids=["not-a-persistence-file", "truncated-chunk", "truncated-header", "unknown-version"],
)
def test_a_file_it_cannot_read_is_left_alone_and_said_so(tmp_path, settings, caplog, damage):
    path = _file(tmp_path, _client("connected-when-saved", "sensorsync-admin", 0))
    damage(path)
    before = path.read_bytes()
    with pytest.raises(PersistenceUnreadable):
        shared_subscriptions_restore(data_dir=tmp_path, username="sensorsync-admin", topic=SHARED_SUBSCRIPTION)

    with caplog.at_level(logging.WARNING, logger="sensorsync.mqtt"):
        assert worker_subscriptions_restore(data_dir=tmp_path, username="sensorsync-admin") == []
    assert "shared subscriptions not restored" in caplog.text and "are lost" in caplog.text

    settings.SENSORSYNC_MQTT_ADMIN_USERNAME = "sensorsync-admin"
    with pytest.raises(CommandError, match="shared subscriptions not restored"):
        call_command("mqtt_broker", "--restore-subscriptions", "--data-dir", str(tmp_path))
    assert path.read_bytes() == before


def test_the_command_restores_them_for_a_broker_started_otherwise(tmp_path, settings, capsys):
    settings.SENSORSYNC_MQTT_ADMIN_USERNAME = "sensorsync-admin"
    call_command("mqtt_broker", "--restore-subscriptions", "--data-dir", str(tmp_path))  # no file yet: nothing to do
    assert "for 0 worker session(s)" in capsys.readouterr().out

    away = int(time.time()) + 60
    _file(tmp_path, _client("worker-1", "sensorsync-admin", 0), _client("worker-2", "sensorsync-admin", away))
    call_command("mqtt_broker", "--restore-subscriptions", "--data-dir", str(tmp_path))
    assert "for 2 worker session(s): ['worker-1', 'worker-2']" in capsys.readouterr().out
    _, subscriptions = persisted_state(tmp_path / PERSISTENCE_FILE)
    assert subscriptions == {("worker-1", SHARED_SUBSCRIPTION), ("worker-2", SHARED_SUBSCRIPTION)}
