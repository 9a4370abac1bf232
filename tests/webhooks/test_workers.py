"""Delivery workers as real processes (``manage.py deliver_webhooks``) against the test database (PostgreSQL), POSTing
to a real receiver on loopback: two at once never send one delivery twice, and SIGTERM stops one gracefully."""

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings

from tests.servers import database_url
from webhooks.models import WebhookDelivery, WebhookEndpoint

from .conftest import endpoint_for
from .receiver import Answer, Receiver

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


class WorkerProcess:
    def __init__(self, log_dir: Path, index: int, *args: str) -> None:
        self.log_path = log_dir / f"deliver-webhooks-{index}.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SENSORSYNC_", "PYTEST"))},
            "DATABASE_URL": database_url(),
            "DJANGO_SETTINGS_MODULE": "sensorsync_project.settings",
            "DJANGO_SECRET_KEY": "webhooks-test-secret-key-not-for-production-0123456789abcdef",
            "DJANGO_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed with the process)
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "deliver_webhooks", "--interval", "0.1", *args],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: "sending (SIGTERM stops it)" in self.output() or self.process.poll() is not None)
        assert self.process.poll() is None, self.output()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


def wait_until(predicate, *, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def queue(endpoint: WebhookEndpoint, count: int) -> None:
    """``count`` deliveries as the outbox queues them (one per event), due now."""
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            endpoint=endpoint,
            event_id=uuid.uuid4(),
            event_type="device.config_drift",
            aggregate_id=str(uuid.uuid4()),
            payload={"n": n},
        )
        for n in range(count)
    )


def test_two_workers_share_the_outbox_and_never_send_one_delivery_twice(tmp_path):
    with Receiver(default=Answer(200, delay=0.002)) as receiver:
        endpoint, secret = endpoint_for(receiver.url)
        workers = [WorkerProcess(tmp_path, index, "--batch", "5") for index in (1, 2)]
        try:
            queue(endpoint, 300)
            wait_until(lambda: not WebhookDelivery.objects.exclude(status="delivered").exists())
            codes = [worker.stop() for worker in workers]
        finally:
            for worker in workers:
                worker.stop()

    assert codes == [0, 0], [w.output()[-2000:] for w in workers]
    sent = Counter(received.delivery for received in receiver.received)
    assert len(sent) == 300 and set(sent.values()) == {1}
    assert all(received.verifies(secret) for received in receiver.received)
    assert set(WebhookDelivery.objects.values_list("attempts", flat=True)) == {1}
    per_worker = [w.output().count("webhook attempt") for w in workers]
    assert sum(per_worker) == 300 and min(per_worker) > 0, per_worker  # both took part


def test_sigterm_finishes_the_post_in_hand_and_gives_the_rest_back(tmp_path):
    with Receiver(default=Answer(200, delay=1.0)) as receiver:
        endpoint, _ = endpoint_for(receiver.url)
        worker = WorkerProcess(tmp_path, 1, "--batch", "10")
        queue(endpoint, 10)
        wait_until(lambda: len(receiver.received) == 1)  # the first POST is in the receiver's hands
        assert worker.stop() == 0, worker.output()

        delivered = WebhookDelivery.objects.filter(status="delivered")
        assert delivered.count() == 1  # the POST in hand was answered and recorded
        rest = WebhookDelivery.objects.filter(status="pending")
        assert rest.count() == 9
        assert not rest.exclude(locked_until=None).exists()  # given back: no lease to wait out
        assert "stopping (signal 15)" in worker.output()

        second = WorkerProcess(tmp_path, 2)
        wait_until(lambda: not WebhookDelivery.objects.filter(status="pending").exists())
        assert second.stop() == 0

    assert len(receiver.received) == 10
