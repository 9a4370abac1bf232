"""Optimistic concurrency on sensor writes: If-Match against the target ETag (412 on a mismatch)."""

import pytest

from tests.factories import SensorPayloadFactory
from tests.helpers import assert_error, sensor_url, sensors_url, target_of, target_state_url, write_snapshot

pytestmark = pytest.mark.django_db

# sensor_device's target is at version 2, so its ETag is "2".
WRITES = {
    "create": ("post", lambda d: sensors_url(d.uuid), SensorPayloadFactory.build(name="new-one")),
    "put": ("put", lambda d: sensor_url(d.uuid, "temp-1"), {"protocol": "can", "connection": {"bus": "can0"}}),
    "patch": ("patch", lambda d: sensor_url(d.uuid, "temp-1"), {"pollInterval": 250}),
    "delete": ("delete", lambda d: sensor_url(d.uuid, "temp-1"), None),
}
SUCCESS = {"create": 201, "put": 200, "patch": 200, "delete": 204}


def _send(client, device, write, if_match):
    method, url, body = WRITES[write]
    kwargs = {"HTTP_IF_MATCH": if_match} if if_match is not None else {}
    if body is not None:
        kwargs |= {"data": body, "format": "json"}
    return getattr(client, method)(url(device), **kwargs)


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("if_match", ['"2"', "*", '"1", "2"', None])
def test_a_matching_or_absent_if_match_succeeds_and_answers_the_new_etag(admin_client, sensor_device, write, if_match):
    response = _send(admin_client, sensor_device, write, if_match)

    assert response.status_code == SUCCESS[write], response.content
    assert target_of(sensor_device).version == 3
    if write != "delete":
        assert response["ETag"] == '"3"'


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("if_match", ['"1"', '"3"', 'W/"2"', "2", '"1", "3"'])
def test_a_stale_if_match_is_412_with_the_current_etag_and_writes_nothing(admin_client, sensor_device, write, if_match):
    before = write_snapshot()

    response = _send(admin_client, sensor_device, write, if_match)

    assert_error(response, 412, "precondition_failed")
    assert response["ETag"] == '"2"'
    assert write_snapshot() == before


def test_a_lost_update_is_prevented(admin_client, sensor_device):
    """Two clients read the same ETag; the second write is refused instead of overwriting the first."""
    etag = admin_client.get(target_state_url(sensor_device.uuid))["ETag"]

    first = admin_client.patch(
        sensor_url(sensor_device.uuid, "temp-1"), {"pollInterval": 111}, format="json", HTTP_IF_MATCH=etag
    )
    second = admin_client.patch(
        sensor_url(sensor_device.uuid, "temp-1"), {"pollInterval": 222}, format="json", HTTP_IF_MATCH=etag
    )

    assert first.status_code == 200
    assert second.status_code == 412
    assert second["ETag"] == first["ETag"] == '"3"'
    stored = target_of(sensor_device).config["sensors"][0]
    assert stored["pollInterval"] == 111
    third = admin_client.patch(
        sensor_url(sensor_device.uuid, "temp-1"), {"pollInterval": 222}, format="json", HTTP_IF_MATCH=second["ETag"]
    )
    assert third.status_code == 200


def test_a_stale_if_match_with_an_invalid_body_writes_nothing(admin_client, sensor_device):
    before = write_snapshot()

    response = admin_client.post(
        sensors_url(sensor_device.uuid), {"name": "bad name"}, format="json", HTTP_IF_MATCH='"1"'
    )

    # A stale If-Match is a mismatch, whatever the body (README: 412 on mismatch): the precondition comes first.
    assert_error(response, 412, "precondition_failed")
    assert write_snapshot() == before
