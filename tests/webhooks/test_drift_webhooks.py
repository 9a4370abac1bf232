"""Drift starting and ending, reported by an agent over real HTTP (pytest-django's live server, the agent's gzip
PATCH), make exactly one webhook each, however many reports come between; the worker POSTs them to a real receiver."""

import gzip
import io

import orjson
import pytest
from django.core.management import call_command

from reconciliation.models import DriftEpisode
from reconciliation.services.sensors import sensor_create
from tests.factories import DeviceFactory, SensorPayloadFactory
from tests.helpers import REPORT_URL, target_sensors
from tests.servers import http

from .conftest import endpoint_for

pytestmark = pytest.mark.django_db(transaction=True)

DRIFT, IN_SYNC = "device.config_drift", "device.in_sync"


def patch(live_server, device, body: dict) -> dict:
    """The 2025-11-22 agent's report: gzip JSON, X-Device-API-Key; the server's verdict for the device."""
    status, _headers, answer = http(
        "PATCH",
        live_server.url + REPORT_URL,
        body=gzip.compress(orjson.dumps({str(device.uuid): body})),
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip", "X-Device-API-Key": device.api_key},
    )
    assert status == 200, answer
    return orjson.loads(answer)[str(device.uuid)]


def health(**states: str) -> dict:
    return {
        name: {"protocol": "modbus", "status": state, "connected": state == "online", "lastError": None}
        for name, state in states.items()
    }


def test_drift_start_and_end_through_the_agent_protocol_make_one_webhook_each(live_server, receiver, fast_retries):
    device = DeviceFactory()
    for name in ("a", "b"):
        sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name=name), user=None)
    running = target_sensors(device)
    assert patch(live_server, device, {"version": 3, "config": {"sensors": running}, "apps": {}})["inSync"]
    endpoint, secret = endpoint_for(receiver.url, DRIFT, IN_SYNC)  # from here on, the receiver is told

    outcomes = [
        # b stops running: drift starts.
        patch(live_server, device, {"version": 3, "config": {"sensors": running[:1]}, "apps": {}})["outcome"],
        # The same report again (config left out, as the agent does while it has not changed): nothing new.
        patch(live_server, device, {"version": 3, "apps": {}})["outcome"],
        # a stops too: the drifting set changes within the episode.
        patch(live_server, device, {"version": 3, "config": {"sensors": []}, "apps": {}})["outcome"],
        # Health moves: still the same drift.
        patch(live_server, device, {"version": 3, "apps": {}, "endpoints_health": health(a="offline")})["outcome"],
        # Both run again: drift ends.
        patch(live_server, device, {"version": 3, "config": {"sensors": running}, "apps": {}})["outcome"],
        # Health moves while in sync: nothing.
        patch(live_server, device, {"version": 3, "apps": {}, "endpoints_health": health(a="online")})["outcome"],
    ]
    assert outcomes == ["applied", "unchanged", "applied", "applied", "applied", "applied"]

    call_command("deliver_webhooks", "--once", stdout=io.StringIO())

    drift, ended = receiver.of_type(DRIFT), receiver.of_type(IN_SYNC)
    assert (len(drift), len(ended), len(receiver.received)) == (1, 1, 2)
    assert drift[0].verifies(secret) and ended[0].verifies(secret)
    episode = DriftEpisode.objects.get(device=device, ended_at__isnull=False, started_at__gt=endpoint.created_at)
    assert drift[0].json["data"]["episode"] == ended[0].json["data"]["episode"] == episode.pk
    assert drift[0].json["data"]["episode_started"] is True
    assert [s["name"] for s in drift[0].json["data"]["drifting_sensors"]] == ["b"]
    assert drift[0].json["aggregateId"] == ended[0].json["aggregateId"] == str(device.uuid)
