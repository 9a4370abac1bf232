"""Webhooks and the retry budget as staff see them in a real browser: an endpoint configured in the admin (its secret
shown once), its deliveries and their attempts; a device whose retry budget ran out, and its reset."""

import io

import pytest
from django.core.management import call_command

from devices.models import DeviceTargetState
from reconciliation.agent_protocol import report_parse
from reconciliation.services.reports import state_report_apply
from reconciliation.services.sensors import sensor_create
from tests.factories import DeviceFactory, SensorPayloadFactory
from tests.webhooks.receiver import Answer, Receiver
from webhooks.models import WebhookEndpoint

pytestmark = pytest.mark.browser


def test_an_endpoint_configured_in_the_admin_and_what_came_of_its_deliveries(
    logged_in, live_server, superuser, settings, save_screenshot
):
    from playwright.sync_api import expect

    settings.SENSORSYNC_WEBHOOK_BACKOFF_SECONDS = 0
    page = logged_in
    with Receiver(Answer(503), default=Answer(200)) as receiver:
        page.goto(f"{live_server.url}/admin/webhooks/webhookendpoint/add/")
        page.fill("#id_name", "on-call pager")
        page.fill("#id_url", "ftp://wrong.example.com/")
        page.check("input[name=event_types][value='device.config_drift']")
        page.click("input[name=_save]")
        expect(page.locator(".errorlist")).to_contain_text("Must be an http:// or https:// URL.")

        page.fill("#id_url", receiver.url)
        page.click("input[name=_save]")
        message = page.locator("ul.messagelist")
        expect(message).to_contain_text("shown only this once")
        secret = WebhookEndpoint.objects.get().secret
        expect(message.locator("code")).to_have_text(secret)
        save_screenshot(page, "webhook-endpoint-created")

        sensor_create(device_uuid=DeviceFactory(name="boiler-7").uuid, data=SensorPayloadFactory(), user=superuser)
        call_command("deliver_webhooks", "--once", stdout=io.StringIO())

    assert len(receiver.received) == 2 and receiver.received[1].verifies(secret)
    page.goto(f"{live_server.url}/admin/webhooks/webhookendpoint/")
    row = page.locator("#result_list tbody tr", has_text="on-call pager")
    expect(row).to_contain_text("Delivered")
    expect(row).not_to_contain_text(secret)
    page.goto(f"{live_server.url}/admin/webhooks/webhookdelivery/")
    page.click("#result_list tbody tr a >> nth=0")
    expect(page.locator(".field-attempt_table")).to_contain_text("HTTP 503")
    expect(page.locator(".field-attempt_table")).to_contain_text("Failed, to be retried")
    expect(page.locator(".field-payload_json")).to_contain_text('"episode_started": true')
    save_screenshot(page, "webhook-delivery")


def test_a_device_whose_retry_budget_ran_out_and_its_reset(
    logged_in, live_server, superuser, settings, save_screenshot
):
    from playwright.sync_api import expect

    settings.SENSORSYNC_RETRY_BUDGET = 1
    page = logged_in
    device = DeviceFactory(name="press-4")
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="spindle"), user=superuser)
    state_report_apply(
        device=type(device).objects.select_related("target_state", "current_state").get(pk=device.pk),
        report=report_parse({"version": 2, "config": {"sensors": []}, "apps": {}}),
    )
    device_page = f"{live_server.url}/admin/devices/device/{device.pk}/change/"

    page.goto(f"{live_server.url}/fleet/")
    expect(page.locator("#retry-exhausted")).to_contain_text("1 device")
    page.click("#retry-exhausted a")
    expect(page.locator("#result_list")).to_contain_text("press-4")
    expect(page.locator("#result_list")).to_contain_text("retry budget exhausted")

    page.goto(device_page)
    expect(page.locator("#retry-budget-exhausted")).to_be_visible()
    expect(page.locator("#convergence")).to_contain_text("retry budget ran out at target version 2")
    expect(page.locator('#device-sensors tr[data-sensor="spindle"]')).to_contain_text("Retry budget exhausted")
    save_screenshot(page, "retry-budget-exhausted")
    page.click("#reset-retry-budget")
    page.wait_for_url(device_page)
    expect(page.locator("ul.messagelist")).to_contain_text("Reset the retry budget of “press-4”")
    expect(page.locator("#retry-budget-exhausted")).to_have_count(0)
    assert DeviceTargetState.objects.get(device=device).retry_exhausted_at is None
