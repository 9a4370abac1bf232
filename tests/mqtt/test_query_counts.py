"""An MQTT report runs a fixed, small number of SQL statements whatever the number of sensors, as the PATCH does
(``tests/agent/test_query_counts.py``, whose counts these are: the SAVEPOINT and RELEASE of the test's own
transaction included)."""

import orjson
import pytest

from devices.services import device_create
from ingest.services import device_mqtt_credentials_issue
from ingest.worker import message_apply, now_us
from reconciliation.services.targets import target_state_update
from sensors.models import DeviceSensor
from tests.agent.test_query_counts import (
    DEPLOY_REPORT_STATEMENTS,
    NO_OP_LIVENESS_DUE_STATEMENTS,
    NO_OP_STATEMENTS,
    SAVEPOINTS,
)
from tests.helpers import sensor_payload, target_sensors, target_version

from .support import MqttDevice

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("sensors", [1, 200], ids=lambda n: f"{n}-sensors")
def test_an_mqtt_report_runs_as_few_statements_as_the_patch(broker, sensors, django_assert_num_queries):
    """A changed report: the PATCH's statements (the lookup also reads the key the credentials were issued under,
    the lock's UPDATE also writes the receipt clock). An unchanged one: the lookup and the UPDATE of the receipt
    clock, which is due on every message. A stale one: the lookup."""
    created = device_create(name="counted")
    sensor_list = [sensor_payload(f"s{i:04}") for i in range(sensors)]
    target_state_update(uuid=created.device.uuid, user=None, config={"sensors": sensor_list})
    device = MqttDevice(created.device, created.api_key, device_mqtt_credentials_issue(device=created.device))
    body = orjson.dumps(
        {device.uuid: {"version": target_version(device.device), "config": {"sensors": target_sensors(device.device)}}}
    )

    with django_assert_num_queries(DEPLOY_REPORT_STATEMENTS + SAVEPOINTS):
        assert message_apply(topic=device.topic, payload=body, received_us=now_us()) == "applied"
    with django_assert_num_queries(NO_OP_LIVENESS_DUE_STATEMENTS):
        assert message_apply(topic=device.topic, payload=body, received_us=now_us()) == "unchanged"
    with django_assert_num_queries(NO_OP_STATEMENTS):
        assert message_apply(topic=device.topic, payload=body, received_us=1) == "stale"
    statuses = set(DeviceSensor.objects.filter(device=device.device).values_list("deployment_status", flat=True))
    assert statuses == {"deployed"}
