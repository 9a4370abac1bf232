"""``simulate_fleet --transport mqtt``: agents publish their reports as the 2025-11-22 agent does, through the
project's broker and an ingestion worker, and fall back to HTTP when the broker does not take them."""

import re

import pytest

from devices.models import DeviceCurrentState, DeviceTargetState
from sensors.models import DeviceSensor
from tests.simulator.test_simulate_fleet import simulate

from .support import InProcessWorker

pytestmark = pytest.mark.django_db(transaction=True)


def _published(output: str) -> tuple[int, int]:
    match = re.search(r"^MQTT: (\d+) reports published, (\d+) sent over HTTP instead", output, re.M)
    assert match, output
    return int(match[1]), int(match[2])


def _converged(prefix: str) -> None:
    targets = DeviceTargetState.objects.filter(device__name__startswith=prefix)
    assert targets.count() == 2
    for target in targets:
        assert DeviceCurrentState.objects.get(device_id=target.device_id).version == target.version
        assert not target.needs_deployment
    statuses = set(
        DeviceSensor.objects.filter(device__name__startswith=prefix).values_list("deployment_status", flat=True)
    )
    assert statuses == {"deployed"}


def test_agents_report_over_mqtt_and_the_fleet_converges(live_server, broker):
    with InProcessWorker(broker):
        output = simulate(live_server, prefix="mq", devices=2, agent="2025-11-22", transport="mqtt", duration=3.0)
    assert "MQTT: 2 of 2 agents publish their reports" in output
    published, fell_back = _published(output)
    assert published >= 2 and fell_back == 0
    _converged("mq")


def test_without_the_broker_agents_fall_back_to_http(live_server, broker, monkeypatch):
    from reconciliation.management.commands import simulate_fleet

    issue, issued = simulate_fleet.device_mqtt_credentials_issue, []

    def issue_then_stop(*, device):  # both devices' credentials issued, then the broker goes away
        issued.append(issue(device=device))
        if len(issued) == 2:
            broker.stop()
        return issued[-1]

    monkeypatch.setattr(simulate_fleet, "device_mqtt_credentials_issue", issue_then_stop)
    output = simulate(live_server, prefix="fb", devices=2, agent="2025-11-22", transport="mqtt", duration=3.0)
    published, fell_back = _published(output)
    assert published == 0 and fell_back >= 2
    assert "broker unreachable" in output
    _converged("fb")
