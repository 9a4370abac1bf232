import uuid
from io import StringIO

import pytest
from django.core.management import CommandError, call_command, load_command_class

from events.models import Event
from reconciliation.management.commands import rebuild_read_model as rebuild_command
from sensors.models import DeviceSensor
from tests.helpers import device_with

from .conftest import run


def tamper(device, name: str, **values) -> None:
    """Corrupt a read-model row behind the services' back (``update()`` fires no signal)."""
    assert DeviceSensor.objects.filter(device=device, name=name).update(**values) == 1


def test_check_passes_on_consistent_data(fleet):
    out, err = run("rebuild_read_model", "--check")

    assert out == "Checked 3 devices: the read model matches its target and current state.\n"
    assert err == ""


def test_check_fails_with_a_line_naming_device_sensor_and_field(fleet):
    silent = fleet["silent"]
    tamper(silent, "temp-2", deployment_status="deployed")
    events_before = Event.objects.count()

    with pytest.raises(CommandError) as exc:
        run("rebuild_read_model", "--check")

    assert exc.value.returncode == 1
    assert "1 difference on 1 of 3 devices" in str(exc.value)
    assert "rebuild_read_model" in str(exc.value)
    # Nothing was written: the corrupt row is still corrupt and no event was appended.
    assert DeviceSensor.objects.get(device=silent, name="temp-2").deployment_status == "deployed"
    assert Event.objects.count() == events_before


def test_check_prints_each_difference_on_stdout(fleet):
    silent, failing = fleet["silent"], fleet["failing"]
    tamper(silent, "temp-2", deployment_status="deployed")
    tamper(failing, "door-1", deployment_status="deployed", deployment_error="")

    out = StringIO()
    with pytest.raises(CommandError, match="3 differences on 2 of 3 devices"):
        call_command("rebuild_read_model", "--check", stdout=out, stderr=StringIO())

    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith(f"[failing] {failing.uuid} door-1: deployment_status is 'deployed', expected ")
    assert "failed" in lines[0].lower()
    assert lines[1] == f"[failing] {failing.uuid} door-1: deployment_error is '', expected 'connection refused'"
    assert lines[2].startswith(f"[silent] {silent.uuid} temp-2: deployment_status is 'deployed', expected ")
    assert "pending" in lines[2].lower()


def test_rebuild_repairs_the_row_and_check_passes_again(fleet):
    silent = fleet["silent"]
    tamper(silent, "temp-2", deployment_status="deployed")

    out, _ = run("rebuild_read_model")

    assert out.splitlines() == [
        f"repaired silent ({silent.uuid}): inserted 0, updated 1, removed 0",
        "Rebuilt the read model of 3 devices: 1 repaired (rows inserted 0, updated 1, removed 0), 2 already "
        "consistent; 2 not in sync with their target.",
    ]
    row = DeviceSensor.objects.get(device=silent, name="temp-2")
    assert (row.deployment_status, row.updated_by) == ("pending", "command:rebuild_read_model")
    out, _ = run("rebuild_read_model", "--check")
    assert "matches" in out


def test_rebuild_restores_deleted_rows_and_removes_stray_ones(fleet):
    synced = fleet["synced"]
    DeviceSensor.objects.filter(device=synced, name="flow-1").delete()
    stray = DeviceSensor.objects.get(device=synced, name="temp-1")
    stray.pk, stray.name = None, "ghost"
    stray.save()  # a row for a sensor that is neither desired nor running

    with pytest.raises(CommandError):
        run("rebuild_read_model", "--check", "--device", str(synced.uuid))
    out, _ = run("rebuild_read_model", "--device", str(synced.uuid))

    assert f"repaired synced ({synced.uuid}): inserted 1, updated 0, removed 1" in out
    assert set(DeviceSensor.objects.filter(device=synced).values_list("name", flat=True)) == {"temp-1", "flow-1"}
    run("rebuild_read_model", "--check")


def test_device_option_checks_only_that_device(fleet):
    tamper(fleet["silent"], "temp-2", deployment_status="deployed")

    out, _ = run("rebuild_read_model", "--check", "--device", str(fleet["synced"].uuid))

    assert out.startswith("Checked 1 device:")


def test_an_unknown_device_is_an_error(db):
    missing = uuid.uuid4()
    for args in (["--check"], []):
        with pytest.raises(CommandError, match=f"No device with uuid {missing}.") as exc:
            run("rebuild_read_model", "--device", str(missing), *args)
        assert exc.value.returncode == 1


def test_check_reads_in_pages_with_one_query_per_device(db, monkeypatch, django_assert_num_queries):
    monkeypatch.setattr(rebuild_command, "CHUNK_SIZE", 2)
    devices = [device_with("temp-1", "temp-2") for _ in range(5)]
    tamper(devices[-1], "temp-1", running=True)  # on the last page

    # COUNT, 3 pages + the empty one, then one SELECT of each device's rows.
    with django_assert_num_queries(1 + 4 + 5), pytest.raises(CommandError, match="1 difference on 1 of 5"):
        run("rebuild_read_model", "--check")


def test_progress_goes_to_stderr(db, monkeypatch):
    monkeypatch.setattr(rebuild_command, "PROGRESS_EVERY_MIN", 2)
    for _ in range(3):
        device_with("temp-1")

    _, err = run("rebuild_read_model")

    assert err.splitlines() == ["rebuilt 2/3", "rebuilt 3/3"]


def test_from_the_shell_a_failed_check_exits_1(fleet, monkeypatch, capsys):
    # run_from_argv closes every connection when it ends; keep the test's transaction open.
    monkeypatch.setattr("django.core.management.base.connections.close_all", lambda: None)
    tamper(fleet["silent"], "temp-2", deployment_status="deployed")
    command = load_command_class("reconciliation", "rebuild_read_model")

    with pytest.raises(SystemExit) as exc:
        command.run_from_argv(["manage.py", "rebuild_read_model", "--check"])

    assert exc.value.code == 1
    captured = capsys.readouterr()
    assert f"[silent] {fleet['silent'].uuid} temp-2: deployment_status is 'deployed', expected " in captured.out
    assert captured.err.startswith("CommandError: The read model differs from the projection")
