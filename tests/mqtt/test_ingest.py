"""Reports over MQTT, through the real broker and the ingestion worker (on a thread of the test process): the
PATCH's parsing, service and verdict; what is dropped and why; order by time of receipt."""

import time

import orjson
import pytest
from django.test import Client

from devices.models import Device, DeviceCurrentState, DeviceTargetState
from devices.provisioning import provisioning_key_create
from events.models import Event
from ingest.metrics import DROPPED, MESSAGES
from ingest.services import device_mqtt_credentials_issue
from ingest.worker import Dropped, message_apply, now_us
from reconciliation.services.sensors import sensor_create
from sensors.models import DeviceSensor
from tests.helpers import device_with, sensor_payload, state_url, target_sensors
from tests.provisioning.test_register import Agent

from .support import (
    InProcessWorker,
    MqttDevice,
    agent_connect,
    device_connect,
    mqtt_device,
    publish,
    report,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _count(metric, label: str) -> float:
    return metric.labels(label)._value.get()


def _marker(device: MqttDevice):
    current = DeviceCurrentState.objects.filter(device_id=device.device.pk).values_list("apps", flat=True).first()
    return None if current is None else current.get("marker")


def test_a_report_over_mqtt_lands_in_the_read_model_as_the_patch_would(broker):
    device = device_with("s-0", "s-1")
    mqtt = MqttDevice(device, device.api_key, device_mqtt_credentials_issue(device=device))
    body = {
        mqtt.uuid: {
            "version": device.target_state.version,
            "config": {"sensors": target_sensors(device)},
            "apps": {},
            "agent_version": "1.0.84",
        }
    }
    applied = _count(MESSAGES, "applied")
    with InProcessWorker(broker):
        client = device_connect(broker, mqtt)
        assert not publish(client, mqtt.topic, body).is_failure
        wait_until(lambda: _count(MESSAGES, "applied") == applied + 1)
        client.disconnect()

    current = DeviceCurrentState.objects.get(device=device)
    assert current.version == device.target_state.version
    statuses = dict(DeviceSensor.objects.filter(device=device).values_list("name", "deployment_status"))
    assert statuses == {"s-0": "deployed", "s-1": "deployed"}
    fresh = Device.objects.get(pk=device.pk)
    assert fresh.agent_version == "1.0.84" and fresh.last_seen_at is not None
    assert fresh.last_report_received_us is not None  # the MQTT worker's clock
    assert Event.objects.filter(aggregate_id=mqtt.uuid, type="current_state.reported").count() == 1

    # The same body over HTTP is the same report: same digest, answered "unchanged".
    response = Client().patch(
        "/api/v1/device/state", orjson.dumps(body), content_type="application/json", HTTP_X_DEVICE_API_KEY=mqtt.api_key
    )
    assert response.status_code == 200 and response.json()[mqtt.uuid]["outcome"] == "unchanged"


def test_an_agent_registered_with_mqtt_configured_reports_over_mqtt_and_its_sensors_converge(broker):
    """The agent's whole path: it registers with a provisioning key, staff give it sensors, it polls its target over
    HTTP, deploys it and reports over MQTT with the credentials the registration answered; the worker applies it."""
    agent, http = Agent(), Client()
    registered = agent.register(http, provisioning_key_create(name="mqtt roll-out").secret)
    assert registered.status_code == 201, registered.content
    credentials = registered.json()["mqtt"]
    assert agent.exchange(http).status_code == 200
    for name in ("line-1", "line-2"):
        sensor_create(device_uuid=agent.uuid, data=sensor_payload(name), user=None)
    device = Device.objects.get(uuid=agent.uuid)
    assert DeviceTargetState.objects.get(device=device).needs_deployment

    polled = http.get(state_url(agent.uuid), headers={"X-Device-API-Key": agent.api_key})
    target = polled.json()[agent.uuid]
    body = {
        agent.uuid: {
            "apps": target["apps"],
            "is_online": True,
            "version": target["version"],
            "config": target["config"],  # deployed as served
            "agent_version": "1.0.84",
        }
    }
    with InProcessWorker(broker):
        client = agent_connect(
            credentials["broker"], username=credentials["username"], password=credentials["password"]
        )
        assert client.publish(credentials["topics"]["publish"], orjson.dumps(body), qos=1).rc == 0
        wait_until(
            lambda: not DeviceTargetState.objects.get(device=device).needs_deployment,
            message=lambda: f"not converged: {list(DeviceSensor.objects.values_list('name', 'deployment_status'))}",
        )
        client.disconnect()
        client.loop_stop()
    statuses = dict(DeviceSensor.objects.filter(device=device).values_list("name", "deployment_status"))
    assert statuses == {"line-1": "deployed", "line-2": "deployed"}
    assert DeviceCurrentState.objects.get(device=device).version == target["version"]
    assert Device.objects.get(pk=device.pk).agent_version == "1.0.84"


def test_malformed_foreign_and_invalid_messages_are_dropped_counted_acknowledged_and_the_worker_goes_on(broker):
    a, b = mqtt_device("a"), mqtt_device("b")
    dropped = {reason: _count(DROPPED, reason) for reason in ("malformed_json", "foreign")}
    invalid = _count(DROPPED, "validation_error:version")
    applied = _count(MESSAGES, "applied")
    with InProcessWorker(broker, client_id="ingest-drops"):
        client = device_connect(broker, a)
        for payload in (
            b"{not json",
            b"\xff\xfe",
            orjson.dumps({b.uuid: {"version": 1}}),  # B's report on A's topic: foreign
            orjson.dumps({a.uuid: {"version": "one"}}),
        ):
            assert not publish(client, a.topic, payload).is_failure
        assert not publish(client, a.topic, report(a, marker=7)).is_failure
        wait_until(lambda: _count(MESSAGES, "applied") == applied + 1)
        client.disconnect()
    assert _count(DROPPED, "malformed_json") == dropped["malformed_json"] + 2
    assert _count(DROPPED, "foreign") == dropped["foreign"] + 1
    assert _count(DROPPED, "validation_error:version") == invalid + 1
    assert _marker(a) == 7 and _marker(b) is None

    # They were acknowledged: the same worker (same session) coming back gets none of them again.
    before = _count(MESSAGES, "dropped")
    with InProcessWorker(broker, client_id="ingest-drops") as worker:
        time.sleep(1.0)
        assert worker.ingestor.processed == 0
    assert _count(MESSAGES, "dropped") == before


def test_what_no_device_may_send_is_dropped_with_its_reason(broker):
    device = mqtt_device()
    stamp = now_us()
    cases = {
        "bad_topic": ("iot/device/not-a-uuid/state", b"{}"),
        "unknown_device": ("iot/device/00000000-0000-4000-8000-000000000000/state", b"{}"),
        "too_large": (device.topic, b" " * (2 * 1024 * 1024)),
    }
    for reason, (topic, payload) in cases.items():
        with pytest.raises(Dropped) as exc:
            message_apply(topic=topic, payload=payload, received_us=stamp)
        assert exc.value.reason == reason
    Device.objects.filter(pk=device.device.pk).update(is_active=False)
    with pytest.raises(Dropped, match="deactivated"):
        message_apply(topic=device.topic, payload=orjson.dumps(report(device)), received_us=stamp)


def test_a_message_received_earlier_never_overwrites_one_received_later(broker):
    """Two workers may apply a device's messages in any order: the receipt stamps decide."""
    device = mqtt_device()
    earlier, later = now_us(), now_us() + 1000

    assert message_apply(topic=device.topic, payload=orjson.dumps(report(device, marker=2)), received_us=later) == (
        "applied"
    )
    assert message_apply(topic=device.topic, payload=orjson.dumps(report(device, marker=1)), received_us=earlier) == (
        "stale"
    )
    assert _marker(device) == 2
    # Also when the earlier one repeats the stored report (no reconciliation to guard it).
    assert message_apply(topic=device.topic, payload=orjson.dumps(report(device, marker=2)), received_us=earlier) == (
        "stale"
    )
    assert message_apply(topic=device.topic, payload=orjson.dumps(report(device, marker=3)), received_us=later + 1) == (
        "applied"
    )
    assert _marker(device) == 3


def test_a_message_published_before_a_key_rotation_is_not_applied_after_it(broker):
    device = mqtt_device()
    Device.objects.filter(pk=device.device.pk).update(api_key_digest="1" * 64)
    with pytest.raises(Dropped) as exc:
        message_apply(topic=device.topic, payload=orjson.dumps(report(device)), received_us=now_us())
    assert exc.value.reason == "credentials_revoked"


# Waiting long enough to cover four publishes on a loaded machine; a batch of four is full and goes at once.
@pytest.mark.parametrize(("batch_wait", "one_batch"), [(10.0, True), (0.0, False)])
def test_reports_arriving_one_by_one_are_applied_together_within_the_batch_wait(broker, batch_wait, one_batch):
    """A steady fleet's reports arrive one by one; a batch waits ``batch_wait`` after its first message for more,
    so they share one lookup, one write and one commit (``--batch-wait``, 0: only what is already buffered)."""
    devices = [device_with(f"w-{n}") for n in range(4)]
    sizes: list[int] = []
    worker = InProcessWorker(broker, batch_wait=batch_wait, batch_size=4)
    process = worker.ingestor._process_batch

    def counted(batch):
        sizes.append(len(batch))
        return process(batch)

    worker.ingestor._process_batch = counted  # type: ignore[method-assign]
    applied = _count(MESSAGES, "applied")
    with worker:
        for device in devices:
            mqtt = MqttDevice(device, device.api_key, device_mqtt_credentials_issue(device=device))
            client = device_connect(broker, mqtt)
            body = {mqtt.uuid: {"version": device.target_state.version, "config": {"sensors": target_sensors(device)}}}
            assert not publish(client, mqtt.topic, body).is_failure
            client.disconnect()
            time.sleep(0.1)
        wait_until(lambda: _count(MESSAGES, "applied") == applied + 4)
    assert (sizes == [4]) is one_batch, sizes
