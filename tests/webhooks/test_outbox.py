"""The outbox: a delivery row per (webhook-worthy event, subscribed active endpoint), written in the transaction
that appends the event (``webhooks.services.webhook_deliveries_enqueue``, an event sink), and nothing else on the
agent's hot paths."""

import pytest
from django.db import transaction

from events.models import Event
from reconciliation.models import DriftEpisode
from reconciliation.services.sensors import sensor_create
from tests.factories import DeviceFactory, SensorPayloadFactory
from tests.helpers import add_sensor, report, sensor_payload, target_sensors, verdict
from webhooks.models import WebhookDelivery, WebhookEndpoint
from webhooks.selectors import webhook_subscribed_types
from webhooks.services import webhook_endpoint_delete, webhook_endpoint_update

from .conftest import endpoint_for

pytestmark = pytest.mark.django_db

DRIFT, IN_SYNC = "device.config_drift", "device.in_sync"
NOWHERE = "http://127.0.0.1:9/hooks"
SAVEPOINTS = 2  # the test transaction's SAVEPOINT + RELEASE around the endpoint's atomic block
CONVERGING_REPORT = 8  # tests/agent/test_query_counts.py: a report that converges the device, episode closed


def _queued() -> list[tuple[str, str]]:
    return list(WebhookDelivery.objects.order_by("id").values_list("event_type", "endpoint__name"))


def test_drift_start_and_end_queue_one_delivery_each_however_many_reports(admin_client, agent, device):
    endpoint_for(NOWHERE)
    add_sensor(admin_client, device, sensor_payload("a"))  # drift starts: a is pending
    add_sensor(admin_client, device, sensor_payload("b", protocol="can", connection={"interface": "can0"}))
    running = target_sensors(device)
    verdict(report(agent, device, 3, running, seq=1), device)  # drift ends
    verdict(report(agent, device, 3, running[:1], seq=2), device)  # b stops: drift starts again
    verdict(report(agent, device, 3, [], seq=3), device)  # a stops too: the drifting set changes, no webhook
    verdict(report(agent, device, 3, [], seq=4, health={"a": {"healthy": False, "lastError": "e"}}), device)
    verdict(report(agent, device, 3, running, seq=5), device)  # drift ends

    assert _queued() == [(DRIFT, "ops alerts"), (IN_SYNC, "ops alerts"), (DRIFT, "ops alerts"), (IN_SYNC, "ops alerts")]
    episodes = list(DriftEpisode.objects.filter(device=device).order_by("id").values_list("id", flat=True))
    assert len(episodes) == 2
    deliveries = list(WebhookDelivery.objects.order_by("id"))
    assert [d.payload["data"]["episode"] for d in deliveries] == [episodes[0], episodes[0], episodes[1], episodes[1]]
    # Each delivery carries its event: its id (the receivers' idempotency key), type, time and data.
    for delivery in deliveries:
        event = Event.objects.get(event_id=delivery.event_id)
        assert delivery.payload == {
            "id": str(event.event_id),
            "type": event.type,
            "createdAt": event.created_at.isoformat(),
            "aggregateType": "device",
            "aggregateId": str(device.uuid),
            "device": {"uuid": str(device.uuid)},
            "data": event.data,
        }
        assert (delivery.status, delivery.attempts, delivery.aggregate_id) == ("pending", 0, str(device.uuid))
    assert deliveries[2].payload["data"]["drifting_sensors"] == [
        {"name": "b", "status": "failed", "error": "Not running on the device although enabled in target version 3."}
    ]


def test_each_subscribed_active_endpoint_gets_its_own_delivery(admin_client, device):
    endpoint_for(NOWHERE, DRIFT, name="drift only")
    endpoint_for(NOWHERE, IN_SYNC, name="in-sync only")
    inactive, _ = endpoint_for(NOWHERE, DRIFT, name="switched off")
    webhook_endpoint_update(uuid=inactive.uuid, user=None, is_active=False)

    add_sensor(admin_client, device, sensor_payload("a"))

    assert _queued() == [(DRIFT, "drift only")]


def test_a_rolled_back_unit_of_work_queues_nothing(device, superuser):
    endpoint_for(NOWHERE)
    with pytest.raises(RuntimeError), transaction.atomic():
        sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="a"), user=superuser)
        assert _queued() == [(DRIFT, "ops alerts")]  # queued with the event, in its transaction
        raise RuntimeError("the request failed after the write")

    assert _queued() == []
    assert not Event.objects.filter(aggregate_id=str(device.uuid), type=DRIFT).exists()


def test_a_deleted_endpoint_takes_its_deliveries_and_gets_no_more(admin_client, agent, device):
    endpoint, _ = endpoint_for(NOWHERE)
    add_sensor(admin_client, device, sensor_payload("a"))
    assert len(_queued()) == 1

    webhook_endpoint_delete(uuid=endpoint.uuid, user=None)
    assert _queued() == []  # its delivery went with it
    verdict(report(agent, device, 2, [], seq=1), device)  # the drifting set changes
    verdict(report(agent, device, 2, target_sensors(device), seq=2), device)  # drift ends: nobody to tell

    assert _queued() == []
    assert Event.objects.filter(type="webhook_endpoint.deleted", aggregate_id=str(endpoint.uuid)).exists()


def test_an_endpoint_saved_by_another_process_is_seen_once_this_process_reads_again(admin_client, device, settings):
    add_sensor(admin_client, device, sensor_payload("a"))  # this process reads the subscriptions: none
    assert webhook_subscribed_types() == frozenset()
    # Saved elsewhere: this process was not told, and trusts its read for SENSORSYNC_..._TTL_SECONDS.
    WebhookEndpoint.objects.create(name="elsewhere", url=NOWHERE, secret="whsec_x", event_types=[DRIFT])
    add_sensor(admin_client, DeviceFactory(), sensor_payload("a"))  # drift starts on another device
    assert _queued() == []

    settings.SENSORSYNC_WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS = 0  # the read has expired
    add_sensor(admin_client, DeviceFactory(), sensor_payload("a"))

    assert _queued() == [(DRIFT, "elsewhere")]


def test_the_hot_paths_pay_for_webhooks_only_when_one_is_due(agent, admin_client, device, django_assert_num_queries):
    add_sensor(admin_client, device, sensor_payload("a"))  # drift starts; the subscriptions are read (none)
    running = target_sensors(device)

    # Nobody subscribes: a converging report costs what it always did.
    with django_assert_num_queries(CONVERGING_REPORT + SAVEPOINTS):
        assert verdict(report(agent, device, 2, running, seq=1), device)["inSync"]

    endpoint_for(NOWHERE)  # saved in this process: the next webhook-worthy event reads the subscriptions again
    # An unchanged report appends nothing: still the one SELECT.
    with django_assert_num_queries(1):
        assert verdict(report(agent, device, 2, running), device)["outcome"] == "unchanged"

    # Drift starts with a subscriber: + the subscriptions' read, the endpoints (live, share-locked), the INSERT.
    with django_assert_num_queries(CONVERGING_REPORT + 3 + SAVEPOINTS):
        verdict(report(agent, device, 2, [], seq=2), device)
    # Drift ends: the subscriptions are fresh now; + the endpoints and the INSERT.
    with django_assert_num_queries(CONVERGING_REPORT + 2 + SAVEPOINTS):
        verdict(report(agent, device, 2, running, seq=3), device)

    assert [t for t, _ in _queued()] == [DRIFT, IN_SYNC]
