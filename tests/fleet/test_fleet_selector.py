"""The fleet page for the devices a label selector selects (/fleet/?selector=...): its counts are those devices'
(and equal the admin lists it links to, which keep the selector), its drafts line, a bad selector is a 400 that
says why, and it answers in as many queries as the whole fleet's page."""

from urllib.parse import parse_qs, urlsplit

import pytest

from devices.services import device_labels_set, device_update
from reconciliation.services.sensors import sensor_create
from tests.factories import SensorPayloadFactory

from .test_fleet_page import ERROR, FLEET, FLEET_PAGE_QUERIES, agent_for, device_with, seen_long_ago, urls_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def labelled(superuser):
    """Plant 3: a drifting device (in draft mode, with a draft) and one that never reported (so offline too);
    plant 4: one in sync; and one without labels, offline."""
    drifting = device_with(superuser, ("modbus-1", "modbus"), ("can-1", "can"), name="b-drifting")
    agent_for(drifting).deploy_failing("can-1", ERROR)
    never = device_with(superuser, ("opcua-1", "opcua"), name="c-never-reported")
    in_sync = device_with(superuser, ("mqtt-1", "mqtt"), name="a-in-sync")
    agent_for(in_sync).deploy_all()
    bare = device_with(superuser, ("modbus-1", "modbus"), name="d-offline")
    agent_for(bare).deploy_all()
    seen_long_ago(bare)
    for device, plant in ((drifting, "3"), (never, "3"), (in_sync, "4")):
        device_labels_set(device_uuid=device.uuid, labels={"plant": plant}, user=superuser)
    device_update(uuid=drifting.uuid, draft_mode=True, user=superuser)
    sensor_create(device_uuid=drifting.uuid, data=SensorPayloadFactory(name="drafted"), user=superuser)


def tile_counts(response) -> dict[str, int]:
    return {tile["state"]: tile["count"] for tile in response.context["tiles"]}


def test_the_page_counts_the_selected_devices_and_links_to_them(admin_browser, labelled):
    response = admin_browser.get(FLEET, {"selector": "plant = 3"})

    assert response.status_code == 200
    assert response.context["devices_total"] == 2
    assert tile_counts(response) == {"in_sync": 0, "drifting": 1, "offline": 1, "never_reported": 1}
    assert response.context["heatmap"]["total"] == 3  # modbus-1 and can-1 of b, opcua-1 of c
    assert [error for error, _ in response.context["errors"]] == [ERROR]
    assert response.context["drafts"]["pending"] == 1 and response.context["drafts"]["mode"] == 1
    content = response.content.decode()
    assert 'value="plant=3"' in content and "that <code>plant=3</code> selects" in content
    admin_links = [
        url for url in urls_of(content) if url.startswith(("/admin/devices/device/?", "/admin/sensors/devicesensor/?"))
    ]
    assert admin_links and all(parse_qs(urlsplit(url).query)["selector"] == ["plant=3"] for url in admin_links)
    # the admin list a tile links to shows exactly the devices it counts
    drifting = next(tile for tile in response.context["tiles"] if tile["state"] == "drifting")
    listed = admin_browser.get(drifting["url"]).context["cl"].result_list
    assert [device.name for device in listed] == ["b-drifting"]

    everything = admin_browser.get(FLEET)
    assert everything.context["devices_total"] == 4 and everything.context["drafts"]["pending"] == 1


def test_a_bad_selector_is_a_400_that_says_why(admin_browser, labelled):
    response = admin_browser.get(FLEET, {"selector": "plant in (3"})

    assert response.status_code == 400
    content = response.content.decode()
    assert 'id="selector-error"' in content
    assert "Invalid selector: expected &#x27;,&#x27; or &#x27;)&#x27;" in content
    assert 'id="device-tiles"' not in content


def test_the_selected_page_answers_in_as_many_queries(admin_browser, labelled, django_assert_num_queries):
    admin_browser.get(FLEET, {"selector": "plant=3"})  # warm the session's caches, as the whole page's test does
    with django_assert_num_queries(FLEET_PAGE_QUERIES):
        response = admin_browser.get(FLEET, {"selector": "plant=3,!spare"})
    assert response.status_code == 200
