"""/fleet/ shows device names, sensor errors and drift episodes: the same data the API shows only with
``devices.view_device``, ``sensors.view_devicesensor`` and ``reconciliation.view_driftepisode``. Staff without
them get a 403; anyone not logged in as staff goes to the login page."""

import pytest

from tests.factories import UserFactory

from .test_fleet_page import ERROR, FLEET, agent_for, device_with

FLEET_VIEWER = ["devices.view_device", "sensors.view_devicesensor", "reconciliation.view_driftepisode"]


@pytest.fixture
def fleet(superuser):
    """A device whose agent reports a sensor failed: its name and the error are on the page."""
    drifting = device_with(superuser, ("modbus-1", "modbus"), ("can-1", "can"), name="b-drifting")
    agent_for(drifting).deploy_failing("can-1", ERROR)
    return drifting


def test_staff_without_permissions_are_refused_and_shown_nothing(client, fleet):
    client.force_login(UserFactory(username="no-permissions", permissions=["devices.view_device"]))

    response = client.get(FLEET)

    assert response.status_code == 403
    content = response.content.decode()
    assert ERROR not in content and "b-drifting" not in content
    assert 'id="fleet-link"' not in client.get("/admin/").content.decode()  # not offered either


@pytest.mark.parametrize("missing", FLEET_VIEWER)
def test_each_permission_the_page_shows_is_needed(client, fleet, missing):
    client.force_login(UserFactory(permissions=[p for p in FLEET_VIEWER if p != missing]))
    assert client.get(FLEET).status_code == 403


def test_staff_with_the_view_permissions_see_the_page(client, fleet):
    client.force_login(UserFactory(permissions=FLEET_VIEWER))

    response = client.get(FLEET)

    assert response.status_code == 200
    assert ERROR in response.content.decode() and "b-drifting" in response.content.decode()
    assert 'id="fleet-link"' in client.get("/admin/").content.decode()


def test_anonymous_and_non_staff_go_to_the_login_page(client, db):
    anonymous = client.get(FLEET)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/?next=/fleet/")

    client.force_login(UserFactory(username="not-staff", is_staff=False, permissions=FLEET_VIEWER))
    refused = client.get(FLEET)
    assert refused.status_code == 302 and refused["Location"].startswith("/admin/login/?next=/fleet/")
