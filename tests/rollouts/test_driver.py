"""The driver (``manage.py drive_rollouts``): safe to run twice at once, safe to kill at any point, and its output."""

import io
import signal
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from devices.models import DeviceTargetState
from events.models import Event
from rollouts import services
from rollouts.models import Rollout, RolloutDevice
from tests.servers import manage_py

from .conftest import converge, poll_of


def versions(devices) -> dict[int, int]:
    return dict(DeviceTargetState.objects.filter(device__in=devices).values_list("device_id", "version"))


@pytest.mark.django_db
def test_a_driver_killed_between_admitting_and_rendering_is_finished_by_the_next(fleet_of, start, drive, monkeypatch):
    template, devices = fleet_of({"site=a": 10})
    rollout = start(template, stages=[{"percent": 50}, {"percent": 100}])
    before = versions(devices)

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(services, "_render_and_record", killed)
    with pytest.raises(RuntimeError):
        drive()
    # Admitted (rows and releases written) but not re-rendered, no version recorded yet.
    assert RolloutDevice.objects.filter(rollout=rollout, target_version__isnull=True).count() == 5
    assert versions(devices) == before
    monkeypatch.undo()

    [step] = drive()
    assert step.outcome == "waiting"
    admitted = RolloutDevice.objects.filter(rollout=rollout)
    assert admitted.count() == 5 and not admitted.filter(target_version__isnull=True).exists()
    after = versions(devices)
    assert {pk for pk in after if after[pk] != before[pk]} == set(admitted.values_list("device_id", flat=True))
    assert all(after[row.device_id] == row.target_version == before[row.device_id] + 1 for row in admitted)
    assert Event.objects.filter(type="rollout.stage_started").count() == 1


@pytest.mark.django_db
def test_a_rollout_another_driver_holds_is_passed_by_until_its_lease_runs_out(fleet_of, start, drive):
    template, devices = fleet_of({"site=a": 4})
    rollout = start(template, stages=[{"percent": 100}])
    Rollout.objects.filter(pk=rollout.pk).update(lease_until=timezone.now() + timedelta(minutes=1))
    assert drive()[0].outcome == "busy"
    assert not RolloutDevice.objects.exists()
    Rollout.objects.filter(pk=rollout.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert drive()[0].outcome == "admitted"
    rollout.refresh_from_db()
    assert rollout.lease_until is None  # released after the step
    assert {poll_of(d) for d in devices} == {2000}


@pytest.mark.django_db
def test_the_command_says_what_each_pass_did(fleet_of, start, django_capture_on_commit_callbacks):
    template, devices = fleet_of({"site=a": 4})
    out = io.StringIO()
    call_command("drive_rollouts", stdout=out)
    assert out.getvalue() == "No rollout is running.\n"
    start(template, stages=[{"percent": 50}, {"percent": 100}])
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("drive_rollouts", stdout=out)
    assert "Rollout boiler-2000: admitted (2 devices admitted); stage 1/2, 2 targeted, 0 deployed" in out.getvalue()
    converge(devices)
    out = io.StringIO()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("drive_rollouts", stdout=out)
    assert "admitted (2 devices admitted); stage 2/2, 4 targeted, 2 deployed" in out.getvalue()
    with pytest.raises(CommandError, match="--interval"):
        call_command("drive_rollouts", "--watch", "--interval", "0")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_drivers_at_once_admit_each_device_once(fleet_of, start):
    """Two driver processes (each its own connection) started together, three times over."""
    template, devices = fleet_of({"site=a": 60})
    rollout = start(template, stages=[{"percent": 50}, {"percent": 100}])
    before = versions(devices)

    def two_passes() -> list[str]:
        drivers = [manage_py("drive_rollouts") for _ in range(2)]
        outputs = []
        for driver in drivers:
            out, err = driver.communicate(timeout=120)
            assert driver.returncode == 0, err
            outputs.append(out)
        return outputs

    outputs = two_passes()
    assert "admitted (30 devices admitted)" in "".join(outputs)
    admitted = RolloutDevice.objects.filter(rollout=rollout)
    assert admitted.count() == 30
    after = versions(devices)
    assert all(after[row.device_id] == before[row.device_id] + 1 == row.target_version for row in admitted)
    converge(devices)
    two_passes()
    converge(devices)
    two_passes()
    rollout.refresh_from_db()
    assert rollout.status == "finished"
    after = versions(devices)
    assert all(after[pk] == before[pk] + 1 for pk in before)  # each device written once, whatever two drivers did
    assert Event.objects.filter(type="rollout.stage_started").count() == 2
    assert Event.objects.filter(type="rollout.finished").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_worker_moves_a_rollout_on_and_stops_on_sigterm(fleet_of, start):
    template, devices = fleet_of({"site=a": 4})
    worker = manage_py("drive_rollouts", "--watch", "--interval", "0.2")
    try:
        rollout = start(template, stages=[{"percent": 50}, {"percent": 100}])
        deadline = time.monotonic() + 60
        while RolloutDevice.objects.filter(rollout=rollout).count() < 2:
            assert time.monotonic() < deadline, "the worker admitted nobody"
            assert worker.poll() is None, worker.communicate()
            time.sleep(0.1)
        converge(devices)
        while Rollout.objects.get(pk=rollout.pk).status != "finished":
            assert time.monotonic() < deadline, "the worker did not finish the rollout"
            converge(devices)
            time.sleep(0.1)
        assert {poll_of(d) for d in devices} == {2000}
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "Driving rollouts every 0.2 s" in out and "Rollout boiler-2000: finished" in out
