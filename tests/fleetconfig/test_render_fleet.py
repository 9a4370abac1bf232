"""``manage.py render_fleet``: the queued jobs run with a progress bar; re-renders asked for by hand; a failed job
resumed; and the worker (``--watch``) as a real process on PostgreSQL, stopped by SIGTERM."""

import signal
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from fleetconfig import services
from fleetconfig.choices import RenderJobStatusChoices as JobStatus
from fleetconfig.management.commands.render_fleet import progress_bar
from fleetconfig.models import RenderJob
from tests.servers import manage_py

from .conftest import desired_sensors, labelled_device, make_template, template_sensor


def run(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("render_fleet", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.mark.django_db
@override_settings(SENSORSYNC_RENDER_INLINE_MAX_DEVICES=0, SENSORSYNC_RENDER_BATCH_SIZE=2)
def test_the_queued_jobs_run_in_batches_with_a_progress_bar():
    assert run()[0] == "No render job is waiting.\n"
    devices = [labelled_device({"plant": "3"}) for _ in range(5)]
    template = make_template("boiler-temp", template_sensor("t1"))
    job = services.assignment_create(user=None, name="plant-3", template=str(template.uuid), selector="plant=3").job

    out, err = run()

    assert out.splitlines() == [
        f"Render job {job.uuid}: assignment plant-3 created (5 devices)",
        "  done: 5 devices, 5 changed, 0 unchanged, 0 failed, 0 with problems",
    ]
    assert err.splitlines() == [
        "[############..................] 2/5 devices  changed 2  unchanged 0  failed 0  with problems 0",
        "[########################......] 4/5 devices  changed 4  unchanged 0  failed 0  with problems 0",
        "[##############################] 5/5 devices  changed 5  unchanged 0  failed 0  with problems 0",
    ]
    assert all(set(desired_sensors(d)) == {"t1"} for d in devices)
    assert run()[0] == "No render job is waiting.\n"


@pytest.mark.django_db
def test_a_re_render_asked_for_by_hand_and_a_failed_job_resumed():
    device = labelled_device({"plant": "3"})
    template = make_template("boiler-temp", template_sensor("t1"))
    services.assignment_create(user=None, name="plant-3", template=str(template.uuid), selector="plant=3")
    out, _ = run("--selector", "plant=3")  # not committed here: the job waits for this command, which runs it
    assert "done: 1 devices, 1 changed" in out
    assert set(desired_sensors(device)) == {"t1"}
    assert "1 unchanged" in run("--device", str(device.uuid))[0]
    assert "1 unchanged" in run("--all")[0]

    job = RenderJob.objects.latest("id")
    RenderJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, processed=0, unchanged=0, last_device_id=0)
    out, _ = run("--job", str(job.uuid))
    assert "done: 1 devices, 0 changed, 1 unchanged" in out
    assert RenderJob.objects.get(pk=job.pk).status == JobStatus.DONE

    for args, message in (
        (("--selector", "plant in ("), "Invalid selector"),
        (("--device", "0b0f2f4e-9a43-4c55-9d0b-2f3e7a9c1d44"), "do not exist"),
        (("--job", "nope"), "is not a render job's uuid"),
        (("--job", "0b0f2f4e-9a43-4c55-9d0b-2f3e7a9c1d44"), "No render job"),
        (("--watch", "--interval", "0"), "--interval"),
    ):
        with pytest.raises(CommandError, match=message):
            run(*args)


@pytest.mark.django_db
def test_a_device_that_cannot_be_written_makes_the_command_fail():
    from devices.models import DeviceTargetState

    device = labelled_device({"plant": "3"})
    DeviceTargetState.objects.filter(device=device).update(
        config={"sensors": [{"id": "6f1c0000-0000-4000-8000-000000000001", "name": "x", "protocol": "zigbee"}]}
    )
    template = make_template("boiler-temp", template_sensor("t1"))
    services.assignment_create(user=None, name="plant-3", template=str(template.uuid), selector="plant=3")
    out, err = StringIO(), StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("render_fleet", stdout=out, stderr=err)
    assert exited.value.code == 1
    assert "1 failed" in out.getvalue() and f"could not write {device.uuid}" in err.getvalue()


def test_the_progress_bar():
    job = RenderJob(total=1000, processed=250, changed=10, unchanged=240, failed=0, with_problems=2)
    assert progress_bar(job) == (
        "[#######.......................]  250/1000 devices  changed 10  unchanged 240  failed 0  with problems 2"
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_worker_runs_jobs_as_they_are_queued_and_stops_on_sigterm(settings):
    settings.SENSORSYNC_RENDER_INLINE_MAX_DEVICES = 0
    device = labelled_device({"plant": "3"})
    worker = manage_py("render_fleet", "--watch", "--interval", "0.2")
    try:
        template = make_template("boiler-temp", template_sensor("t1"))
        job = services.assignment_create(user=None, name="plant-3", template=str(template.uuid), selector="plant=3").job
        deadline = time.monotonic() + 60
        while RenderJob.objects.get(pk=job.pk).status != JobStatus.DONE:
            assert time.monotonic() < deadline, "the worker did not run the job"
            assert worker.poll() is None, worker.communicate()
            time.sleep(0.1)
        assert set(desired_sensors(device)) == {"t1"}
    finally:
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "Watching for render jobs" in out and "done: 1 devices, 1 changed" in out
