"""The admin's loop actions ask the permissions the API asks for the same writes: reconciling rewrites the sensor
rows (``sensors.change_devicesensor``, as ``POST /devices/<uuid>/reconcile``), a rollback writes a target version
(``devices.change_devicetargetstate``, as ``POST /devices/<uuid>/target-state/rollback``). ``change_device``
alone (name, description, active; key rotation) allows neither."""

import pytest
from django.test import Client

from devices.models import DeviceTargetState
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from tests.factories import UserFactory
from tests.helpers import device_with

from .test_admin import DEVICES
from .test_admin_status import ERROR, agent_for, change_url, rollback_url

DEVICE_EDITOR = ["devices.view_device", "devices.change_device"]
RECONCILER = ["devices.view_device", "sensors.change_devicesensor"]
ROLLER_BACK = ["devices.view_device", "devices.change_devicetargetstate"]


def logged_in(permissions: list[str]) -> Client:
    client = Client()
    client.force_login(UserFactory(permissions=permissions))
    return client


@pytest.fixture
def damaged(superuser):
    """A device whose agent reported one sensor failed, and whose read model was then damaged behind the service's
    back (what reconciling repairs); its target is at version 3, with versions 1 and 2 to roll back to."""
    device = device_with("temp-1", "temp-2", name="boiler", user=superuser)
    agent_for(device).deploy_failing("temp-2", ERROR)
    DeviceSensor.objects.filter(device=device).update(deployment_status=Status.PENDING, deployment_error="")
    return device


def statuses(device) -> dict[str, str]:
    return dict(DeviceSensor.objects.filter(device=device).values_list("name", "deployment_status"))


REPAIRED = {"temp-1": Status.DEPLOYED, "temp-2": Status.FAILED}
DAMAGED = {"temp-1": Status.PENDING, "temp-2": Status.PENDING}


def test_reconcile_now_needs_the_sensor_change_permission_not_the_device_one(damaged):
    url = f"{DEVICES}{damaged.pk}/reconcile/"
    editor = logged_in(DEVICE_EDITOR)
    assert 'id="reconcile-now"' not in editor.get(change_url(damaged)).content.decode()
    assert editor.post(url).status_code == 403
    assert statuses(damaged) == DAMAGED

    reconciler = logged_in(RECONCILER)
    assert 'id="reconcile-now"' in reconciler.get(change_url(damaged)).content.decode()
    response = reconciler.post(url)
    assert response.status_code == 302 and response["Location"] == change_url(damaged)
    assert statuses(damaged) == REPAIRED


def test_the_reconcile_action_on_the_list_needs_the_sensor_change_permission(damaged):
    selection = {"action": "reconcile_now", "_selected_action": [damaged.pk]}
    editor = logged_in(DEVICE_EDITOR)
    actions = editor.get(DEVICES).context["action_form"].fields["action"].choices
    assert "reconcile_now" not in dict(actions)
    editor.post(DEVICES, selection)  # Django answers "No action selected." for an action the user may not run
    assert statuses(damaged) == DAMAGED

    reconciler = logged_in(RECONCILER)
    assert "reconcile_now" in dict(reconciler.get(DEVICES).context["action_form"].fields["action"].choices)
    assert reconciler.post(DEVICES, selection).status_code == 302
    assert statuses(damaged) == REPAIRED


def test_rollback_needs_the_target_state_change_permission_not_the_device_one(damaged):
    url = rollback_url(damaged, 2)
    confirm = {"post": "yes", "target_version": "3"}
    editor = logged_in(DEVICE_EDITOR)
    assert f'href="{url}"' not in editor.get(change_url(damaged)).content.decode()
    assert editor.get(url).status_code == 403
    assert editor.post(url, confirm).status_code == 403
    assert DeviceTargetState.objects.get(device=damaged).version == 3

    roller_back = logged_in(ROLLER_BACK)
    assert f'href="{url}"' in roller_back.get(change_url(damaged)).content.decode()
    assert roller_back.get(url).status_code == 200
    response = roller_back.post(url, confirm)
    assert response.status_code == 302 and response["Location"] == change_url(damaged)
    assert DeviceTargetState.objects.get(device=damaged).version == 4


def test_key_rotation_still_needs_the_device_change_permission_as_in_the_api(damaged):
    url = f"{DEVICES}{damaged.pk}/rotate-key/"
    assert logged_in(RECONCILER + ROLLER_BACK).get(url).status_code == 403
    assert logged_in(DEVICE_EDITOR).get(url).status_code == 200
