"""A long randomized run of staff writes and agent reports through HTTP, after which the read model is exactly the
projection of (target, last report) and the event log reproduces every target version; tampering with either is
caught with a readable line (SPEC sections 2 and 6; the operator checks of ``rebuild_read_model`` and
``replay_events``)."""

import random
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from devices.models import DeviceTargetStateVersion
from events.models import Event
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory
from tests.helpers import (
    poll,
    reconcile_url,
    report,
    rollback_url,
    sensor_url,
    sensors_url,
    target_sensors,
    target_version,
)

pytestmark = pytest.mark.django_db

PROTOCOLS = ["modbus", "can", "opcua", "mqtt"]
ERRORS = ["connection refused", "timeout after 3000 ms", "bus-off", "certificate rejected"]


class Run:
    """Random but reproducible traffic against a small fleet: everything a real fleet does, in any order."""

    def __init__(self, admin_client, devices, seed: int):
        self.rng = random.Random(seed)
        self.staff = admin_client
        self.agent = Client()
        self.devices = devices
        self.seq = dict.fromkeys((d.pk for d in devices), 0)
        self.counts: dict[str, int] = {}
        self.statuses: set[int] = set()

    def _call(self, kind: str, response) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.statuses.add(response.status_code)
        assert response.status_code < 500, (kind, response.status_code, response.content[:400])

    def _sensor(self, name: str) -> dict:
        return {
            "name": name,
            "protocol": self.rng.choice(PROTOCOLS),
            "enabled": self.rng.random() > 0.15,
            "pollInterval": self.rng.choice([500, 1000, 5000, 60000]),
            "connection": {"host": f"10.0.0.{self.rng.randint(1, 254)}", "port": self.rng.choice([502, 4840])},
            "dataPoints": [{"name": f"p{i}", "address": 40001 + i} for i in range(self.rng.randint(0, 3))],
        }

    def staff_add(self, device):
        name = f"s{self.rng.randint(0, 9)}"
        self._call("add", self.staff.post(sensors_url(device.uuid), self._sensor(name), format="json"))

    def staff_change(self, device):
        names = [s["name"] for s in target_sensors(device)]
        if names:
            body = {"pollInterval": self.rng.choice([700, 2000, 9000]), "enabled": self.rng.random() > 0.2}
            url = sensor_url(device.uuid, self.rng.choice(names))
            self._call("change", self.staff.patch(url, body, format="json"))

    def staff_delete(self, device):
        names = [s["name"] for s in target_sensors(device)]
        if names:
            url = sensor_url(device.uuid, self.rng.choice(names))
            self._call("delete", self.staff.delete(url))

    def staff_rollback(self, device):
        version = self.rng.randint(1, target_version(device))
        url = rollback_url(device.uuid)
        self._call("rollback", self.staff.post(url, {"version": version}, format="json"))

    def staff_reconcile(self, device):
        self._call("reconcile", self.staff.post(reconcile_url(device.uuid)))

    def agent_poll(self, device):
        self._call("poll", poll(self.agent, device, etag=self.rng.choice([None, f'"{target_version(device)}"'])))

    def agent_report(self, device):
        """The agent runs some of the target (or an older picture of it), with health, in order or not."""
        desired = target_sensors(device)
        running = [s for s in desired if s["enabled"] and self.rng.random() > 0.25]
        for item in running:
            if self.rng.random() < 0.1:
                item["pollInterval"] += 1  # runs another config than desired
            if self.rng.random() < 0.2:
                item["metadata"] = {"firmware": self.rng.choice(["1.0", "1.1"])}
        if self.rng.random() < 0.1:
            running.append(self._sensor("leftover") | {"id": None})
        health = {
            s["name"]: {"healthy": False, "lastError": self.rng.choice(ERRORS)}
            for s in desired
            if s not in running and self.rng.random() < 0.7
        }
        version = target_version(device) - self.rng.choice([0, 0, 0, 1])
        self.seq[device.pk] += 1
        seq = self.seq[device.pk] - (5 if self.rng.random() < 0.1 else 0)  # now and then an old one (stale)
        self._call("report", report(self.agent, device, max(version, 0), running, health=health, seq=seq))

    def go(self, steps: int) -> None:
        actions = [
            (self.staff_add, 4),
            (self.staff_change, 3),
            (self.staff_delete, 2),
            (self.staff_rollback, 1),
            (self.staff_reconcile, 1),
            (self.agent_poll, 3),
            (self.agent_report, 8),
        ]
        funcs, weights = zip(*actions, strict=True)
        for _ in range(steps):
            self.rng.choices(funcs, weights)[0](self.rng.choice(self.devices))


def _check(command: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command(command, "--check", stdout=out, stderr=StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


@pytest.fixture
def after_a_long_run(admin_client):
    devices = [DeviceFactory() for _ in range(4)]
    run = Run(admin_client, devices, seed=20261126)
    run.go(400)
    return run


def test_after_a_long_randomized_run_the_read_model_and_the_log_check_clean(after_a_long_run):
    run = after_a_long_run
    # The run exercised what it claims to: every kind of call, refusals included, and no 5xx.
    assert set(run.counts) == {"add", "change", "delete", "rollback", "reconcile", "poll", "report"}
    assert {200, 201, 204, 304}.issubset(run.statuses)
    assert DeviceSensor.objects.exclude(deployment_status="deployed").exists()

    code, output = _check("rebuild_read_model")
    assert code == 0, output
    code, output = _check("replay_events")
    assert code == 0, output

    for device in run.devices:
        sequences = list(
            Event.objects.filter(aggregate_id=str(device.uuid)).order_by("sequence").values_list("sequence", flat=True)
        )
        assert sequences == list(range(1, len(sequences) + 1))


def test_a_tampered_sensor_row_fails_the_read_model_check_with_a_readable_line(after_a_long_run):
    row = DeviceSensor.objects.exclude(deployment_status="failed").order_by("id").first()
    DeviceSensor.objects.filter(pk=row.pk).update(deployment_status="failed", deployment_error="tampered")

    code, output = _check("rebuild_read_model")

    assert code == 1
    assert f"{row.name}: deployment_status is 'failed', expected '{row.deployment_status}'" in output
    call_command("rebuild_read_model", stdout=StringIO(), stderr=StringIO())
    assert _check("rebuild_read_model")[0] == 0


def test_a_tampered_history_row_fails_the_replay_check_with_a_readable_line(after_a_long_run):
    version = DeviceTargetStateVersion.objects.order_by("id")[3]
    DeviceTargetStateVersion.objects.filter(pk=version.pk).update(config={"sensors": []} | {"x": 1})

    code, output = _check("replay_events")

    assert code == 1
    assert f"v{version.version}: stored config differs from the config the log records" in output
