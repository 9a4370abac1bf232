"""Labels and drafts as staff use them in a real browser: label the boilers of plant 3 with the bulk action, find
them with a selector, put them in draft mode, add a sensor to one (it goes to the draft, and the agent polling over
HTTP still gets the published version), read the draft on the device page, deploy it, and see the agent get it.
Screenshots in var/test-artifacts/."""

import pytest

from devices.models import DeviceLabel
from tests.factories import DeviceFactory
from tests.fleet.agent import HttpAgent

pytestmark = pytest.mark.browser


def test_label_select_draft_and_deploy(logged_in, live_server, save_screenshot):
    from playwright.sync_api import expect

    page = logged_in
    boilers = [DeviceFactory(name=f"boiler-{n}") for n in range(3)]
    DeviceFactory(name="pump-1")
    devices_list = f"{live_server.url}/admin/devices/device/"

    # Label the three boilers at once: select them, "Set or remove labels", type the labels, apply.
    page.goto(devices_list)
    for device in boilers:
        page.check(f'#result_list input[name="_selected_action"][value="{device.pk}"]')
    page.select_option('select[name="action"]', "labels_change")
    page.click('button[name="index"]')
    page.fill("#id_set", "plant=3, role=boiler")
    page.click('input[name="apply"]')
    expect(page.locator("ul.messagelist")).to_contain_text("Labels changed on 3 of the 3 selected device(s).")
    assert DeviceLabel.objects.filter(key="role", value="boiler").count() == 3

    # Find them with a selector typed into the list's filter; a bad one says what is wrong.
    page.fill('#selector-filter input[name="selector"]', "plant in (3")
    page.click("#selector-filter button")
    expect(page.locator("#selector-error")).to_contain_text("Invalid selector: expected ',' or ')'")
    page.fill('#selector-filter input[name="selector"]', "plant=3,role=boiler")
    page.click("#selector-filter button")
    expect(page.locator("#result_list tbody tr")).to_have_count(3)

    # Put the selected (filtered) boilers in draft mode.
    page.check("#action-toggle")
    page.select_option('select[name="action"]', "draft_mode_on")
    page.click('button[name="index"]')
    expect(page.locator("ul.messagelist")).to_contain_text("Draft mode on for 3 device(s)")
    save_screenshot(page, "labels-selector-draft-mode")

    # Add a sensor to one of them: it goes to the draft, which the device page shows.
    device = boilers[0]
    agent = HttpAgent(live_server.url, device)
    published = agent.poll()["version"]
    page.goto(f"{live_server.url}/admin/devices/device/{device.pk}/change/")
    page.click("text=Add a sensor to this device")
    page.fill("#id_name", "supply-temp")
    page.select_option("#id_protocol", "modbus")
    page.fill("#id_connection", '{"host": "10.0.0.5", "port": 502, "unitId": 1}')
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("Saved “supply-temp” in the draft of boiler-0")
    expect(page.locator("#draft-changes")).to_contain_text("supply-temp")
    expect(page.locator("#draft-changes .ss-badge")).to_have_text("added")
    save_screenshot(page, "device-draft")
    assert agent.poll()["version"] == published  # the agent does not see the draft

    # Deploy it: a new version, which the agent gets on its next poll.
    page.click("#deploy-draft")
    expect(page.locator("ul.messagelist")).to_contain_text("Deployed the draft of “boiler-0”")
    expect(page.locator("#draft")).to_have_count(0)
    state = agent.poll()
    assert state["version"] == published + 1
    assert [s["name"] for s in state["config"]["sensors"]] == ["supply-temp"]
    expect(page.locator('#device-sensors tr[data-sensor="supply-temp"] .ss-badge')).to_have_text("pending")
