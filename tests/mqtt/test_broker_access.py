"""The broker the project ships, with the credentials the server issues: who may connect, publish and subscribe,
and how revocation reaches a connected device at once, or later when the broker was down."""

import threading

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client

from devices.models import Device
from devices.provisioning import provisioning_key_create
from devices.services import device_delete, device_key_rotate, device_update
from ingest.dynsec import BrokerAddress, BrokerUnreachable
from ingest.metrics import ACCESS_CHANGES
from ingest.models import DeviceMqttCredentials
from ingest.services import device_role, dynsec_control, mqtt_access_converge
from tests.provisioning.test_register import Agent

from .support import Observer, agent_connect, device_connect, mqtt_device, publish, wait_until

pytestmark = pytest.mark.django_db


def _refused(broker, device, **options) -> str:
    with pytest.raises(BrokerUnreachable) as refused:
        device_connect(broker, device, **options).disconnect()
    return str(refused.value)


def _disconnected(client) -> threading.Event:
    gone = threading.Event()
    client.reconnect_delay_set(60, 120)  # no reconnect while the test watches
    client.on_disconnect = lambda *args: gone.set()
    return gone


def test_a_device_connects_with_its_credentials_only_and_what_else_it_publishes_reaches_no_one(broker):
    a, b = mqtt_device("a"), mqtt_device("b")

    assert "Not authorized" in _refused(broker, a, password="not-its-password")
    assert "Not authorized" in _refused(broker, a, password=b.password)  # B's password is not A's
    assert "Not authorized" in _refused(broker, a, client_id="someone-else")  # the client id is bound too

    intrusion = {"commands": [{"command": "createClient", "username": "intruder", "password": "x" * 20}]}
    with Observer(broker) as observer:
        client = device_connect(broker, a)
        try:
            # MQTT 3.1.1, the agents' protocol, has no refusal in a PUBACK: the broker acknowledges what its ACL
            # refuses and drops it, and the connection stays up.
            for topic, body in (
                (b.topic, {a.uuid: {"version": 1}}),
                ("iot/device/x/state", {}),
                # What the 2025-11-22 agent publishes besides its reports, with its optional features on.
                (f"iot/device/{a.uuid}/sensor/modbus", {"temperature": 21.5}),
                (f"iot/device/{a.uuid}/agent/status", {"type": "update_command_received"}),
                (f"iot/device/{a.uuid}/jobs/7/update", {"status": "SUCCEEDED"}),
                ("$CONTROL/dynamic-security/v1", intrusion),
                (a.topic, {"ok": 1}),
            ):
                assert not publish(client, topic, body).is_failure
            # Delivered in the order published: once the last one arrived, whatever of the others was let through
            # arrived before it.
            wait_until(lambda: a.topic in observer.topics(), timeout=5)
            assert observer.topics() == [a.topic] and client.is_connected()

            granted = []
            done = threading.Event()
            client.on_subscribe = lambda c, u, mid, codes, p: (granted.extend(codes), done.set())
            client.subscribe([(f"iot/device/{a.uuid}/#", 1), (f"iot/device/{b.uuid}/#", 1), ("iot/#", 1)])
            assert done.wait(5)
            assert [code.is_failure for code in granted] == [False, True, True]
        finally:
            client.disconnect()
            client.loop_stop()
    with dynsec_control() as control:
        assert "intruder" not in control.clients()


def test_registration_answers_with_the_broker_and_a_fresh_password(broker):
    provisioning = provisioning_key_create(name="mqtt roll-out")
    agent = Agent()
    client = Client()

    first = agent.register(client, provisioning.secret)
    assert first.status_code == 201, first.content
    mqtt = first.json()["mqtt"]
    assert mqtt["broker"] == broker.url and mqtt["username"] == agent.uuid and len(mqtt["password"]) >= 40
    assert mqtt["topics"] == {"publish": f"iot/device/{agent.uuid}/state", "subscribe": f"iot/device/{agent.uuid}/#"}
    assert set(mqtt) == {"username", "password", "broker", "topics"}  # what the agent reads
    device = Device.objects.get(uuid=agent.uuid)
    assert DeviceMqttCredentials.objects.get(device=device).key_digest == device.api_key_digest
    assert mqtt["password"] not in str(list(DeviceMqttCredentials.objects.values()))  # never stored

    # The key exchange that follows does not replace them (the agent does not read its answer).
    exchanged = agent.exchange(client)
    assert exchanged.status_code == 200 and "mqtt" not in exchanged.json()

    class Registered:
        uuid, password = agent.uuid, mqtt["password"]

    device_connect(broker, Registered).disconnect()

    # An agent that lost the answer registers again: a new password, and the lost one stops working.
    again = agent.register(client, provisioning.secret)
    assert again.status_code == 201
    renewed = again.json()["mqtt"]["password"]
    assert renewed and renewed != mqtt["password"]
    assert "Not authorized" in _refused(broker, Registered)
    Registered.password = renewed
    device_connect(broker, Registered).disconnect()


def test_without_the_broker_registration_still_succeeds_and_keeps_the_agent_on_http(broker):
    broker.stop()
    failed = ACCESS_CHANGES.labels("issue", "failed")._value.get()
    response = Agent().register(Client(), provisioning_key_create(name="k").secret)
    assert response.status_code == 201
    assert response.json()["mqtt"]["broker"] == "" and response.json()["mqtt"]["password"] == ""
    assert ACCESS_CHANGES.labels("issue", "failed")._value.get() == failed + 1


@pytest.mark.parametrize("revoke", ["rotate", "deactivate", "delete"])
def test_revocation_disconnects_a_connected_device_at_once(broker, revoke, django_capture_on_commit_callbacks):
    device = mqtt_device()
    client = device_connect(broker, device)
    gone = _disconnected(client)
    try:
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            if revoke == "rotate":
                device_key_rotate(uuid=device.uuid, user=None)
            elif revoke == "deactivate":
                device_update(uuid=device.uuid, user=None, is_active=False)
            else:
                device_delete(uuid=device.uuid, user=None)
        assert len(callbacks) == 1  # after the commit, not inside the transaction
        assert gone.wait(5), "the broker did not disconnect the revoked device"
    finally:
        client.loop_stop()
    assert "Not authorized" in _refused(broker, device)
    with dynsec_control() as control:
        listed = {c["username"]: c for c in control.clients_verbose()}
    if revoke == "deactivate":
        assert listed[device.uuid].get("disabled") is True
        # Reactivated, the same credentials work again.
        with django_capture_on_commit_callbacks(execute=True):
            device_update(uuid=device.uuid, user=None, is_active=True)
        device_connect(broker, device).disconnect()
    else:
        assert device.uuid not in listed


def test_a_rolled_back_change_revokes_nothing(broker, django_capture_on_commit_callbacks):
    device = mqtt_device()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        device_key_rotate(uuid=device.uuid, user=None)
    assert len(callbacks) == 1  # registered, run only on commit: a rollback drops it
    device_connect(broker, device).disconnect()


def test_a_revocation_missed_while_the_broker_was_down_is_applied_by_the_convergence_loop(
    broker, django_capture_on_commit_callbacks
):
    rotated, deactivated, deleted, kept = (mqtt_device(n) for n in ("rotated", "deactivated", "deleted", "kept"))
    broker.stop()
    failed = ACCESS_CHANGES.labels("revoke", "failed")._value.get()
    with django_capture_on_commit_callbacks(execute=True):
        device_key_rotate(uuid=rotated.uuid, user=None)
        device_update(uuid=deactivated.uuid, user=None, is_active=False)
        device_delete(uuid=deleted.uuid, user=None)
    assert ACCESS_CHANGES.labels("revoke", "failed")._value.get() == failed + 2  # logged and counted, not raised

    broker.start()
    # The broker still lets them in: it never heard of the revocations.
    for device in (rotated, deactivated, deleted):
        device_connect(broker, device).disconnect()

    result = mqtt_access_converge()
    assert sorted(result.deleted) == sorted([rotated.uuid, deleted.uuid])
    assert result.disabled == [deactivated.uuid]
    for device in (rotated, deactivated, deleted):
        assert "Not authorized" in _refused(broker, device)
    device_connect(broker, kept).disconnect()
    with dynsec_control() as control:
        roles = control.run_one("listRoles", verbose=False, count=-1, offset=0)["data"]["roles"]
    assert device_role(deleted.uuid) not in str(roles) and device_role(kept.uuid) in str(roles)
    assert mqtt_access_converge().deleted == []  # converged: nothing more to do


def test_credentials_issued_under_a_key_that_was_rotated_meanwhile_are_withdrawn(broker):
    device = mqtt_device()
    # A rotation committed while credentials were being issued under the old key (the device read before it).
    stale = Device.objects.get(pk=device.device.pk)
    Device.objects.filter(pk=stale.pk).update(api_key_digest="0" * 64)
    from ingest.services import device_mqtt_credentials_issue

    assert device_mqtt_credentials_issue(device=stale) is None
    with dynsec_control() as control:
        assert device.uuid not in control.clients()


def test_the_broker_keeps_its_state_across_a_restart(broker):
    device = mqtt_device()
    broker.stop()
    broker.start()
    client = device_connect(broker, device)
    assert not publish(client, device.topic, {"x": 1}).is_failure
    client.disconnect()


def test_a_device_created_by_staff_gets_its_credentials_from_the_key_exchange(broker):
    from devices.services import device_create

    from .support import MqttDevice

    created = device_create(name="staff-made")
    client = Client()
    url = f"/api/v1/device/{created.device.uuid}/key-exchange"
    answer = client.post(
        url, {}, content_type="application/json", headers={"Authorization": f"Bearer {created.api_key}"}
    )
    assert answer.status_code == 200, answer.content
    mqtt = answer.json()["mqtt"]
    assert mqtt["broker"] == broker.url and mqtt["password"]
    device_connect(broker, MqttDevice(created.device, created.api_key, mqtt["password"])).disconnect()
    # Once it has them, a key exchange does not replace them.
    again = client.post(
        url, {}, content_type="application/json", headers={"Authorization": f"Bearer {created.api_key}"}
    )
    assert again.status_code == 200 and "mqtt" not in again.json()


@pytest.mark.parametrize("configured", ["127.0.0.1:{port}", "tcp://127.0.0.1:{port}", "mqtt://127.0.0.1:{port}/"])
def test_the_broker_url_reaches_the_agent_in_the_form_its_mqtt_client_reads(broker, settings, configured):
    """mqtt.js reads a bare ``host:port`` as host "<port>", port 1883, and the agent never connects: whatever form
    the setting has, the registration answer spells out the scheme, the host and the port."""
    settings.SENSORSYNC_MQTT_BROKER_URL = configured.format(port=broker.port)
    agent = Agent()
    answer = agent.register(Client(), provisioning_key_create(name="k").secret).json()["mqtt"]
    assert answer["broker"] == f"mqtt://127.0.0.1:{broker.port}" == broker.url
    client = agent_connect(
        answer["broker"], username=agent.uuid, password=answer["password"], client_id=f"device_{agent.uuid}"
    )
    client.disconnect()
    client.loop_stop()


def test_the_url_handed_to_agents_names_scheme_host_and_port():
    assert BrokerAddress.parse("mqtts://mqtt.example.com").url == "mqtts://mqtt.example.com:8883"
    assert BrokerAddress.parse("ssl://mqtt.example.com:9883").url == "mqtts://mqtt.example.com:9883"
    assert BrokerAddress.parse("mqtt://[2001:db8::7]").url == "mqtt://[2001:db8::7]:1883"


@pytest.mark.parametrize("setting", ["SENSORSYNC_MQTT_BROKER_URL", "SENSORSYNC_MQTT_URL"])
def test_a_broker_url_that_is_none_keeps_devices_on_http_and_fails_the_system_check(broker, settings, setting):
    setattr(settings, setting, "https://mqtt.example.com")
    failed = ACCESS_CHANGES.labels("issue", "failed")._value.get()
    response = Agent().register(Client(), provisioning_key_create(name="k").secret)
    assert response.status_code == 201, response.content
    assert response.json()["mqtt"]["broker"] == "" and response.json()["mqtt"]["password"] == ""
    assert ACCESS_CHANGES.labels("issue", "failed")._value.get() == failed + 1
    device = Device.objects.get(uuid=response.json()["uuid"])
    device_key_rotate(uuid=device.uuid, user=None)  # its revocation is logged and counted, not raised
    with pytest.raises(SystemCheckError, match=f"ingest.E001.*{setting}"):
        call_command("check")
