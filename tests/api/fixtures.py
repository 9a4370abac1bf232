"""Fixtures for the management API tests, imported by the conftest of each test folder."""

import pytest

from devices.models import Device, DeviceCurrentState, DeviceTargetState
from reconciliation.agent_protocol import report_parse
from reconciliation.services.reports import state_report_apply
from reconciliation.services.sensors import sensor_create
from tests.factories import DeviceFactory, SensorPayloadFactory


@pytest.fixture
def sensor_device(db, superuser):
    """A device whose target holds one sensor, ``temp-1`` (target version 2), never reported."""
    device = DeviceFactory()
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="temp-1"), user=superuser)
    device.refresh_from_db()
    return device


def report_running(
    device, *, sensors: list[dict] | None = None, version: int | None = None, **extra
) -> DeviceCurrentState:
    """The agent reports what runs, through the same service the agent endpoint calls.

    ``sensors`` defaults to exactly the current target and ``version`` to the target version (an agent that
    applied everything); ``extra`` adds top-level report fields (``endpoints_health``, metrics).
    """
    device = Device.objects.select_related("target_state").get(pk=device.pk)  # fresh: no cached old target
    target = DeviceTargetState.objects.get(device=device)
    running = target.config["sensors"] if sensors is None else sensors
    report = report_parse(
        {
            "version": target.version if version is None else version,
            "config": {**target.config, "sensors": running},
            "apps": target.apps,
            **extra,
        }
    )
    verdict = state_report_apply(device=device, report=report)
    assert verdict.outcome == "applied" and not verdict.reconciliation_failed, verdict
    return DeviceCurrentState.objects.get(device=device)
