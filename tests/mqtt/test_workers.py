"""Ingestion workers as real processes (``manage.py mqtt_ingest``) against the test database (PostgreSQL), sharing
one subscription on the project's broker: they share the load, and a worker killed mid-stream, a broker restart or
a database outage loses no report."""

import re
import threading
import time

import psycopg
import pytest
from django.db import connection

from devices.models import DeviceCurrentState

from .support import device_connect, mqtt_device, publish, report, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


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
    wait_until(devices.all_landed, timeout=60, message=f"not every last report landed: {_markers(devices.devices)}")
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
            while not stop.is_set():
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
    wait_until(devices.all_landed, timeout=90, message=f"lost reports: {_markers(devices.devices)} != {devices.sent}")
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

    # And the running worker reconnects by itself after another restart. (Mosquitto 2.0 does not restore shared
    # subscriptions from its persistence file: a report published before a worker subscribes again is lost, which
    # is why the workers retry every 2 s at most; README, "MQTT".)
    connects = worker.log().count("connected to")
    broker.stop()
    time.sleep(0.5)
    broker.start()
    wait_until(lambda: worker.log().count("connected to") > connects, timeout=10, message=worker.log()[-2000:])
    time.sleep(0.3)  # its SUBSCRIBE
    devices = fleet(0)
    devices.devices = [mqtt_device("after-restart")]
    devices.clients = {d.uuid: device_connect(broker, d) for d in devices.devices}
    devices.sent = dict.fromkeys(devices.clients, 0)
    devices.publish_round()
    wait_until(devices.all_landed, timeout=60, message=f"the worker did not come back:\n{worker.log()[-2000:]}")


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
    wait_until(devices.all_landed, timeout=60, message=f"not resumed:\n{worker.log()[-2000:]}")
    assert worker.stop() == 0
