"""What the rollout tests share: a labelled fleet following one template through an assignment, made through the
real services, and agents converging (or failing) through the service the agent endpoint calls."""

import pytest

from devices.models import DeviceCurrentState, DeviceTargetState
from fleetconfig import services as fleet
from rollouts import services
from tests.factories import DeviceFactory
from tests.fleetconfig.conftest import template_sensor
from tests.helpers import report_running


def rendered(device, name: str = "temp") -> dict:
    config = DeviceTargetState.objects.get(device=device).config
    return next(s for s in config["sensors"] if s["name"] == name)


def poll_of(device) -> int:
    return rendered(device)["pollInterval"]


def converge(devices) -> None:
    """Each device's agent runs its whole target (one that already reported it has nothing new to say)."""
    for device in devices:
        target = DeviceTargetState.objects.get(device=device)
        current = DeviceCurrentState.objects.filter(device=device).values_list("version", flat=True).first()
        if current != target.version:
            report_running(device)


def fail(devices, sensor: str = "temp") -> None:
    """Each device's agent applies its target but cannot set ``sensor`` up (left out of its report)."""
    for device in devices:
        target = DeviceTargetState.objects.get(device=device)
        report_running(device, sensors=[s for s in target.config["sensors"] if s["name"] != sensor])


@pytest.fixture
def fleet_of(db, django_capture_on_commit_callbacks):
    """``fleet_of({"site=a": 10, "site=b": 10})``: that many devices per label, a template "boiler" (one sensor
    "temp", pollInterval 1000) and an assignment following it on every device; every agent in sync."""

    def make(groups: dict[str, int]):
        devices = []
        for label, count in groups.items():
            key, value = label.split("=")
            devices += [DeviceFactory(labels={key: value}) for _ in range(count)]
        with django_capture_on_commit_callbacks(execute=True):
            template = fleet.sensor_template_create(
                name="boiler", sensors=[template_sensor("temp", pollInterval=1000)], user=None
            )
            fleet.assignment_create(user=None, name="boilers", template=str(template.uuid), selector="")
        converge(devices)
        return template, devices

    return make


@pytest.fixture
def start(django_capture_on_commit_callbacks):
    """``start(template, **settings)``: a template rollout to pollInterval 2000, its on-commit work run."""

    def make(template, **settings):
        settings.setdefault("stages", [{"percent": 10}, {"percent": 50}, {"percent": 100}])
        settings.setdefault("success_threshold", 100)
        settings.setdefault("error_threshold", 20)
        with django_capture_on_commit_callbacks(execute=True):
            return services.rollout_create(
                user=None,
                name="boiler-2000",
                kind="template",
                template=str(template.uuid),
                sensors=[template_sensor("temp", pollInterval=2000)],
                **settings,
            )

    return make


@pytest.fixture
def drive(django_capture_on_commit_callbacks):
    """One pass of the driver, its on-commit work (render jobs) run."""

    def run():
        with django_capture_on_commit_callbacks(execute=True):
            return services.rollouts_drive()

    return run
