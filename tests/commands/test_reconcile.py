import uuid

import pytest
from django.core.management import CommandError, load_command_class

from events.models import Event
from reconciliation.management.commands import reconcile as reconcile_command
from sensors.models import DeviceSensor
from tests.factories import UserFactory
from tests.helpers import device_with

from .conftest import agent_report, run


def test_one_device_prints_versions_sync_and_counts(fleet):
    failing = fleet["failing"]

    out, _err = run("reconcile", "--device", str(failing.uuid))

    assert out == (
        f"failing ({failing.uuid}): target v3, reported v3, NOT in sync; inserted 0, updated 0, removed 0, failed 1"
        " (drifting: door-1)\n"
    )


def test_an_in_sync_device_says_so(fleet):
    out, _ = run("reconcile", "--device", str(fleet["synced"].uuid))

    assert "target v3, reported v3, in sync; inserted 0, updated 0, removed 0, failed 0" in out


def test_a_lost_row_is_rebuilt_and_the_repair_is_attributed_to_the_command(fleet):
    synced = fleet["synced"]
    DeviceSensor.objects.filter(device=synced, name="flow-1").delete()  # simulate a lost write

    out, _ = run("reconcile", "--device", str(synced.uuid))

    assert "inserted 1, updated 0, removed 0" in out
    row = DeviceSensor.objects.get(device=synced, name="flow-1")
    assert (row.deployment_status, row.running, row.updated_by) == ("deployed", True, "command:reconcile")
    event = Event.objects.filter(aggregate_id=str(synced.uuid), type="sensor.deployed").latest("id")
    assert event.data["name"] == "flow-1"
    assert event.metadata["source"] == "command"
    assert event.metadata["actor"] == "command:reconcile"


def test_the_user_option_names_the_actor(fleet):
    UserFactory(username="ops")
    DeviceSensor.objects.filter(device=fleet["synced"], name="flow-1").delete()

    run("reconcile", "--device", str(fleet["synced"].uuid), "--user", "ops")

    assert DeviceSensor.objects.get(device=fleet["synced"], name="flow-1").updated_by == "ops"


def test_all_prints_every_device_and_a_summary(fleet):
    out, err = run("reconcile", "--all")

    lines = out.splitlines()
    assert len(lines) == 4
    for device in fleet.values():
        assert sum(str(device.uuid) in line for line in lines) == 1
    assert "silent" in out and "reported never" in out
    assert lines[-1] == (
        "Reconciled 3 devices: 1 in sync, 2 not in sync; rows inserted 0, updated 0, removed 0; 1 failed sensor."
    )
    assert err == ""  # no progress for a small fleet


def test_all_with_verbosity_0_prints_only_the_summary(fleet):
    out, _ = run("reconcile", "--all", verbosity=0)

    assert out.startswith("Reconciled 3 devices:")
    assert len(out.splitlines()) == 1


def test_all_reports_progress_on_stderr_and_reads_devices_in_pages(db, monkeypatch):
    monkeypatch.setattr(reconcile_command, "PROGRESS_EVERY_MIN", 2)
    monkeypatch.setattr(reconcile_command, "CHUNK_SIZE", 2)
    for _ in range(5):
        device_with("temp-1")

    out, err = run("reconcile", "--all", verbosity=0)

    assert err.splitlines() == ["reconciled 2/5", "reconciled 4/5", "reconciled 5/5"]
    assert out.startswith("Reconciled 5 devices: 0 in sync, 5 not in sync")


def test_all_goes_on_past_a_broken_device_and_exits_1(fleet, monkeypatch):
    real = reconcile_command.device_reconcile_now
    broken = fleet["failing"].uuid

    def flaky(*, uuid, user):
        if uuid == broken:
            raise RuntimeError("boom")
        return real(uuid=uuid, user=user)

    monkeypatch.setattr(reconcile_command, "device_reconcile_now", flaky)
    with pytest.raises(CommandError, match="1 of 3 devices could not be reconciled") as exc:
        run("reconcile", "--all")

    assert exc.value.returncode == 1


def test_an_unknown_device_is_an_error(db):
    missing = uuid.uuid4()

    with pytest.raises(CommandError, match=f"No device with uuid {missing}.") as exc:
        run("reconcile", "--device", str(missing))

    assert exc.value.returncode == 1
    assert not Event.objects.exists()


def test_a_malformed_uuid_is_an_error(db):
    with pytest.raises(CommandError, match="'press-line-1' is not a device uuid"):
        run("reconcile", "--device", "press-line-1")


def test_an_unknown_user_is_an_error(fleet):
    with pytest.raises(CommandError, match="No active user named 'ghost'"):
        run("reconcile", "--all", "--user", "ghost")


def test_device_or_all_is_required(db):
    with pytest.raises(CommandError, match="one of the arguments --device --all is required"):
        run("reconcile")


def test_device_and_all_are_exclusive(device):
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("reconcile", "--all", "--device", str(device.uuid))


def test_from_the_shell_a_usage_error_exits_2(db, capsys):
    command = load_command_class("reconciliation", "reconcile")

    with pytest.raises(SystemExit) as exc:
        command.run_from_argv(["manage.py", "reconcile"])

    assert exc.value.code == 2
    assert "one of the arguments --device --all is required" in capsys.readouterr().err


def test_reconcile_after_a_report_failure_repairs_the_rows(db, monkeypatch):
    """SPEC 5: a report whose reconciliation failed is stored; ``manage.py reconcile`` brings the rows up to it."""
    device = device_with("temp-1")

    def fail(**kwargs):
        raise RuntimeError("reconciliation bug")

    with monkeypatch.context() as patch:
        patch.setattr("reconciliation.services.projection.device_reconcile", fail)
        verdict = agent_report(device)
    assert verdict.reconciliation_failed
    assert DeviceSensor.objects.get(device=device).deployment_status == "pending"

    out, _ = run("reconcile", "--device", str(device.uuid))

    assert "target v2, reported v2, in sync; inserted 0, updated 1" in out
    assert DeviceSensor.objects.get(device=device).deployment_status == "deployed"
