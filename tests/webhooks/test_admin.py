"""Webhooks in the admin (Django's test client; the browser walk-through is tests/browser): every write a service
call, the secret shown once, deliveries read only, an endpoint deleted with its deliveries."""

import io

import pytest
from django.core.management import call_command

from events.models import Event
from reconciliation.services.sensors import sensor_create
from tests.factories import DeviceFactory, SensorPayloadFactory, UserFactory
from webhooks.models import WebhookDelivery, WebhookEndpoint

from .conftest import endpoint_for
from .receiver import Answer, Receiver

pytestmark = pytest.mark.django_db

ENDPOINTS = "/admin/webhooks/webhookendpoint/"
DELIVERIES = "/admin/webhooks/webhookdelivery/"


@pytest.fixture
def delivered(superuser, settings):
    """An endpoint with one delivery that took two attempts (a 502, then a 200)."""
    settings.SENSORSYNC_WEBHOOK_BACKOFF_SECONDS = 0
    with Receiver(Answer(502, body=b"bad gateway"), default=Answer(200)) as receiver:
        endpoint, _ = endpoint_for(receiver.url, name="pager")
        sensor_create(device_uuid=DeviceFactory().uuid, data=SensorPayloadFactory(), user=superuser)
        call_command("deliver_webhooks", "--once", stdout=io.StringIO())
    return endpoint


def test_the_lists_and_pages_show_what_came_of_the_deliveries(admin_browser, delivered):
    listed = admin_browser.get(ENDPOINTS).content.decode()
    assert "pager" in listed and "Delivered" in listed and delivered.secret not in listed

    page = admin_browser.get(f"{ENDPOINTS}{delivered.pk}/change/").content.decode()
    assert "Latest 20 deliveries" in page and "device.config_drift" in page
    assert delivered.secret not in page

    delivery = WebhookDelivery.objects.get()
    assert "Delivered" in admin_browser.get(DELIVERIES).content.decode()
    detail = admin_browser.get(f"{DELIVERIES}{delivery.pk}/change/").content.decode()
    assert "HTTP 502" in detail and "bad gateway" in detail and "Failed, to be retried" in detail
    assert str(delivery.event_id) in detail
    assert admin_browser.get(f"{DELIVERIES}add/").status_code == 403  # written by the outbox alone


def test_a_bad_url_is_shown_on_the_form_and_nothing_is_written(admin_browser):
    response = admin_browser.post(
        f"{ENDPOINTS}add/",
        {
            "name": "x",
            "url": "https://user:pw@hooks.example.com/",
            "event_types": ["device.in_sync"],
            "is_active": "on",
        },
    )

    assert response.status_code == 200
    assert "Must not carry credentials" in response.content.decode()
    assert not WebhookEndpoint.objects.exists() and not Event.objects.filter(type__startswith="webhook").exists()


def test_rotate_and_delete_from_the_list(admin_browser, delivered):
    rotated = admin_browser.post(
        ENDPOINTS, {"action": "rotate_secret", "_selected_action": [delivered.pk]}, follow=True
    ).content.decode()
    new = WebhookEndpoint.objects.get().secret
    assert new != delivered.secret and new in rotated and "shown only this once" in rotated

    confirm = admin_browser.post(ENDPOINTS, {"action": "delete_selected", "_selected_action": [delivered.pk]})
    assert confirm.status_code == 200
    assert "webhook deliveries: 1" in confirm.content.decode().lower().replace("</li>", "").replace("<li>", "")
    admin_browser.post(ENDPOINTS, {"action": "delete_selected", "_selected_action": [delivered.pk], "post": "yes"})
    assert not WebhookEndpoint.objects.exists() and not WebhookDelivery.objects.exists()
    assert Event.objects.filter(type="webhook_endpoint.deleted", aggregate_id=str(delivered.uuid)).exists()


def test_rotating_needs_the_change_permission(client, delivered):
    client.force_login(UserFactory(is_staff=True, permissions=["webhooks.view_webhookendpoint"]))
    listed = client.get(ENDPOINTS).content.decode()
    assert "pager" in listed and "rotate_secret" not in listed  # not offered
    client.post(ENDPOINTS, {"action": "rotate_secret", "_selected_action": [delivered.pk]})
    assert WebhookEndpoint.objects.get().secret == delivered.secret
