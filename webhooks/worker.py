"""The delivery worker (``manage.py deliver_webhooks``): sends the outbox's pending deliveries, one POST at a time.

Each round claims a batch of due deliveries for a lease (``services.webhook_deliveries_claim``: one worker per row,
SKIP LOCKED on PostgreSQL), POSTs each outside any transaction, and records each attempt as it ends. So any number of
workers may run at once, on any machines; a worker killed mid-batch leaves its claimed rows to the others once the
lease ends (delivery is at least once: a receiver deduplicates on the delivery's event id). SIGTERM or SIGINT stops
it after the POST in hand, giving the rest of its batch back at once.
"""

import contextlib
import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType

from django.conf import settings
from django.db import DatabaseError, InterfaceError, connection
from django.utils import timezone

from .choices import WebhookAttemptResultChoices
from .metrics import ATTEMPT_SECONDS, ATTEMPTS
from .models import WebhookDelivery
from .services import (
    webhook_attempt_record,
    webhook_deliveries_claim,
    webhook_deliveries_prune,
    webhook_deliveries_release,
    webhook_request,
)
from .transport import webhook_post

logger = logging.getLogger("sensorsync.webhooks")

PRUNE_EVERY_SECONDS = 3600.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0


@dataclass
class WorkerTotals:
    """What a run did, by the result of each attempt."""

    attempts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WebhookAttemptResultChoices.values, 0))
    pruned: int = 0

    def summary(self) -> str:
        done = ", ".join(f"{result} {count}" for result, count in self.attempts.items())
        return f"attempts: {done}; old deliveries deleted: {self.pruned}"


class DeliveryWorker:
    def __init__(self, *, batch: int = 20, idle_seconds: float = 1.0, name: str | None = None) -> None:
        self.batch = batch
        self.idle_seconds = idle_seconds
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        # A batch is attempted one POST after another: its lease covers every one timing out, and a margin.
        self.lease_seconds = batch * settings.SENSORSYNC_WEBHOOK_TIMEOUT_SECONDS + 60.0
        self.stopping = threading.Event()
        self.totals = WorkerTotals()
        self._pruned_at: float | None = None

    @contextlib.contextmanager
    def signals_stop_it(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop the worker gracefully while inside; the previous handlers come back after."""
        previous = {signum: signal.signal(signum, self._stop) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        logger.info("deliver_webhooks %s stopping (signal %d)", self.name, signum)
        self.stopping.set()

    def run(self, *, once: bool = False) -> WorkerTotals:
        """Until stopped; with ``once``, until nothing is due (then old deliveries are pruned, and it returns).
        Without ``once``, a database outage is waited out (backoff up to 30 s, on a new connection each time); with
        it, it ends the run."""
        failures = 0
        while not self.stopping.is_set():
            try:
                handled = self.round()
                if not once:
                    self._prune_when_due()
            except (DatabaseError, InterfaceError):
                if once:
                    raise
                failures += 1
                delay = min(BACKOFF_FIRST * 2 ** (failures - 1), BACKOFF_MAX)
                logger.exception("deliver_webhooks %s: database error; retrying in %.1f s", self.name, delay)
                connection.close()
                self.stopping.wait(delay)
                continue
            failures = 0
            if handled == 0:
                if once:
                    break
                self.stopping.wait(self.idle_seconds)
        if once and not self.stopping.is_set():
            self._prune()
        return self.totals

    def round(self) -> int:
        """Claim a batch and attempt each delivery of it; how many were claimed."""
        claim = f"{self.name}:{uuid.uuid4().hex[:12]}"[-64:]
        deliveries = webhook_deliveries_claim(claim=claim, limit=self.batch, lease_seconds=self.lease_seconds)
        for index, delivery in enumerate(deliveries):
            if self.stopping.is_set():
                webhook_deliveries_release(ids=[d.pk for d in deliveries[index:]], claim=claim)
                break
            self.attempt(delivery, claim=claim)
        return len(deliveries)

    def attempt(self, delivery: WebhookDelivery, *, claim: str) -> str | None:
        body, headers = webhook_request(delivery)
        started_at = timezone.now()
        result = webhook_post(
            delivery.endpoint.url, body=body, headers=headers, timeout=settings.SENSORSYNC_WEBHOOK_TIMEOUT_SECONDS
        )
        ATTEMPT_SECONDS.observe(result.duration_ms / 1000)
        outcome = webhook_attempt_record(delivery=delivery, claim=claim, started_at=started_at, result=result)
        if outcome is None:
            return None
        ATTEMPTS.labels(outcome).inc()
        self.totals.attempts[outcome] += 1
        logger.info(
            "webhook attempt delivery=%s endpoint=%s event=%s result=%s status=%s duration_ms=%d error=%s",
            delivery.uuid,
            delivery.endpoint.uuid,
            delivery.event_type,
            outcome,
            result.status_code,
            result.duration_ms,
            result.error or "-",
        )
        return outcome

    def _prune_when_due(self) -> None:
        now = timezone.now().timestamp()
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY_SECONDS:
            self._pruned_at = now
            self._prune()

    def _prune(self) -> None:
        if settings.SENSORSYNC_WEBHOOK_RETENTION_DAYS > 0:
            self.totals.pruned += webhook_deliveries_prune(days=settings.SENSORSYNC_WEBHOOK_RETENTION_DAYS)
