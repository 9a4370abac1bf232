"""The webhook endpoints and deliveries of the management API: the secret shown once, every bad field a 400 naming it
with nothing written, deliveries listed with their attempts, constant query counts."""

import io

import pytest
from django.core.management import call_command

from events.models import Event
from reconciliation.services.sensors import sensor_create
from tests.factories import DeviceFactory, SensorPayloadFactory, UserFactory
from tests.helpers import API, assert_error, write_snapshot
from webhooks.models import WebhookDelivery, WebhookEndpoint

from .conftest import endpoint_for
from .receiver import Answer, Receiver

pytestmark = pytest.mark.django_db

ENDPOINTS = f"{API}/webhook-endpoints"
DELIVERIES = f"{API}/webhook-deliveries"
VALID = {"name": "pager", "url": "https://hooks.example.com/sensorsync?team=ops", "eventTypes": ["device.in_sync"]}


def test_create_shows_the_secret_once_and_never_again(admin_client, superuser):
    response = admin_client.post(ENDPOINTS, VALID, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["secret"].startswith("whsec_")
    assert response["Location"] == f"/api/v1/webhook-endpoints/{body['uuid']}"
    assert {k: body[k] for k in ("name", "url", "eventTypes", "isActive", "createdBy")} == {
        **VALID,
        "isActive": True,
        "createdBy": superuser.username,
    }
    assert (body["pendingDeliveries"], body["lastAttemptResult"], body["lastAttemptAt"]) == (0, "", None)
    assert WebhookEndpoint.objects.get(uuid=body["uuid"]).secret == body["secret"]
    for shown in (admin_client.get(f"{ENDPOINTS}/{body['uuid']}"), admin_client.get(ENDPOINTS)):
        assert shown.status_code == 200 and body["secret"] not in shown.content.decode()
    (created,) = Event.objects.filter(type="webhook_endpoint.created", aggregate_id=body["uuid"])
    assert created.aggregate_type == "webhook_endpoint" and body["secret"] not in str(created.data)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"url": "ftp://hooks.example.com/x"}, "url"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "https://"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/x"}, "url"),
        ({"url": "https://hooks.example.com/x#frag"}, "url"),
        ({"url": "https://hooks.example.com:99999/x"}, "url"),
        ({"url": "https://hooks.example.com/a b"}, "url"),
        ({"url": "https://bücher.example/x"}, "url"),
        ({"url": "https://example.com/" + "x" * 2100}, "url"),
        ({"url": 42}, "url"),
        ({"eventTypes": []}, "eventTypes"),
        ({"eventTypes": ["device.registered"]}, "eventTypes"),
        ({"eventTypes": "device.in_sync"}, "eventTypes"),
        ({"eventTypes": [1]}, "eventTypes"),
        ({"name": "   "}, "name"),
        ({"name": "a\x07b"}, "name"),
        ({"isActive": "yes"}, "isActive"),
        ({"secret": "mine"}, "secret"),
    ],
)
def test_a_bad_field_is_a_400_naming_it_and_nothing_is_written(admin_client, changes, field):
    before = write_snapshot()

    response = admin_client.post(ENDPOINTS, {**VALID, **changes}, format="json")

    assert_error(response, 400, "validation_error", fields=[field])
    assert write_snapshot() == before and not WebhookEndpoint.objects.exists()


def test_update_rotate_and_delete(admin_client, superuser):
    endpoint, secret = endpoint_for("http://127.0.0.1:9/a")
    url = f"{ENDPOINTS}/{endpoint.uuid}"

    patched = admin_client.patch(
        url, {"isActive": False, "eventTypes": ["device.in_sync", "device.config_drift"]}, format="json"
    )
    assert patched.status_code == 200, patched.content
    # Stored in the registry's order, each once.
    assert (patched.json()["isActive"], patched.json()["eventTypes"]) == (
        False,
        ["device.config_drift", "device.in_sync"],
    )
    assert_error(admin_client.put(url, {"name": "x"}, format="json"), 400, "validation_error", fields=["url"])
    put = admin_client.put(url, VALID, format="json")
    assert put.status_code == 200 and put.json()["isActive"] is True  # PUT: what it leaves out is the default

    rotated = admin_client.post(f"{url}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_") and rotated.json()["secret"] != secret
    assert WebhookEndpoint.objects.get().secret == rotated.json()["secret"]

    assert admin_client.delete(url).status_code == 204
    assert not WebhookEndpoint.objects.exists()
    assert_error(admin_client.get(url), 404, "not_found")
    assert list(
        Event.objects.filter(aggregate_id=str(endpoint.uuid)).order_by("sequence").values_list("sequence", "type")
    ) == [
        (1, "webhook_endpoint.created"),
        (2, "webhook_endpoint.updated"),
        (3, "webhook_endpoint.updated"),
        (4, "webhook_endpoint.secret_rotated"),
        (5, "webhook_endpoint.deleted"),
    ]


def test_the_event_types_an_endpoint_may_subscribe_to(admin_client):
    response = admin_client.get(f"{ENDPOINTS}/event-types")

    assert response.status_code == 200
    assert [entry["name"] for entry in response.json()] == [
        "device.config_drift",
        "device.in_sync",
        "device.retry_budget_exhausted",
        "rollout.stage_started",
        "rollout.paused",
        "rollout.resumed",
        "rollout.aborted",
        "rollout.finished",
    ]


def test_a_reader_may_not_write_or_rotate(api_client):
    endpoint, _ = endpoint_for("http://127.0.0.1:9/a")
    api_client.force_authenticate(UserFactory(permissions=["webhooks.view_webhookendpoint"]))

    assert api_client.get(ENDPOINTS).status_code == 200
    assert_error(api_client.post(ENDPOINTS, VALID, format="json"), 403, "permission_denied")
    assert_error(api_client.post(f"{ENDPOINTS}/{endpoint.uuid}/rotate-secret"), 403, "permission_denied")
    assert_error(api_client.get(DELIVERIES), 403, "permission_denied")  # deliveries need their own permission


def test_deliveries_with_their_attempts_filters_and_constant_queries(
    admin_client, superuser, settings, django_assert_num_queries
):
    settings.SENSORSYNC_WEBHOOK_BACKOFF_SECONDS = 0
    with Receiver(Answer(500), default=Answer(204)) as receiver:
        endpoint, _ = endpoint_for(receiver.url)
        devices = [DeviceFactory() for _ in range(6)]
        for device in devices:
            sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(), user=superuser)
        call_command("deliver_webhooks", "--once", stdout=io.StringIO())
    assert WebhookDelivery.objects.filter(status="delivered").count() == 6

    with django_assert_num_queries(1):
        listed = admin_client.get(DELIVERIES, {"limit": 100}).json()["results"]
    assert len(listed) == 6
    assert {row["endpoint"] for row in listed} == {str(endpoint.uuid)}
    assert {row["status"] for row in listed} == {"delivered"}
    assert sorted(row["attempts"] for row in listed) == [1, 1, 1, 1, 1, 2]
    for name in ("quiet one", "quiet two"):
        endpoint_for("http://127.0.0.1:9/x", name=name, user=superuser)
    with django_assert_num_queries(2):  # the count, the page (creators and pending deliveries joined in)
        endpoints = admin_client.get(ENDPOINTS).json()["results"]
    assert [(e["name"], e["lastAttemptResult"], e["lastStatusCode"], e["createdBy"]) for e in endpoints] == [
        ("ops alerts", "delivered", 204, None),
        ("quiet one", "", None, "admin"),
        ("quiet two", "", None, "admin"),
    ]

    first = WebhookDelivery.objects.get(attempts=2)
    by_device = admin_client.get(DELIVERIES, {"device": str(first.aggregate_id).upper()}).json()["results"]
    assert [row["uuid"] for row in by_device] == [str(first.uuid)]
    assert admin_client.get(DELIVERIES, {"status": "failed"}).json()["results"] == []
    assert len(admin_client.get(DELIVERIES, {"endpoint": str(endpoint.uuid)}).json()["results"]) == 6
    assert_error(admin_client.get(DELIVERIES, {"status": "lost"}), 400, "validation_error", fields=["status"])

    detail = admin_client.get(f"{DELIVERIES}/{first.uuid}").json()
    assert detail["payload"]["id"] == str(first.event_id)
    assert [(a["number"], a["statusCode"], a["result"]) for a in detail["attemptLog"]] == [
        (1, 500, "retrying"),
        (2, 204, "delivered"),
    ]
