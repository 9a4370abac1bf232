"""Ingestion workers as real processes (``manage.py mqtt_ingest``) against the test database (PostgreSQL), sharing
one subscription on the project's broker: they share the load, and a worker killed mid-stream, a broker restart or
a database outage loses no report; a message redelivered after its worker was killed keeps its place in its
device's order."""

import contextlib
import re
import threading
import time

import orjson
import psycopg
import pytest
from django.db import connection

from devices.models import Device, DeviceCurrentState

from .support import agent_connect, device_connect, mqtt_device, publish, report, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# Between two rounds of reports of a streaming fleet: steady, and not faster than two workers apply them on a busy
# machine (a backlog of thousands would only make the tests wait for it).
ROUND_PAUSE = 0.05


def _markers(devices) -> dict[str, int | None]:
    stored = dict(
        DeviceCurrentState.objects.filter(device_id__in=[d.device.pk for d in devices]).values_list(
            "device__uuid", "apps"
        )
    )
    return {d.uuid: (stored.get(d.device.uuid) or {}).get("marker") for d in devices}


def _processed(worker) -> int:
    found = re.findall(r"stopped after (\d+) messages", worker.log())
    assert found, f"no final line in the worker's log:\n{worker.log()[-3000:]}"
    return int(found[-1])


class Fleet:
    """Devices connected as agents, each publishing numbered reports (marker 1, 2, ...) at QoS 1."""

    def __init__(self, broker, count: int) -> None:
        self.broker = broker
        self.devices = [mqtt_device(f"fleet-{n}") for n in range(count)]
        self.clients = {d.uuid: device_connect(broker, d) for d in self.devices}
        self.sent = dict.fromkeys(self.clients, 0)

    def publish_round(self) -> None:
        for device in self.devices:
            marker = self.sent[device.uuid] + 1
            code = publish(self.clients[device.uuid], device.topic, report(device, marker=marker))
            assert not code.is_failure, code
            self.sent[device.uuid] = marker

    def all_landed(self) -> bool:
        return _markers(self.devices) == self.sent

    def close(self) -> None:
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()


class Agents:
    """Devices connected as the agent connects (MQTT 3.1.1, clean session), back within 0.1 s of losing the broker,
    publishing numbered reports in turn from a thread until stopped. A report counts as sent once the broker
    acknowledged it; one it did not (the broker went away) is published again once the device is back, as the
    agent would send it over HTTP instead."""

    def __init__(self, broker, count: int) -> None:
        self.devices = [mqtt_device(f"agent-{n}") for n in range(count)]
        self.clients = {
            d.uuid: agent_connect(broker.url, username=d.uuid, password=d.password, reconnect_delay=0.1)
            for d in self.devices
        }
        self.sent = dict.fromkeys(self.clients, 0)
        self.acks: dict = {}
        self.acked = threading.Condition()
        for client in self.clients.values():
            client.on_publish = self._on_publish
        self.stop = threading.Event()
        self.errors: list = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.acked:
            self.acks[(client, mid)] = reason_code
            self.acked.notify_all()

    def _published(self, device) -> bool:
        client = self.clients[device.uuid]
        if not client.is_connected():
            return False
        info = client.publish(device.topic, orjson.dumps(report(device, marker=self.sent[device.uuid] + 1)), qos=1)
        with self.acked:
            if not self.acked.wait_for(lambda: (client, info.mid) in self.acks, timeout=2.0):
                return False
            return not self.acks.pop((client, info.mid)).is_failure

    def _run(self) -> None:
        try:
            while not self.stop.wait(ROUND_PAUSE):
                for device in self.devices:
                    while not self._published(device):
                        if self.stop.wait(0.05):
                            return
                    self.sent[device.uuid] += 1
                    if self.stop.is_set():
                        return
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def __enter__(self) -> "Agents":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        for client in self.clients.values():
            client.disconnect()
            client.loop_stop()

    def landed(self) -> bool:
        return _markers(self.devices) == self.sent


@pytest.fixture
def fleet(broker):
    made = []

    def make(count: int) -> Fleet:
        made.append(Fleet(broker, count))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_two_workers_share_the_subscription_and_every_last_report_lands(broker, fleet, worker_processes):
    workers = [worker_processes(1), worker_processes(2)]
    devices = fleet(10)
    for _ in range(6):
        devices.publish_round()
    wait_until(
        devices.all_landed, timeout=60, message=lambda: f"not every last report landed: {_markers(devices.devices)}"
    )
    for worker in workers:
        assert worker.stop() == 0
    shares = [_processed(worker) for worker in workers]
    assert sum(shares) == 60 and all(share > 0 for share in shares), shares


def test_a_worker_killed_mid_stream_loses_nothing(broker, fleet, worker_processes):
    first, second = worker_processes(1), worker_processes(2)
    devices = fleet(12)
    stop = threading.Event()
    errors: list = []

    def stream():
        try:
            while not stop.wait(ROUND_PAUSE):
                devices.publish_round()
        except BaseException as exc:  # reported below
            errors.append(exc)

    publisher = threading.Thread(target=stream, daemon=True)
    publisher.start()
    time.sleep(1.5)
    first.kill()  # SIGKILL, with messages in flight
    time.sleep(1.0)
    restarted = worker_processes(1)  # the same client id: its session holds what it had not acknowledged
    time.sleep(1.5)
    stop.set()
    publisher.join(timeout=30)
    assert not errors, errors
    assert sum(devices.sent.values()) > 100
    wait_until(
        devices.all_landed, timeout=90, message=lambda: f"lost reports: {_markers(devices.devices)} != {devices.sent}"
    )
    assert "session present: True" in restarted.log()
    assert second.stop() == 0 and restarted.stop() == 0


def test_a_broker_restart_and_a_worker_away_lose_nothing(broker, fleet, worker_processes):
    worker = worker_processes(1)
    devices = fleet(4)
    devices.publish_round()
    wait_until(devices.all_landed, timeout=30)

    # The worker stopped: the broker keeps its share in its persistent session.
    assert worker.stop() == 0
    devices.publish_round()
    time.sleep(0.5)
    assert not devices.all_landed()

    # The broker restarted (a clean stop saves its store): the queued reports survive it.
    devices.close()
    broker.stop()
    broker.start()
    worker = worker_processes(1)
    wait_until(devices.all_landed, timeout=30, message="reports queued before the restart were lost")

    # And the running worker reconnects by itself after another restart (within 2 s: what devices publish
    # meanwhile waits in its session, the next test).
    connects = worker.log().count("connected to")
    broker.stop()
    time.sleep(0.5)
    broker.start()
    wait_until(lambda: worker.log().count("connected to") > connects, timeout=10, message=lambda: worker.log()[-2000:])
    devices = fleet(0)
    devices.devices = [mqtt_device("after-restart")]
    devices.clients = {d.uuid: device_connect(broker, d) for d in devices.devices}
    devices.sent = dict.fromkeys(devices.clients, 0)
    devices.publish_round()
    wait_until(devices.all_landed, timeout=60, message=lambda: f"the worker did not come back:\n{worker.log()[-2000:]}")


def test_reports_published_after_a_broker_restart_wait_for_the_worker_that_is_not_back_yet(broker, worker_processes):
    """Mosquitto 2.0 does not keep the workers' shared subscription across a restart: without it, what devices
    publish before a worker subscribes again is acknowledged to them and dropped, and the agent never sends it
    again. The broker's runner writes it back before the start (ingest.persistence)."""
    worker = worker_processes(1)
    with Agents(broker, 6) as agents:
        wait_until(
            lambda: min(agents.sent.values()) >= 3, message=lambda: f"the agents do not publish: {agents.errors}"
        )
        worker.freeze()  # a worker slower to come back than the devices, whatever the machine's pace
        broker.stop()
        broker.start()
        assert broker.restored == [worker.client_id]
        # The agents are back within 0.1 s and keep publishing, while no worker is connected.
        published = dict(agents.sent)
        wait_until(
            lambda: all(agents.sent[uuid] >= count + 3 for uuid, count in published.items()),
            message=lambda: f"the agents did not publish after the restart: {agents.errors}",
        )
    assert not agents.errors, agents.errors
    assert not agents.landed()
    worker.thaw()
    wait_until(agents.landed, timeout=60, message=lambda: f"lost reports: {_markers(agents.devices)} != {agents.sent}")
    assert "session present: True" in worker.log()
    assert worker.stop() == 0


def test_after_a_broker_restart_every_worker_session_is_a_member_of_the_shared_subscription_again(
    broker, fleet, worker_processes
):
    workers = [worker_processes(1), worker_processes(2)]
    devices = fleet(8)
    devices.publish_round()
    wait_until(devices.all_landed, timeout=30)
    for worker in workers:
        worker.freeze()
    devices.close()
    broker.stop()
    broker.start()
    assert sorted(broker.restored) == sorted(worker.client_id for worker in workers)

    # One report per device while both workers are away: the broker shares them out between their sessions.
    devices.clients = {d.uuid: device_connect(broker, d) for d in devices.devices}
    devices.publish_round()
    for worker in workers:
        worker.thaw()
    wait_until(
        devices.all_landed, timeout=60, message=lambda: f"lost reports: {_markers(devices.devices)} != {devices.sent}"
    )
    shares = []
    for worker in workers:
        assert worker.stop() == 0
        shares.append(_processed(worker))
    assert all(share > 0 for share in shares) and sum(shares) >= 16, shares


def test_a_retired_worker_leaves_no_share_of_the_reports_behind(broker, fleet, worker_processes):
    """A stopped worker's session stays a member of the shared subscription: the broker keeps queueing its share of
    the reports there until the session expires, and then drops them. Retiring the worker applies that share and
    ends the session."""
    first, second = worker_processes(1), worker_processes(2)
    devices = fleet(6)
    devices.publish_round()
    wait_until(devices.all_landed, timeout=30)
    assert second.stop() == 0
    devices.publish_round()  # the broker shares them out: half wait in the stopped worker's session
    time.sleep(1.0)
    assert not devices.all_landed()

    retired = second.retire()
    assert retired.returncode == 0, retired.stderr[-3000:]
    applied = re.search(rf"{second.client_id} retired: (\d+) messages applied, session ended", retired.stdout)
    assert applied and int(applied[1]) >= 3, retired.stdout  # its share of the round (and any it held)
    assert devices.all_landed()
    assert not list(second.journal_dir.glob(f"{second.client_id}.*"))
    devices.publish_round()  # worker 1 takes them all now
    wait_until(devices.all_landed, timeout=30, message=lambda: f"lost: {_markers(devices.devices)} != {devices.sent}")

    assert first.stop() == 0
    devices.close()
    broker.stop()
    broker.start()
    assert broker.restored == [first.client_id]  # the retired session is gone


@contextlib.contextmanager
def _row_locked(device):
    """The device's row locked by a transaction of the test's own (every report of it waits), on a connection
    that also sees and ends the workers' database sessions."""
    db = connection.settings_dict
    admin = psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"])
    try:
        admin.execute("SELECT id FROM devices_device WHERE id = %s FOR UPDATE", [device.device.pk])
        yield admin
    finally:
        admin.rollback()
        admin.close()


def _waiting_workers(admin, count: int) -> list[str]:
    """The workers (by application name) whose database session waits for the row lock, once there are ``count``."""
    found: list[str] = []

    def waiting() -> bool:
        admin.execute("SELECT pg_stat_clear_snapshot()")  # else the transaction sees its first snapshot for ever
        rows = admin.execute(
            "SELECT application_name FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND application_name LIKE 'mqtt-ingest-%' ORDER BY application_name"
        )
        found[:] = [row[0] for row in rows]
        return len(found) == count

    wait_until(waiting, timeout=30, message=lambda: f"{count} worker(s) should wait for the lock, found {found}")
    return found


def test_a_message_redelivered_after_its_worker_was_killed_keeps_its_first_receipt(broker, worker_processes):
    """W1 received M1 of a device and died before acknowledging it; W2 then received and applied M2. When W1 comes
    back, the broker redelivers M1: stamped with the time W1 first received it (its receipt journal), it is older
    than M2 and stale, instead of overwriting it."""

    def env(number: int) -> dict:
        return {
            "PGAPPNAME": f"mqtt-ingest-{number}",  # tells the workers' database sessions apart
            "DJANGO_DB_STATEMENT_TIMEOUT_MS": "120000",
            "DJANGO_LOG_LEVEL": "DEBUG",  # each message's outcome
        }

    workers = {number: worker_processes(number, extra_env=env(number)) for number in (1, 2)}
    device = mqtt_device("redelivered")
    client = device_connect(broker, device)
    with _row_locked(device) as admin:
        assert not publish(client, device.topic, report(device, marker=1)).is_failure
        (holds_m1,) = _waiting_workers(admin, 1)
        assert not publish(client, device.topic, report(device, marker=2)).is_failure  # to the other worker
        _waiting_workers(admin, 2)
        first = workers[int(holds_m1.rsplit("-", 1)[1])]
        first.kill()  # SIGKILL: M1 received, not acknowledged
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", [holds_m1])
    wait_until(lambda: _markers([device]) == {device.uuid: 2}, message="the other worker did not apply M2")
    m2_stamp = Device.objects.get(pk=device.device.pk).last_report_received_us

    log_before = len(first.log())
    restarted = worker_processes(first.worker, extra_env=env(first.worker))
    outcome = re.compile(r"mqtt message (applied|unchanged|stale|queued|dropped)")
    wait_until(lambda: outcome.search(restarted.log()[log_before:]), message=restarted.log()[log_before:][-3000:])
    client.disconnect()
    after = restarted.log()[log_before:]
    assert _markers([device]) == {device.uuid: 2}, after[-3000:]
    assert "mqtt message stale" in after
    assert Device.objects.get(pk=device.device.pk).last_report_received_us == m2_stamp
    assert "session present: True" in after
    assert re.search(r"mqtt message redelivered .*stamped with its first receipt", after), after[-3000:]


def test_a_database_outage_stops_acknowledging_and_the_worker_resumes_by_itself(broker, fleet, worker_processes):
    worker = worker_processes(1)
    devices = fleet(3)
    devices.publish_round()
    wait_until(devices.all_landed, timeout=30)

    # The outage, for the worker: its connections cut and no new one accepted (this test's connection stays).
    db = connection.settings_dict
    admin = psycopg.connect(
        host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432, user=db["USER"], dbname="postgres", autocommit=True
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own_pid = cursor.fetchone()[0]
    try:
        admin.execute(f'ALTER DATABASE "{db["NAME"]}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
            [db["NAME"], own_pid],
        )
        devices.publish_round()
        wait_until(lambda: "database unavailable" in worker.log(), timeout=30, message=worker.log()[-2000:])
        time.sleep(2.0)
        assert worker.process.poll() is None  # still running, not acknowledging, retrying
        assert not devices.all_landed()
    finally:
        admin.execute(f'ALTER DATABASE "{db["NAME"]}" ALLOW_CONNECTIONS true')
        admin.close()
    wait_until(devices.all_landed, timeout=60, message=lambda: f"not resumed:\n{worker.log()[-2000:]}")
    assert worker.stop() == 0
