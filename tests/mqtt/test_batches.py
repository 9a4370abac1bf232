"""The ingestion worker applies what the client has buffered as a batch (``ingest.worker.messages_apply``): one
lookup of every device named, one UPDATE for every report that repeats its device's stored report (per shape of
write), and everything else handed back to be applied alone, in order. Counts exact, as in test_query_counts."""

import orjson
import pytest

from devices.models import Device
from devices.services import device_create
from ingest.services import device_mqtt_credentials_issue
from ingest.worker import Dropped, message_apply, messages_apply, now_us
from reconciliation.services import reports
from reconciliation.services.targets import target_state_update
from tests.helpers import sensor_payload, target_sensors, target_version

from .support import MqttDevice

pytestmark = pytest.mark.django_db

DEVICES = 12
BATCH_LOOKUP, ONE_WRITE = 1, 1


def _report(device: MqttDevice, **extra) -> bytes:
    running = target_sensors(device.device)
    entry = {"version": target_version(device.device), "config": {"sensors": running}, **extra}
    return orjson.dumps({device.uuid: entry})


@pytest.fixture
def fleet(broker) -> list[MqttDevice]:
    """Devices in sync: each one's first report applied."""
    devices = []
    for index in range(DEVICES):
        created = device_create(name=f"batch-{index}")
        target_state_update(uuid=created.device.uuid, user=None, config={"sensors": [sensor_payload(f"s{index}")]})
        device = MqttDevice(created.device, created.api_key, device_mqtt_credentials_issue(device=created.device))
        assert message_apply(topic=device.topic, payload=_report(device), received_us=now_us()) == "applied"
        devices.append(device)
    return devices


def test_a_batch_of_unchanged_reports_is_one_lookup_and_one_update(fleet, django_assert_num_queries):
    stamp = now_us()
    messages = [(d.topic, _report(d, uptime=7200.5), stamp + i) for i, d in enumerate(fleet)]

    with django_assert_num_queries(BATCH_LOOKUP + ONE_WRITE):
        outcomes = messages_apply(messages)

    assert outcomes == ["unchanged"] * DEVICES
    stored = dict(
        Device.objects.filter(pk__in=[d.device.pk for d in fleet]).values_list("pk", "last_report_received_us")
    )
    assert [stored[d.device.pk] for d in fleet] == [stamp + i for i in range(DEVICES)]
    assert set(Device.objects.filter(pk__in=stored).values_list("uptime", flat=True)) == {7200.5}


def test_metrics_reports_are_written_whole_in_a_second_statement(fleet, django_assert_num_queries):
    metrics = {"cpu_usage": 12, "memory_usage": 300, "memory_total": 1024, "uptime": 61.5}
    messages = [(d.topic, _report(d, **metrics) if i % 2 else _report(d), now_us()) for i, d in enumerate(fleet)]

    with django_assert_num_queries(BATCH_LOOKUP + 2 * ONE_WRITE):  # two shapes: with facts, without
        outcomes = messages_apply(messages)

    assert outcomes == ["unchanged"] * DEVICES
    facts = dict(Device.objects.filter(pk__in=[d.device.pk for d in fleet]).values_list("pk", "facts"))
    for i, device in enumerate(fleet):
        expected = {"cpu_usage": 12, "memory_usage": 300, "memory_total": 1024, "uptime": 61.5} if i % 2 else {}
        assert facts[device.device.pk] == expected


def test_what_the_batch_cannot_write_comes_back_to_be_applied_alone(fleet, django_assert_num_queries):
    first, second, third, fourth = fleet[:4]
    changed = orjson.dumps({first.uuid: {"version": target_version(first.device), "config": {"sensors": []}}})
    messages = [
        (first.topic, changed, now_us()),  # changed: applied alone
        (second.topic, _report(second), now_us()),
        (second.topic, _report(second), now_us()),  # the device's second message: alone, after the first
        (third.topic, _report(third), 1),  # older than its newest receipt: stale, nothing to write
        ("iot/device/not-a-uuid/state", b"{}", now_us()),
        (f"iot/device/{fourth.uuid}/state", b'{"x":1,"x":2}', now_us()),
    ]

    with django_assert_num_queries(BATCH_LOOKUP + ONE_WRITE):
        outcomes = messages_apply(messages)

    assert outcomes[:4] == [None, "unchanged", None, "stale"]
    assert isinstance(outcomes[4], Dropped) and outcomes[4].reason == "bad_topic"
    assert isinstance(outcomes[5], Dropped) and outcomes[5].reason == "malformed_json"
    assert message_apply(topic=first.topic, payload=changed, received_us=now_us()) == "applied"


def test_a_repeat_that_met_another_writer_is_applied_alone(fleet, monkeypatch):
    device = fleet[0]
    read_before = now_us()
    original = reports.repeated_reports_touch

    def moved_meanwhile(items):  # another writer (a staff edit) commits between the batch's lookup and its write
        Device.objects.filter(pk=device.device.pk).update(revision=10**6)
        return original(items)

    monkeypatch.setattr(reports, "repeated_reports_touch", moved_meanwhile)
    outcomes = messages_apply([(device.topic, _report(device), read_before)])
    monkeypatch.undo()

    assert outcomes == [None]
    assert Device.objects.get(pk=device.device.pk).last_report_received_us < read_before
    assert message_apply(topic=device.topic, payload=_report(device), received_us=read_before) == "unchanged"
    assert Device.objects.get(pk=device.device.pk).last_report_received_us == read_before


def test_a_deactivated_device_in_a_batch_is_dropped(fleet):
    device = fleet[0]
    Device.objects.filter(pk=device.device.pk).update(is_active=False)

    outcomes = messages_apply(
        [(device.topic, _report(device), now_us()), (fleet[1].topic, _report(fleet[1]), now_us())]
    )

    assert isinstance(outcomes[0], Dropped) and outcomes[0].reason == "device_inactive"
    assert outcomes[1] == "unchanged"
