"""The delivery worker (``manage.py deliver_webhooks --once``) against a real HTTP receiver on loopback: signed POSTs,
retries with backoff, timeouts, redirects refused, attempts recorded, and the latest shown on the endpoint."""

import io
import random
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from reconciliation.services.sensors import sensor_create
from tests.factories import SensorPayloadFactory
from tests.servers import free_port
from webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from webhooks.services import webhook_deliveries_prune, webhook_endpoint_update, webhook_retry_delay

from .conftest import endpoint_for
from .receiver import Answer, Receiver

pytestmark = pytest.mark.django_db

DRIFT = "device.config_drift"


def deliver() -> str:
    out = io.StringIO()
    call_command("deliver_webhooks", "--once", stdout=out)
    return out.getvalue()


def drift_starts(device, user) -> None:
    """A staff edit that makes the device drift: one ``device.config_drift`` that starts an episode."""
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(), user=user)


def attempts_of(delivery) -> list[tuple]:
    return list(
        WebhookDeliveryAttempt.objects.filter(delivery=delivery)
        .order_by("number")
        .values_list("number", "status_code", "error", "result")
    )


def test_a_delivery_is_posted_signed_and_marked_delivered(device, superuser, receiver, fast_retries):
    endpoint, secret = endpoint_for(receiver.url)
    drift_starts(device, superuser)

    assert "attempts: delivered 1, retrying 0, failed 0" in deliver()

    (received,) = receiver.received
    delivery = WebhookDelivery.objects.get()
    assert received.path == "/hooks/sensorsync"
    assert received.verifies(secret)
    assert not received.verifies("whsec_someone-else")
    assert received.json == delivery.payload
    assert received.json["type"] == DRIFT and received.json["data"]["episode_started"] is True
    assert received.headers["Content-Type"] == "application/json"
    assert received.headers["X-SensorSync-Event"] == DRIFT
    assert received.delivery == str(delivery.uuid)
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.next_attempt_at) == (
        "delivered",
        1,
        200,
        None,
    )
    assert delivery.finished_at is not None
    assert attempts_of(delivery) == [(1, 200, "", "delivered")]
    endpoint.refresh_from_db()
    assert (endpoint.last_attempt_result, endpoint.last_status_code, endpoint.last_error) == ("delivered", 200, "")
    assert "attempts: delivered 0" in deliver()  # nothing is sent twice
    assert len(receiver.received) == 1


def test_a_500_then_a_200_is_retried_and_delivered(device, superuser, fast_retries):
    with Receiver(Answer(500, body=b"database is down"), Answer(200)) as receiver:
        _, secret = endpoint_for(receiver.url)
        drift_starts(device, superuser)
        assert "attempts: delivered 1, retrying 1, failed 0" in deliver()

    first, second = receiver.received
    assert first.delivery == second.delivery  # the same delivery, attempted twice
    assert first.json == second.json
    assert first.verifies(secret) and second.verifies(secret)
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert attempts_of(delivery) == [(1, 500, "HTTP 500", "retrying"), (2, 200, "", "delivered")]
    assert WebhookDeliveryAttempt.objects.get(number=1).response_excerpt == "database is down"


def test_a_failed_attempt_waits_with_backoff_before_the_next(device, superuser, settings):
    settings.SENSORSYNC_WEBHOOK_BACKOFF_SECONDS = 60
    with Receiver(Answer(503)) as receiver:
        endpoint_for(receiver.url)
        drift_starts(device, superuser)
        before = timezone.now()
        assert "retrying 1" in deliver()
        assert "attempts: delivered 0, retrying 0" in deliver()  # not due yet: nothing is sent

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 503)
    assert before + timedelta(seconds=47) < delivery.next_attempt_at < timezone.now() + timedelta(seconds=73)
    assert len(receiver.received) == 1


def test_backoff_doubles_up_to_its_cap_with_jitter(settings):
    settings.SENSORSYNC_WEBHOOK_BACKOFF_SECONDS = 10
    settings.SENSORSYNC_WEBHOOK_BACKOFF_MAX_SECONDS = 3600
    rng = random.Random(7)
    delays = [webhook_retry_delay(attempt, rng=rng).total_seconds() for attempt in range(1, 12)]
    for attempt, delay in enumerate(delays, start=1):
        nominal = min(10 * 2 ** (attempt - 1), 3600)
        assert 0.8 * nominal <= delay <= 1.2 * nominal
    assert len({round(d / min(10 * 2**i, 3600), 3) for i, d in enumerate(delays)}) > 1  # jittered, not fixed


def test_a_slow_receiver_times_out_and_is_retried(device, superuser, fast_retries, settings):
    settings.SENSORSYNC_WEBHOOK_TIMEOUT_SECONDS = 0.3
    with Receiver(Answer(200, delay=3.0), Answer(200)) as receiver:
        endpoint_for(receiver.url)
        drift_starts(device, superuser)
        assert "attempts: delivered 1, retrying 1, failed 0" in deliver()

    delivery = WebhookDelivery.objects.get()
    assert attempts_of(delivery) == [(1, None, "no answer within 0.3 s", "retrying"), (2, 200, "", "delivered")]
    assert WebhookDeliveryAttempt.objects.get(number=1).duration_ms < 2500  # it did not wait for the slow answer
    assert len(receiver.received) == 2


def test_a_dead_endpoint_ends_failed_after_the_last_attempt(device, superuser, fast_retries):
    endpoint, _ = endpoint_for(f"http://127.0.0.1:{free_port()}/nobody-listens")
    drift_starts(device, superuser)

    assert "attempts: delivered 0, retrying 2, failed 1" in deliver()

    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("failed", 3, None)
    assert [(n, code, result) for n, code, _error, result in attempts_of(delivery)] == [
        (1, None, "retrying"),
        (2, None, "retrying"),
        (3, None, "failed"),
    ]
    assert "ConnectionRefusedError" in delivery.last_error
    endpoint.refresh_from_db()
    assert endpoint.last_attempt_result == "failed" and "ConnectionRefusedError" in endpoint.last_error
    assert "attempts: delivered 0, retrying 0, failed 0" in deliver()  # given up: never sent again


def test_a_redirect_is_not_followed(device, superuser, fast_retries):
    with (
        Receiver(default=Answer(200)) as elsewhere,
        Receiver(default=Answer(307, headers={"Location": "http://127.0.0.1:1/elsewhere"})) as receiver,
    ):
        endpoint_for(receiver.url)
        drift_starts(device, superuser)
        deliver()

    assert len(receiver.received) == 3 and elsewhere.received == []
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "failed"
    assert delivery.last_error == "HTTP 307: redirects are not followed (Location: http://127.0.0.1:1/elsewhere)"


def test_nothing_is_sent_for_a_rolled_back_transaction(device, superuser, receiver, fast_retries):
    endpoint_for(receiver.url)
    with pytest.raises(RuntimeError), transaction.atomic():
        drift_starts(device, superuser)
        raise RuntimeError("the unit of work failed after the event")

    assert "attempts: delivered 0, retrying 0, failed 0" in deliver()
    assert receiver.received == [] and not WebhookDelivery.objects.exists()


def test_an_inactive_endpoint_is_sent_nothing_until_active_again(device, superuser, receiver, fast_retries):
    endpoint, _ = endpoint_for(receiver.url)
    drift_starts(device, superuser)  # queued while active
    webhook_endpoint_update(uuid=endpoint.uuid, user=superuser, is_active=False)

    deliver()
    assert receiver.received == []
    assert WebhookDelivery.objects.get().status == "pending"

    webhook_endpoint_update(uuid=endpoint.uuid, user=superuser, is_active=True)
    deliver()
    assert len(receiver.received) == 1
    assert WebhookDelivery.objects.get().status == "delivered"


def test_a_rotated_secret_signs_every_later_attempt(device, superuser, fast_retries):
    from webhooks.services import webhook_endpoint_secret_rotate

    with Receiver(default=Answer(200)) as receiver:
        endpoint, old = endpoint_for(receiver.url)
        drift_starts(device, superuser)
        new = webhook_endpoint_secret_rotate(uuid=endpoint.uuid, user=superuser).secret
        deliver()

    (received,) = receiver.received
    assert received.verifies(new) and not received.verifies(old)
    assert WebhookEndpoint.objects.get().secret == new


def test_finished_deliveries_are_pruned_after_the_retention(device, superuser, receiver, fast_retries):
    endpoint_for(receiver.url)
    drift_starts(device, superuser)
    deliver()
    pending_one = WebhookDelivery.objects.create(
        endpoint=WebhookEndpoint.objects.get(),
        event_id="9b0f2f4e-9a43-4c55-9d0b-2f3e7a9c1d44",
        event_type=DRIFT,
        aggregate_id=str(device.uuid),
        payload={},
        next_attempt_at=timezone.now() + timedelta(days=1),
    )
    WebhookDelivery.objects.filter(status="delivered").update(finished_at=timezone.now() - timedelta(days=31))

    assert webhook_deliveries_prune(days=30) == 1
    assert list(WebhookDelivery.objects.values_list("pk", flat=True)) == [pending_one.pk]
    assert not WebhookDeliveryAttempt.objects.exists()


def test_metrics_show_the_backlog_and_the_attempts(client, device, superuser, fast_retries):
    def scraped(name: str) -> float:
        text = client.get("/metrics").content.decode()
        (line,) = [line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
        return float(line.rsplit(" ", 1)[1])

    delivered_before = scraped('sensorsync_webhook_attempts_total{result="delivered"}')
    endpoint_for(f"http://127.0.0.1:{free_port()}/nobody")
    drift_starts(device, superuser)
    assert scraped('sensorsync_webhook_deliveries{status="pending"}') == 1
    assert scraped("sensorsync_webhook_oldest_due_seconds") >= 0

    with Receiver() as receiver:
        WebhookEndpoint.objects.update(url=receiver.url)
        deliver()

    assert scraped('sensorsync_webhook_deliveries{status="pending"}') == 0
    assert scraped('sensorsync_webhook_deliveries{status="delivered"}') == 1
    assert scraped('sensorsync_webhook_attempts_total{result="delivered"}') == delivered_before + 1
    assert scraped("sensorsync_webhook_oldest_due_seconds") == 0
