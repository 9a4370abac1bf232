"""The loop as staff see it in a real browser: add a sensor in the admin, watch it go pending, let the device's agent
report over HTTP, see it deployed, make it fail, see why; then the fleet page. Screenshots in var/test-artifacts/."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from devices.models import Device
from reconciliation.models import DriftEpisode
from reconciliation.services.sensors import sensor_create
from tests.factories import DeviceFactory, SensorPayloadFactory
from tests.fleet.agent import HttpAgent

pytestmark = pytest.mark.browser

ERROR = "connection refused by 10.0.0.5:502"
SENSOR = "modbus-supply-temp"


def sensor_row(page, name: str):
    return page.locator(f'#device-sensors tr[data-sensor="{name}"]')


def test_a_sensor_added_in_the_admin_goes_pending_deployed_then_failed(logged_in, live_server, save_screenshot):
    from playwright.sync_api import expect

    page = logged_in
    device = DeviceFactory(name="boiler-room", description="Boiler house, building 2")
    device_page = f"{live_server.url}/admin/devices/device/{device.pk}/change/"

    # Staff add a sensor to the device in the admin, typing its JSON into the JSON editor.
    page.goto(device_page)
    page.click("text=Add a sensor to this device")
    page.fill("#id_name", SENSOR)
    page.select_option("#id_protocol", "modbus")
    page.fill("#id_connection", json.dumps({"host": "10.0.0.5", "port": 502, "unitId": 1}))
    expect(page.locator(".field-connection .ss-json__status")).to_have_text("✓ Valid JSON object")
    page.fill("#id_data_points", json.dumps([{"name": "supply_temperature", "address": 40001, "type": "float32"}]))
    expect(page.locator(".field-data_points .ss-json__status")).to_have_text("✓ Valid JSON list")
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("was added successfully")

    # It is pending: desired, not yet fetched or applied.
    page.goto(device_page)
    expect(sensor_row(page, SENSOR).locator(".ss-badge")).to_have_text("pending")
    expect(page.locator("#convergence")).to_contain_text("The agent has never fetched its target state.")

    # The device's agent polls its target state and reports that it runs it (plain HTTP, with its key).
    agent = HttpAgent(live_server.url, device)
    state = agent.poll()
    verdict = agent.report(version=state["version"], running=state["config"]["sensors"])
    assert verdict[str(device.uuid)]["inSync"] is True
    page.reload()
    expect(sensor_row(page, SENSOR).locator(".ss-badge")).to_have_text("deployed")
    expect(page.locator("#convergence-heading")).to_contain_text("Converged")
    expect(page.locator("#convergence")).to_contain_text(f"The agent runs target version {state['version']} exactly.")

    # The sensor stops: the agent reports without it, with the adapter's error.
    agent.report(version=state["version"], running=[], health={SENSOR: {"healthy": False, "lastError": ERROR}})
    page.reload()
    expect(sensor_row(page, SENSOR).locator(".ss-badge")).to_have_text("failed")
    expect(sensor_row(page, SENSOR)).to_contain_text(ERROR)
    panel = page.locator("#convergence")
    expect(page.locator("#convergence-heading")).to_contain_text("Why not converged")
    expect(panel).to_contain_text("Sensors failing")
    expect(panel.locator("#convergence-sensors")).to_contain_text(SENSOR)
    expect(panel.locator("#convergence-sensors")).to_contain_text(ERROR)
    save_screenshot(page, "device-page")

    # The sensor list shows the adapter's health beside the status, and filters by it.
    page.goto(f"{live_server.url}/admin/sensors/devicesensor/?health=offline")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)
    expect(page.locator("#result_list td.field-health .ss-health--offline")).to_have_text("offline")

    # The device list shows it drifting, and the fleet page counts it.
    page.goto(f"{live_server.url}/admin/devices/device/")
    expect(page.locator("td.field-drift")).to_have_text("drifting · 1 sensor")
    page.click("#fleet-link")
    expect(page.locator('.ss-tile[data-state="drifting"] .ss-tile__count')).to_have_text("1")
    expect(page.locator("#failing-errors")).to_contain_text(ERROR)


def test_the_json_editor_checks_as_you_type_and_the_server_still_decides(logged_in, live_server, save_screenshot):
    from playwright.sync_api import expect

    page = logged_in
    device = DeviceFactory(name="press-line-1")
    page.goto(f"{live_server.url}/admin/sensors/devicesensor/add/?device={device.pk}")
    connection = page.locator("#id_connection")
    status = page.locator(".field-connection .ss-json__status")

    # Not an error before anything was typed.
    expect(status).to_have_text("Required: a JSON object.")
    expect(page.locator(".field-connection .ss-json")).not_to_have_class("ss-json ss-json--invalid")

    connection.fill('{\n  "host": "10.0.0.5",\n  "port": 502,\n}')
    expect(status).to_contain_text("✗")
    expect(status).to_contain_text("line 4, column 1")
    expect(page.locator(".field-connection .ss-json")).to_have_class("ss-json ss-json--invalid")
    expect(page.locator(".field-connection .ss-json__format")).to_be_disabled()
    save_screenshot(page, "json-editor-error")

    connection.fill("[1, 2]")
    expect(status).to_have_text("✗ Must be a JSON object, not a list.")

    connection.fill('{"host":"10.0.0.5","port":502,"unitId":1}')
    expect(status).to_have_text("✓ Valid JSON object")
    page.click(".field-connection .ss-json__format")
    assert connection.input_value() == '{\n  "host": "10.0.0.5",\n  "port": 502,\n  "unitId": 1\n}'

    page.fill("#id_data_points", '[{"name": "t"}, "x"]')
    expect(page.locator(".field-data_points .ss-json__status")).to_have_text("✗ Item 2 must be a JSON object.")

    # The server validates on save whatever the editor said; its error lands on the field.
    page.fill("#id_name", "temp-1")
    page.fill("#id_data_points", '[{"name": "t"}, {"name": "t"}]')  # valid JSON, duplicate names
    page.click("input[name=_save]")
    expect(page.locator(".field-data_points .errorlist")).to_contain_text("Duplicate data point name 't'")
    expect(page.locator(".field-data_points .ss-json__status")).to_have_text("✓ Valid JSON list")


def test_rollback_and_reconcile_now_from_the_device_page(logged_in, live_server, superuser, save_screenshot):
    from playwright.sync_api import expect

    page = logged_in
    device = DeviceFactory(name="cold-store")
    for name in ("temp-1", "temp-2"):
        sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name=name), user=superuser)
    device_page = f"{live_server.url}/admin/devices/device/{device.pk}/change/"

    page.goto(device_page)
    page.click("text=Roll back to v2")
    expect(page.locator("#rollback-changes")).to_contain_text("removes temp-2")
    save_screenshot(page, "rollback-confirmation")
    page.click("#confirm-rollback")
    page.wait_for_url(device_page)
    expect(page.locator("ul.messagelist")).to_contain_text("the target is now version 4")
    expect(page.locator("#device-sensors tr[data-sensor]")).to_have_count(1)
    expect(page.locator(".ss-history tr.ss-history__current")).to_contain_text("rollback to v2")

    page.click("#reconcile-now")
    page.wait_for_url(device_page)
    expect(page.locator("ul.messagelist")).to_contain_text("Reconciled “cold-store”: not in sync")


def test_the_fleet_page(logged_in, live_server, save_screenshot):
    from playwright.sync_api import expect

    page = logged_in
    # A fleet with every status: the quick start's demo data, plus a day of past drift episodes for the charts.
    call_command("seed_demo", devices=12, sensors=4, stdout=io.StringIO())
    now = timezone.now()
    devices = list(Device.objects.order_by("pk"))
    for index in range(60):
        started = now - timedelta(hours=23, minutes=30) + timedelta(minutes=23 * index)
        seconds = (2, 4, 6, 9, 15, 25, 40, 75, 140, 400, 1300)[index * 7 % 11] * (1 + index % 3)
        DriftEpisode.objects.create(
            device=devices[index % len(devices)],
            started_at=started,
            ended_at=min(started + timedelta(seconds=seconds), now),
            cause=("target_changed", "agent_report")[index % 2],
            start_target_version=3,
            start_reported_version=2,
            end_target_version=3,
        )

    page.goto(f"{live_server.url}/admin/")
    page.click("#fleet-link")
    expect(page).to_have_title("Fleet overview | SensorSync admin")
    expect(page.locator('.ss-tile[data-state="never_reported"] .ss-tile__count')).to_have_text("3")
    expect(page.locator("#converge-histogram rect")).to_have_count(8)
    expect(page.locator("#converge-hourly circle").first).to_be_visible()
    expect(page.locator("#drift-episodes")).to_contain_text("boiler-room")
    save_screenshot(page, "fleet-page")

    # Every count is a way into the admin, to exactly the rows it counts.
    drifting = page.locator('.ss-tile[data-state="drifting"] .ss-tile__count').inner_text()
    page.click('.ss-tile[data-state="drifting"]')
    expect(page.locator("#changelist-filter li.selected")).to_contain_text(["Drifting"])
    expect(page.locator("#result_list tbody tr")).to_have_count(int(drifting))
    page.go_back()
    failed_cell = page.locator('#sensor-heatmap td[data-status="failed"] a').first
    failed = int(failed_cell.inner_text())
    failed_cell.click()
    expect(page.locator("#result_list tbody tr")).to_have_count(failed)
    expect(page.locator("#result_list tbody tr .ss-badge--failed")).to_have_count(failed)
