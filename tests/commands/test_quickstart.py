"""``manage.py quickstart``, the first thing ``make run`` shows: a login, demo data, and a key a real agent can
provision itself with."""

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.provisioning.test_register import Agent

pytestmark = pytest.mark.django_db


def test_quickstart_prints_a_working_login_and_a_provisioning_key_a_real_agent_registers_with(client):
    out = StringIO()
    call_command("quickstart", url="http://127.0.0.1:8000", stdout=out)
    text = out.getvalue()

    password = re.search(r"Login:\s+admin / (\S+)", text).group(1)
    assert get_user_model().objects.get(username="admin").check_password(password)
    assert client.login(username="admin", password=password)
    key = re.search(r"PROVISIONING_KEY=(\S+)", text).group(1)
    assert Agent().register(APIClient(), key).status_code == 201


def test_quickstart_leaves_a_template_to_roll_out_on_the_plant_labelled_devices(django_capture_on_commit_callbacks):
    """``make run``'s simulated fleet labels its devices plant=a / plant=b: they render the demo template, and its
    page offers a staged rollout."""
    from devices.services import device_labels_update
    from fleetconfig.models import Assignment, SensorTemplate
    from tests.factories import DeviceFactory
    from tests.helpers import target_sensors

    plain, labelled = DeviceFactory(), DeviceFactory()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("quickstart", url="http://127.0.0.1:8000", stdout=StringIO())
        device_labels_update(device_uuid=labelled.uuid, set={"plant": "a"}, remove=[], user=None)
    assert [s["name"] for s in target_sensors(labelled)] == ["ambient-climate"]
    assert target_sensors(plain) == []

    call_command("quickstart", url="http://127.0.0.1:8000", stdout=StringIO())  # a second start adds nothing
    assert SensorTemplate.objects.count() == Assignment.objects.count() == 1
