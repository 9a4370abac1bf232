"""Devices that provision themselves, over HTTP, exactly as the real agent does (``../shared/agent-wire/README.md``,
"Provisioning"): it makes its own uuid and key, registers with a provisioning key, exchanges keys, then polls and
reports with its own key. Then every refusal, each of which writes nothing, and the races."""

import json
import secrets
import threading
import uuid
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from devices.keys import key_digest
from devices.models import Device, ProvisioningKey
from devices.provisioning import provisioning_key_create, provisioning_key_revoke
from devices.services import device_key_rotate
from events.models import Event
from tests.helpers import poll, report, verdict

pytestmark = pytest.mark.django_db

REGISTER_URL = "/api/v1/device/register"


def exchange_url(device_uuid) -> str:
    return f"/api/v1/device/{device_uuid}/key-exchange"


class Agent:
    """What the agent knows before it is provisioned: its own uuid and key (32 random bytes, hex)."""

    def __init__(self, **overrides):
        self.uuid = str(uuid.uuid4())
        self.api_key = secrets.token_hex(32)
        self.body = {
            "uuid": self.uuid,
            "deviceName": f"device-{self.uuid[:8]}",
            "deviceType": "standalone",
            "deviceApiKey": self.api_key,
            "applicationId": 7,
            "macAddress": "02:fc:00:00:00:01",
            "osVersion": "Debian GNU/Linux 12 (bookworm)",
            "agentVersion": "1.0.84",
        } | overrides

    def register(self, client, provisioning_key: str | None, body: dict | None = None, **extra):
        """POST /device/register as the agent does; ``extra`` goes to the request's META (e.g. REMOTE_ADDR)."""
        headers = {"Authorization": f"Bearer {provisioning_key}"} if provisioning_key is not None else {}
        data = self.body if body is None else body
        return client.post(REGISTER_URL, data, content_type="application/json", headers=headers, **extra)

    def exchange(self, client, key: str | None = None, body: dict | None = None):
        return client.post(
            exchange_url(self.uuid),
            {"uuid": self.uuid, "deviceApiKey": key or self.api_key} if body is None else body,
            content_type="application/json",
            headers={"Authorization": f"Bearer {key or self.api_key}"},
        )


@pytest.fixture
def provisioning(db):
    return provisioning_key_create(name="plant 3 roll-out", max_devices=5)


def _writes() -> tuple:
    """Everything a registration may write."""
    return (
        list(Device.objects.values_list("uuid", "api_key_digest", "name")),
        list(ProvisioningKey.objects.values_list("uuid", "registrations", "last_used_at", "revoked_at")),
        Event.objects.count(),
    )


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content)
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["error"] == code, body
    assert body["message"]
    return body


# The whole flow ---------------------------------------------------------------------------------------------------


def test_a_device_registers_exchanges_keys_then_polls_and_reports(agent, provisioning):
    device_agent = Agent()

    response = device_agent.register(agent, provisioning.secret)

    assert response.status_code == 201, response.content
    answer = response.json()
    device = Device.objects.get(uuid=device_agent.uuid)
    # What the agent reads: id (it stores id.toString()), uuid, deviceName, deviceType, and the mqtt object it
    # dereferences; an empty broker keeps it on HTTP.
    assert answer["id"] == device.pk
    assert (answer["uuid"], answer["deviceName"], answer["deviceType"]) == (
        device_agent.uuid,
        device_agent.body["deviceName"],
        "standalone",
    )
    assert answer["mqtt"] == {
        "username": device_agent.uuid,
        "password": "",
        "broker": "",
        "topics": {
            "publish": f"iot/device/{device_agent.uuid}/state",
            "subscribe": f"iot/device/{device_agent.uuid}/#",
        },
    }
    assert device_agent.api_key not in response.content.decode()
    # The device records what it said about itself and which key let it in; only the key's digest is stored.
    assert device.provisioned_by == provisioning.key
    assert (device.device_type, device.mac_address, device.application_id) == ("standalone", "02:fc:00:00:00:01", "7")
    assert (device.os_version, device.agent_version) == ("Debian GNU/Linux 12 (bookworm)", "1.0.84")
    assert device.api_key_digest != device_agent.api_key and len(device.api_key_digest) == 64
    assert device.target_state.version == 1 and device.target_state.config == {"sensors": []}
    key = ProvisioningKey.objects.get(pk=provisioning.key.pk)
    assert key.registrations == 1 and key.last_used_at is not None
    registered = Event.objects.get(type="device.registered", aggregate_id=device_agent.uuid)
    assert registered.data["provisioning_key"] == str(provisioning.key.uuid)
    assert Event.objects.filter(type="provisioning_key.used", aggregate_id=str(provisioning.key.uuid)).count() == 1

    exchanged = device_agent.exchange(agent)
    assert exchanged.status_code == 200, exchanged.content
    assert exchanged.json()["uuid"] == device_agent.uuid
    assert Event.objects.filter(type="device.key_exchanged", aggregate_id=device_agent.uuid).count() == 1

    # It now polls and reports with its own key, like any device.
    device.api_key = device_agent.api_key
    assert poll(agent, device).status_code == 200
    assert verdict(report(agent, device, 1, []), device)["outcome"] == "applied"


def test_a_repeat_of_the_same_registration_answers_as_the_first_and_writes_nothing(agent, provisioning):
    device_agent = Agent()
    first = device_agent.register(agent, provisioning.secret)
    before = _writes()

    again = device_agent.register(agent, provisioning.secret)

    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert _writes() == before


def test_a_repeat_is_answered_even_once_the_key_is_exhausted(agent, db):
    single = provisioning_key_create(name="one device", max_devices=1)
    device_agent = Agent()
    first = device_agent.register(agent, single.secret)
    assert first.status_code == 201

    # The agent lost the answer and retries: the registration is its own, so it gets it again.
    assert device_agent.register(agent, single.secret).json() == first.json()
    # Another device is refused.
    _error(Agent().register(agent, single.secret), 403, "provisioning_key_exhausted")


def test_staff_rotation_still_locks_out_the_agents_own_key(agent, provisioning):
    device_agent = Agent()
    device_agent.register(agent, provisioning.secret)
    device = Device.objects.get(uuid=device_agent.uuid)
    device.api_key = device_agent.api_key
    assert poll(agent, device).status_code == 200

    device_key_rotate(uuid=device.uuid, user=None)

    _error(poll(agent, device), 401, "not_authenticated")
    _error(device_agent.exchange(agent), 401, "not_authenticated")
    # Re-registering with the old key is not a way back in: the uuid now has another key.
    _error(device_agent.register(agent, provisioning.secret), 409, "device_exists")


def test_the_command_creates_a_key_that_registers(agent, capsys, db):
    call_command("create_provisioning_key", "lab", "--max-devices", "2", "--expires-in-days", "1", "--json")
    created = json.loads(capsys.readouterr().out)
    assert created["maxDevices"] == 2 and created["expiresAt"]
    assert Agent().register(agent, created["key"]).status_code == 201
    assert ProvisioningKey.objects.get(uuid=created["uuid"]).key_digest != created["key"]


# Refusals: each writes nothing -------------------------------------------------------------------------------------


def _weak(key: str) -> dict:
    return {"deviceApiKey": key}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"uuid": None}, "uuid"),
        ({"uuid": 12}, "uuid"),
        (_weak(secrets.token_hex(15)), "deviceApiKey"),
        (_weak("a" * 64), "deviceApiKey"),
        (_weak("0123456789abcdef" * 4), "deviceApiKey"),
        (_weak("password" * 8), "deviceApiKey"),
        (_weak(secrets.token_hex(16) + " " + secrets.token_hex(16)), "deviceApiKey"),
        (_weak(None), "deviceApiKey"),
        (_weak(12345), "deviceApiKey"),
        ({"deviceName": "x" * 256}, "deviceName"),
        ({"deviceName": "bad\x1bname"}, "deviceName"),
        ({"deviceType": 3}, "deviceType"),
        ({"applicationId": True}, "applicationId"),
        ({"applicationId": [1]}, "applicationId"),
        ({"macAddress": {"a": 1}}, "macAddress"),
        ({"agentVersion": "v" * 256}, "agentVersion"),
    ],
    ids=lambda value: str(value)[:24],
)
def test_a_bad_registration_is_400_naming_the_field(agent, provisioning, change, field):
    before = _writes()
    device_agent = Agent()
    body = {key: value for key, value in (device_agent.body | change).items() if value is not None}

    answer = _error(device_agent.register(agent, provisioning.secret, body=body), 400, "validation_error")

    assert field in answer["fields"], answer
    assert field in answer["message"]
    assert _writes() == before


@pytest.mark.parametrize(
    "raw",
    [b"[]", b"null", b"{", b'{"uuid": "a", "uuid": "b"}', b"\xff\xfe"],
    ids=["list", "null", "truncated", "duplicate-key", "not-utf8"],
)
def test_a_malformed_body_is_400(agent, provisioning, raw):
    before = _writes()
    response = agent.post(
        REGISTER_URL, raw, content_type="application/json", headers={"Authorization": f"Bearer {provisioning.secret}"}
    )
    assert response.status_code == 400, response.content
    assert _writes() == before


def test_a_registration_without_or_with_an_unknown_key_is_401(agent, provisioning):
    before = _writes()
    _error(Agent().register(agent, None), 401, "not_authenticated")
    _error(Agent().register(agent, secrets.token_urlsafe(32)), 401, "not_authenticated")
    _error(Agent().register(agent, provisioning.secret[:-1]), 401, "not_authenticated")
    assert _writes() == before


def test_an_expired_revoked_or_exhausted_key_is_403(agent, db):
    expired = provisioning_key_create(name="expired", expires_at=timezone.now() + timedelta(seconds=60))
    ProvisioningKey.objects.filter(pk=expired.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoked = provisioning_key_create(name="revoked")
    provisioning_key_revoke(uuid=revoked.key.uuid, user=None)
    exhausted = provisioning_key_create(name="exhausted", max_devices=1)
    assert Agent().register(agent, exhausted.secret).status_code == 201
    before = _writes()

    _error(Agent().register(agent, expired.secret), 403, "provisioning_key_expired")
    _error(Agent().register(agent, revoked.secret), 403, "provisioning_key_revoked")
    _error(Agent().register(agent, exhausted.secret), 403, "provisioning_key_exhausted")

    assert _writes() == before


def test_a_revoked_key_registers_nothing_not_even_a_repeat(agent, provisioning):
    device_agent = Agent()
    assert device_agent.register(agent, provisioning.secret).status_code == 201
    provisioning_key_revoke(uuid=provisioning.key.uuid, user=None)

    _error(device_agent.register(agent, provisioning.secret), 403, "provisioning_key_revoked")
    # Devices it registered keep working.
    device = Device.objects.get(uuid=device_agent.uuid)
    device.api_key = device_agent.api_key
    assert poll(agent, device).status_code == 200


def test_a_uuid_registered_with_another_key_is_409_and_nothing_changes(agent, provisioning, device):
    """No takeover: neither of a staff-created device nor of one another agent registered."""
    registered = Agent()
    registered.register(agent, provisioning.secret)
    before = _writes()

    _error(Agent(uuid=registered.uuid).register(agent, provisioning.secret), 409, "device_exists")
    _error(Agent(uuid=str(device.uuid)).register(agent, provisioning.secret), 409, "device_exists")

    assert _writes() == before
    device.refresh_from_db()
    assert device.provisioned_by is None


def test_a_device_key_another_device_uses_is_409(agent, provisioning):
    first = Agent()
    first.register(agent, provisioning.secret)
    before = _writes()

    _error(Agent(deviceApiKey=first.api_key).register(agent, provisioning.secret), 409, "device_key_in_use")

    assert _writes() == before


def test_registrations_are_rate_limited_per_address(agent, provisioning, settings):
    settings.SENSORSYNC_REGISTER_RATE_LIMIT = "3/60"
    statuses = [Agent().register(agent, provisioning.secret, REMOTE_ADDR="198.51.100.7").status_code for _ in range(4)]
    assert statuses == [201, 201, 201, 429]
    assert Agent().register(agent, provisioning.secret, REMOTE_ADDR="198.51.100.8").status_code == 201


def test_only_post_and_json(agent, provisioning):
    assert agent.get(REGISTER_URL).status_code == 405
    response = agent.post(
        REGISTER_URL,
        "uuid=x",
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": f"Bearer {provisioning.secret}"},
    )
    _error(response, 415, "unsupported_media_type")


# The key exchange ------------------------------------------------------------------------------------------------


def test_the_key_exchange_answers_only_the_devices_own_key(agent, provisioning, device):
    device_agent = Agent()
    device_agent.register(agent, provisioning.secret)

    _error(device_agent.exchange(agent, key=secrets.token_hex(32)), 401, "not_authenticated")
    # Another device's key for this uuid: 403, as on every agent endpoint.
    other = agent.post(
        exchange_url(device_agent.uuid),
        {"uuid": device_agent.uuid},
        content_type="application/json",
        headers={"Authorization": f"Bearer {device.api_key}"},
    )
    _error(other, 403, "permission_denied")
    mismatched = device_agent.exchange(agent, body={"uuid": device_agent.uuid, "deviceApiKey": "other"})
    assert _error(mismatched, 400, "validation_error")["fields"] == {
        "deviceApiKey": ["Not the key this request authenticates with."]
    }
    Device.objects.filter(uuid=device_agent.uuid).update(is_active=False)
    _error(device_agent.exchange(agent), 403, "device_inactive")
    assert not Event.objects.filter(type="device.key_exchanged").exists()


# Races (PostgreSQL) ----------------------------------------------------------------------------------------------


def _race(calls) -> list:
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(index, call):
        try:
            barrier.wait(timeout=30)
            response = call(Client())
            results[index] = (response.status_code, response.json())
        except Exception as exc:  # reported by the assertions on the results
            results[index] = ("exception", repr(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_of_one_uuid_end_with_one_device(db):
    keys = [provisioning_key_create(name=f"key {i}") for i in range(2)]
    device_agent = Agent()
    # The same registration 12 times, under two keys at once, and 4 impostors with the same uuid and other keys.
    impostors = [Agent(uuid=device_agent.uuid) for _ in range(4)]
    agents = [device_agent] * 12 + impostors
    calls = [lambda c, a=a, k=keys[i % 2]: a.register(c, k.secret) for i, a in enumerate(agents)]

    results = _race(calls)

    # Whoever registers first owns the uuid: the agent (all 12 of its tries answered 201, the impostors 409), or
    # one impostor (its one try 201, everyone else 409). Never two devices, never a takeover.
    created = [i for i, (status, _) in enumerate(results) if status == 201]
    assert created == list(range(12)) or (len(created) == 1 and created[0] >= 12), results
    assert Counter(status for status, _ in results) == {201: len(created), 409: 16 - len(created)}, results
    assert len({body["id"] for status, body in results if status == 201}) == 1
    winner = agents[created[0]]
    assert Device.objects.get(uuid=device_agent.uuid).api_key_digest == key_digest(winner.api_key)
    assert Device.objects.filter(uuid=device_agent.uuid).count() == 1
    assert sum(ProvisioningKey.objects.values_list("registrations", flat=True)) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_registrations_never_pass_the_keys_limit(db):
    limited = provisioning_key_create(name="five", max_devices=5)
    agents = [Agent() for _ in range(16)]

    results = _race([lambda c, a=a: a.register(c, limited.secret) for a in agents])

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 5, 403: 11}, results
    assert Device.objects.filter(provisioned_by=limited.key).count() == 5
    assert ProvisioningKey.objects.get(pk=limited.key.pk).registrations == 5
    sequences = list(
        Event.objects.filter(aggregate_id=str(limited.key.uuid)).order_by("sequence").values_list("sequence", flat=True)
    )
    assert sequences == list(range(1, 7))  # created, then five uses: gapless under the key's lock
