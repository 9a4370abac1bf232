"""The simulated fleet (``manage.py simulate_fleet``: agents speaking the real agent's protocol over HTTP to a live
server) converges on a rendered configuration: its own sensors plus what an assignment renders, then again after the
template changes."""

import io

import pytest
from django.core.management import call_command
from django.db import connection

from devices.models import Device, DeviceCurrentState, DeviceTargetState
from fleetconfig import services
from fleetconfig.rendering import rendered_sensor_id
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor

from .conftest import labelled_device, make_template, template_sensor

pytestmark = pytest.mark.django_db(transaction=True)

# One agent thread on SQLite (the live server shares the in-memory database through one connection).
CONCURRENCY = 1 if connection.vendor == "sqlite" else 3


def simulate(live_server) -> str:
    out = io.StringIO()
    call_command(
        "simulate_fleet",
        url=live_server.url,
        devices=3,
        sensors=2,
        failure_rate=0.0,
        duration=2.5,
        poll_interval=0.3,
        report_interval=0.2,
        concurrency=CONCURRENCY,
        seed=7,
        quiet=True,
        stdout=out,
        stderr=io.StringIO(),
    )
    return out.getvalue()


def converged_on(device: Device, names: set[str]) -> DeviceTargetState:
    target = DeviceTargetState.objects.get(device=device)
    assert {s["name"] for s in target.config["sensors"]} == names
    assert DeviceCurrentState.objects.get(device=device).version == target.version
    assert not target.needs_deployment
    rows = DeviceSensor.objects.filter(device=device)
    assert set(rows.values_list("name", flat=True)) == names
    assert set(rows.values_list("deployment_status", "running", "config_version")) == {
        (Status.DEPLOYED, True, target.version)
    }
    return target


def test_the_simulated_fleet_converges_on_the_rendered_configuration(live_server):
    devices = [labelled_device({"site": "lab"}, name=f"sim-000{n}") for n in (1, 2, 3)]
    template = make_template("lab-temp", template_sensor("lab-temp", pollInterval=1000))
    services.assignment_create(user=None, name="lab", template=str(template.uuid), selector="site=lab")

    # The simulator writes each device's own sensors (a whole target-state document): what the assignment renders
    # stays, and the agents deploy both.
    output = simulate(live_server)

    assert "devices: 3 in sync, 0 drifting" in output and "Errors: none" in output
    for device in devices:
        assert len(own_names(device)) == 2  # the simulator's own two sensors
        target = converged_on(device, {"lab-temp", *own_names(device)})
        rendered = next(s for s in target.config["sensors"] if s["name"] == "lab-temp")
        assert rendered["id"] == rendered_sensor_id(device.uuid, "lab-temp") and rendered["pollInterval"] == 1000

    # A new template version re-renders the three devices; the fleet converges on it.
    change = services.sensor_template_update(
        uuid=template.uuid, user=None, sensors=[template_sensor("lab-temp", pollInterval=2000)]
    )
    change.job.refresh_from_db()
    assert (change.job.status, change.job.changed) == ("done", 3)
    output = simulate(live_server)
    assert "devices: 3 in sync, 0 drifting" in output
    for device in devices:
        target = converged_on(device, {"lab-temp", *own_names(device)})
        assert next(s for s in target.config["sensors"] if s["name"] == "lab-temp")["pollInterval"] == 2000
        running = DeviceSensor.objects.get(device=device, name="lab-temp")
        assert running.poll_interval == 2000


def own_names(device: Device) -> set[str]:
    config = DeviceTargetState.objects.get(device=device).config
    return {s["name"] for s in config["sensors"] if s["id"] != rendered_sensor_id(device.uuid, s["name"])}
