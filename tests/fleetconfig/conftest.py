"""What the fleet configuration's tests share: templates, assignments and labelled devices made through the real
services, and a way to run the re-renders that a change queues once it commits (as in production)."""

import pytest

from devices.models import DeviceTargetState
from devices.services import device_labels_set
from devices.target_config import config_sensors
from fleetconfig import services
from tests.factories import DeviceFactory


def template_sensor(name: str, **fields) -> dict:
    """A complete sensor object, as a template holds it (no id)."""
    return {
        "name": name,
        "protocol": "modbus",
        "enabled": True,
        "pollInterval": 5000,
        "connection": {"host": "10.0.0.5", "port": 502, "unitId": 1},
        "dataPoints": [{"name": "temperature", "address": 40001, "type": "float32"}],
        "metadata": {},
        **fields,
    }


def make_template(name: str = "boiler-temp", *sensors: dict, user=None):
    return services.sensor_template_create(
        name=name, sensors=list(sensors) or [template_sensor("supply-temp")], user=user
    )


def labelled_device(labels: dict, **kwargs):
    device = DeviceFactory(**kwargs)
    if labels:
        device_labels_set(device_uuid=device.uuid, labels=labels, user=None)
    return device


def desired_sensors(device) -> dict[str, dict]:
    """The device's published target sensors, by name."""
    config = DeviceTargetState.objects.get(device=device).config
    return {s["name"]: s for s in config_sensors(config)}


def target_version(device) -> int:
    return DeviceTargetState.objects.values_list("version", flat=True).get(device=device)


@pytest.fixture
def committed(django_capture_on_commit_callbacks):
    """``with committed(): <a change>``: the change's on-commit work (its re-render) runs, as after a real commit."""

    def run():
        return django_capture_on_commit_callbacks(execute=True)

    return run
