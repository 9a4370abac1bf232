"""The fleet configuration's operator flow in a real browser, from the admin alone (issue 17, "Done when"): label a
few hundred devices, define a template and assign it to a label, preview the change and apply it, override one field
on one device, and see for any sensor field where it came from. Screenshots in var/test-artifacts/."""

import io
import json

import pytest
from django.core.management import call_command

from devices.models import Device
from tests.fleetconfig.conftest import desired_sensors, template_sensor
from tests.fleetconfig.test_render_counts import fleet

pytestmark = pytest.mark.browser

DEVICES = 300


def worker() -> str:
    """What the deployed worker (``manage.py render_fleet --watch``) does with the queued re-renders."""
    out = io.StringIO()
    call_command("render_fleet", stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_an_operator_labels_devices_assigns_a_template_previews_applies_and_overrides_one_field(
    logged_in, live_server, save_screenshot
):
    from playwright.sync_api import expect

    page = logged_in
    fleet(DEVICES, {"plant": "3"})

    # Label every device of the fleet "role=boiler", with the device list's bulk action.
    page.goto(f"{live_server.url}/admin/devices/device/")
    page.click("#action-toggle")
    page.click("text=Select all 300")
    page.select_option("select[name=action]", "labels_change")
    page.click("button[name=index]")
    page.fill("#id_set", "role=boiler")
    page.click("input[name=apply]")
    expect(page.locator("ul.messagelist")).to_contain_text("Labels changed on 300 of the 300")
    assert "labels changed" in worker()

    # A template: one modbus sensor, typed into the JSON editor.
    page.goto(f"{live_server.url}/admin/fleetconfig/sensortemplate/add/")
    page.fill("#id_name", "boiler-temp")
    page.fill("#id_sensors", json.dumps([template_sensor("supply-temp")]))
    expect(page.locator(".field-sensors .ss-json__status")).to_have_text("✓ Valid JSON list")
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")

    # Assign it to the label: the preview comes first, device by device.
    page.goto(f"{live_server.url}/admin/fleetconfig/assignment/add/")
    page.fill("#id_name", "boilers")
    page.select_option("#id_template", label="boiler-temp")
    page.fill("#id_selector", "role=boiler")
    page.click("input[name=_save]")
    expect(page.locator("#preview-counts")).to_contain_text("It reaches 300 devices: 300 would change, 0 would not")
    expect(page.locator("#preview-changes tbody tr")).to_have_count(100)
    expect(page.locator("#preview-truncated")).to_contain_text("The first 100 of the 300 devices that change")
    expect(page.locator('#preview-changes tr[data-device="dev-00007"]')).to_contain_text("+ supply-temp")
    save_screenshot(page, "fleetconfig-preview")
    assert all(desired_sensors(d) == {} for d in Device.objects.all()[:5])  # nothing applied yet

    # Apply: 300 devices is a job for the worker; the job's page shows its progress.
    page.click("#apply")
    expect(page.locator("ul.messagelist")).to_contain_text("300 devices to re-render: queued for the worker")
    page.click("ul.messagelist >> text=render job")
    expect(page.locator(".field-status_shown")).to_contain_text("queued")
    assert "done: 300 devices, 300 changed" in worker()
    page.reload()
    expect(page.locator(".field-status_shown")).to_contain_text("done")
    expect(page.locator(".field-progress_shown")).to_contain_text("300/300")

    # One device: where each field came from; override its poll interval from its page.
    device = Device.objects.get(name="dev-00007")
    page.goto(f"{live_server.url}/admin/fleetconfig/deviceconfiguration/?q=dev-00007")
    page.click("#result_list a:text('dev-00007')")
    poll = page.locator('.fc-sensor[data-sensor="supply-temp"] tr[data-field="pollInterval"]')
    expect(poll.locator(".fc-provenance")).to_have_text("template boiler-temp v1 via assignment boilers (priority 0)")
    poll.locator("a.fc-override-link").click()
    expect(page.locator("#id_field")).to_have_value("pollInterval")
    page.fill("#id_value", "1000")
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")
    expect(poll.locator(".fc-provenance")).to_have_text("override on this device")
    expect(poll.locator(".fc-value")).to_have_text("1000")
    connection = page.locator('.fc-sensor[data-sensor="supply-temp"] tr[data-field="connection"]')
    expect(connection.locator(".fc-provenance")).to_contain_text("template boiler-temp v1 via assignment boilers")
    expect(page.locator("#render-state")).to_contain_text("what its assignments and overrides render now")
    save_screenshot(page, "fleetconfig-device")

    assert desired_sensors(device)["supply-temp"]["pollInterval"] == 1000
    other = Device.objects.get(name="dev-00008")
    assert desired_sensors(other)["supply-temp"]["pollInterval"] == 5000
