"""A staff write reads in the log as intent first, then the new target version, then what reconciliation made of
it, all under the request's one correlation id."""

import pytest

from events.models import Event
from tests.helpers import sensors_url

pytestmark = pytest.mark.django_db


def _last_request_events(device) -> list[str]:
    latest = Event.objects.filter(aggregate_id=str(device.uuid)).order_by("-sequence").first()
    return list(
        Event.objects.filter(aggregate_id=str(device.uuid), correlation_id=latest.correlation_id)
        .order_by("sequence")
        .values_list("type", flat=True)
    )


@pytest.mark.parametrize(
    ("call", "intent"),
    [
        (
            lambda c, url: c.post(url, {"name": "t1", "protocol": "can", "connection": {"bus": "can0"}}, format="json"),
            "sensor.added",
        ),
        (lambda c, url: c.patch(f"{url}/s0", {"pollInterval": 700}, format="json"), "sensor.updated"),
        (lambda c, url: c.delete(f"{url}/s0"), "sensor.removed"),
    ],
    ids=["add", "change", "remove"],
)
def test_a_sensor_write_logs_its_intent_before_the_new_target_version(admin_client, device, call, intent):
    url = sensors_url(device.uuid)
    admin_client.post(url, {"name": "s0", "protocol": "modbus", "connection": {"host": "h"}}, format="json")

    assert call(admin_client, url).status_code in (200, 201, 204)

    assert _last_request_events(device)[:2] == [intent, "target_state.updated"]
