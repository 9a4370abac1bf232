import json
import re

import pytest
from django.core.management import CommandError

from devices.keys import key_digest
from devices.models import Device
from events.models import Event
from tests.factories import UserFactory

from .conftest import run


def test_prints_the_uuid_and_a_working_key_once(db):
    out, err = run("create_device", "press-line-7", "--description", "Hall B")

    device = Device.objects.get()
    assert device.name == "press-line-7"
    assert device.description == "Hall B"
    assert device.is_active
    assert f"uuid:    {device.uuid}" in out
    key = re.search(r"API key: (\S+)", out).group(1)
    assert key_digest(key) == device.api_key_digest
    assert "Store this key now; it cannot be shown again." in out
    assert err == ""


def test_the_write_is_attributed_to_the_command(db):
    run("create_device", "press-line-7")

    event = Event.objects.get(type="device.registered")
    assert event.metadata["source"] == "command"


def test_user_option_attributes_the_device_to_that_user(db):
    user = UserFactory(username="ops")

    run("create_device", "press-line-7", "--user", "ops")

    device = Device.objects.select_related("target_state").get()
    assert device.target_state.updated_by == user
    assert Event.objects.get(type="device.registered").metadata["actor"] == "ops"


def test_json_output_is_only_the_json_and_the_notice_goes_to_stderr(db):
    out, err = run("create_device", "spare-gateway", "--inactive", "--json")

    data = json.loads(out)
    assert set(data) == {"uuid", "name", "apiKey"}
    device = Device.objects.get(uuid=data["uuid"])
    assert data["name"] == "spare-gateway"
    assert key_digest(data["apiKey"]) == device.api_key_digest
    assert not device.is_active
    assert "cannot be shown again" in err


@pytest.mark.parametrize("name", ["", "   ", "x" * 256])
def test_an_invalid_name_is_an_error_and_writes_nothing(db, name):
    with pytest.raises(CommandError, match=r"Device not created\. name: Must be a non-empty string") as exc:
        run("create_device", name)

    assert exc.value.returncode == 1
    assert not Device.objects.exists()
    assert not Event.objects.exists()


def test_an_unknown_user_is_an_error_and_writes_nothing(db):
    with pytest.raises(CommandError, match="No active user named 'ghost'"):
        run("create_device", "press-line-7", "--user", "ghost")

    assert not Device.objects.exists()


def test_the_name_is_required(db):
    with pytest.raises(CommandError, match="the following arguments are required: name"):
        run("create_device")
