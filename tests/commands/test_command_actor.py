"""Without ``--user``, a command's writes name the command as their actor (``sensorsync_project.commands``)."""

import pytest
from django.core.management import CommandError

from devices.models import Device
from events.models import Event

from .conftest import run


def test_create_device_without_a_user_names_the_command(db):
    run("create_device", "press-line-7")

    event = Event.objects.get(type="device.registered")
    assert (event.metadata["source"], event.metadata["actor"]) == ("command", "command:create_device")


def test_seed_demo_staff_changes_name_the_command_and_the_reports_their_agent(db):
    run("seed_demo", devices=1)

    agent = f"agent:{Device.objects.get().uuid}"
    actors = dict(Event.objects.values_list("type", "metadata__actor"))
    assert {kind: actors[kind] for kind in ("device.registered", "sensor.added", "target_state.updated")} == {
        "device.registered": "command:seed_demo",
        "sensor.added": "command:seed_demo",
        "target_state.updated": "command:seed_demo",
    }
    assert (actors["current_state.reported"], actors["sensor.deployed"]) == (agent, agent)


def test_replay_events_refuses_a_malformed_uuid(db):
    with pytest.raises(CommandError, match="'press-line-1' is not a device uuid") as exc:
        run("replay_events", "--device", "press-line-1")

    assert exc.value.returncode == 1
