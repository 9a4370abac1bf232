"""Provisioning keys as staff see them: the API (``/api/v1/provisioning-keys``), its permissions, and the admin."""

import re
import uuid

import pytest
from django.test import Client
from rest_framework.test import APIClient

from devices.keys import key_digest
from devices.models import Device, ProvisioningKey
from devices.provisioning import provisioning_key_create
from events.models import Event
from tests.factories import UserFactory
from tests.helpers import poll, report, token_for, verdict

from .test_register import Agent

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/provisioning-keys"


def _client(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return client


def test_staff_create_list_show_and_revoke_a_key(admin_client, superuser):
    response = admin_client.post(
        KEYS, {"name": "plant 3", "maxDevices": 2, "expiresAt": "2099-01-01T00:00:00Z"}, format="json"
    )

    assert response.status_code == 201, response.content
    created = response.json()
    secret = created["key"]
    assert created["state"] == "active" and created["maxDevices"] == 2 and created["registrations"] == 0
    assert created["keyPrefix"] == secret[:6]
    assert response["Location"] == f"{KEYS}/{created['uuid']}"
    stored = ProvisioningKey.objects.get(uuid=created["uuid"])
    assert stored.key_digest == key_digest(secret) and secret not in str(stored.__dict__)
    assert created["createdBy"] == superuser.username

    device_agent = Agent()
    assert device_agent.register(APIClient(), secret).status_code == 201

    listed = admin_client.get(KEYS).json()["results"]
    assert [(k["name"], k["registrations"]) for k in listed] == [("plant 3", 1)]
    assert "key" not in listed[0]  # shown once, at creation
    assert listed[0]["lastUsedAt"] is not None
    detail = admin_client.get(f"{KEYS}/{created['uuid']}").json()
    assert [d["uuid"] for d in detail["devices"]] == [device_agent.uuid]
    devices = admin_client.get(detail["devicesUrl"]).json()["results"]
    assert [d["uuid"] for d in devices] == [device_agent.uuid]
    assert devices[0]["registeredBy"] == {"uuid": created["uuid"], "name": "plant 3"}
    assert devices[0]["deviceType"] == "standalone"

    revoked = admin_client.post(f"{KEYS}/{created['uuid']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    assert revoked.json()["revokedBy"] == superuser.username
    assert Agent().register(APIClient(), secret).status_code == 403
    # Creating, using and revoking each appended an event on the key's own stream.
    types = list(
        Event.objects.filter(aggregate_type="provisioning_key", aggregate_id=created["uuid"])
        .order_by("sequence")
        .values_list("type", flat=True)
    )
    assert types == ["provisioning_key.created", "provisioning_key.used", "provisioning_key.revoked"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": "ok", "maxDevices": 0}, "maxDevices"),
        ({"name": "ok", "maxDevices": "5"}, "maxDevices"),
        ({"name": "ok", "expiresAt": "2001-01-01T00:00:00Z"}, "expiresAt"),
        ({"name": "ok", "expiresAt": "next week"}, "expiresAt"),
        ({"name": "ok", "expiresAt": "2099-01-01T00:00:00"}, "expiresAt"),
        ({"name": "ok", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_key_is_400_naming_the_field_and_nothing_is_written(admin_client, body, field):
    response = admin_client.post(KEYS, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert not ProvisioningKey.objects.exists()
    assert not Event.objects.exists()


def test_model_permissions_govern_every_action(db):
    key = provisioning_key_create(name="k").key
    viewer = UserFactory(permissions=["devices.view_provisioningkey"])
    adder = UserFactory(permissions=["devices.view_provisioningkey", "devices.add_provisioningkey"])
    changer = UserFactory(permissions=["devices.view_provisioningkey", "devices.change_provisioningkey"])
    nobody = UserFactory()

    assert APIClient().get(KEYS).status_code == 401
    assert _client(nobody).get(KEYS).status_code == 403
    assert _client(viewer).get(KEYS).status_code == 200
    assert _client(viewer).post(KEYS, {"name": "x"}, format="json").status_code == 403
    assert _client(viewer).post(f"{KEYS}/{key.uuid}/revoke").status_code == 403
    assert _client(adder).post(KEYS, {"name": "x"}, format="json").status_code == 201
    assert _client(adder).post(f"{KEYS}/{key.uuid}/revoke").status_code == 403
    assert _client(changer).post(f"{KEYS}/{key.uuid}/revoke").status_code == 200
    assert _client(changer).delete(f"{KEYS}/{key.uuid}").status_code == 403
    assert _client(UserFactory(is_superuser=True)).delete(f"{KEYS}/{key.uuid}").status_code == 405  # never deleted
    assert _client(changer).get(f"{KEYS}/{uuid.uuid4()}").status_code == 404


def test_list_query_count_is_constant(admin_client, django_assert_num_queries):
    for i in range(3):
        provisioning_key_create(name=f"k{i}")
    with django_assert_num_queries(2) as captured:  # count, page (created_by joined)
        assert len(admin_client.get(KEYS).json()["results"]) == 3
    for i in range(20):
        provisioning_key_create(name=f"more{i}")
    with django_assert_num_queries(len(captured.captured_queries)):
        assert len(admin_client.get(KEYS).json()["results"]) == 23


# The admin ---------------------------------------------------------------------------------------------------------


def test_the_admin_creates_a_key_and_shows_it_once(admin_browser):
    response = admin_browser.post(
        "/admin/devices/provisioningkey/add/",
        {"name": "from the admin", "expires_at": "", "max_devices": "3"},
        follow=True,
    )

    assert response.status_code == 200
    page = response.content.decode()
    key = ProvisioningKey.objects.get(name="from the admin")
    secret = re.search(r"Provisioning key “from the admin”: <code>([^<]+)</code>", page).group(1)
    assert key.key_digest == key_digest(secret) and key.max_devices == 3
    # Never again: not on the change page, not in the list.
    assert secret not in admin_browser.get(f"/admin/devices/provisioningkey/{key.pk}/change/").content.decode()
    assert secret not in admin_browser.get("/admin/devices/provisioningkey/").content.decode()


def test_the_admin_shows_the_devices_a_key_registered_and_revokes_it(admin_browser, superuser):
    created = provisioning_key_create(name="roll-out", max_devices=10)
    device_agent = Agent(deviceName="boiler-gw-1")
    device_agent.register(APIClient(), created.secret)
    device = Device.objects.get(uuid=device_agent.uuid)

    page = admin_browser.get(f"/admin/devices/provisioningkey/{created.key.pk}/change/").content.decode()
    assert "boiler-gw-1" in page and "1 of 10" in page
    device_page = admin_browser.get(f"/admin/devices/device/{device.pk}/change/").content.decode()
    assert "roll-out" in device_page and "standalone" in device_page
    listed = admin_browser.get(f"/admin/devices/device/?provisioned_by__id__exact={created.key.pk}").context["cl"]
    assert [d.uuid for d in listed.result_list] == [device.uuid]

    response = admin_browser.post(
        "/admin/devices/provisioningkey/",
        {"action": "revoke", "_selected_action": [created.key.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert ProvisioningKey.objects.get(pk=created.key.pk).revoked_at is not None
    assert Agent().register(APIClient(), created.secret).status_code == 403
    # Never deleted: devices keep saying which key registered them.
    assert admin_browser.get(f"/admin/devices/provisioningkey/{created.key.pk}/delete/").status_code == 403


def test_a_registered_device_polls_reports_and_shows_on_the_fleet_page(admin_browser):
    created = provisioning_key_create(name="fleet")
    device_agent = Agent()
    agent = Client()
    device_agent.register(agent, created.secret)
    assert device_agent.exchange(agent).status_code == 200
    device = Device.objects.get(uuid=device_agent.uuid)
    device.api_key = device_agent.api_key
    assert poll(agent, device).status_code == 200
    assert verdict(report(agent, device, 1, []), device)["inSync"] is True

    assert device_agent.body["deviceName"] in admin_browser.get("/admin/devices/device/").content.decode()
    tiles = {tile["state"]: tile for tile in admin_browser.get("/fleet/").context["tiles"]}
    assert tiles["in_sync"]["count"] == 1
