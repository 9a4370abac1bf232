"""A staged rollout as the operator runs it from the admin alone, in a real browser: a template change rolled out
in stages to a labelled group, watched, paused by itself when failures cross the threshold (with the reasons), and
aborted back to where the fleet was."""

import re

import pytest

from rollouts import services
from rollouts.models import Rollout
from tests.rollouts import conftest as rollout_fixtures
from tests.rollouts.conftest import converge, fail, poll_of

pytestmark = pytest.mark.browser

# The rollout tests' labelled fleet, as a fixture of this module too.
fleet_of = rollout_fixtures.fleet_of


def test_roll_out_watch_pause_and_abort_from_the_admin(logged_in, live_server, fleet_of, save_screenshot):
    from playwright.sync_api import expect

    template, devices = fleet_of({"site=a": 6, "site=b": 6})
    page = logged_in
    page.goto(f"{live_server.url}/admin/rollouts/rollout/add/?template={template.pk}")
    sensors = page.locator("#id_sensors")
    expect(sensors).to_have_value(re.compile(r"\"pollInterval\": 1000"))
    sensors.fill(sensors.input_value().replace('"pollInterval": 1000', '"pollInterval": 2000'))
    page.fill("#id_name", "boiler-2000")
    page.fill("#id_selector", "site=a")
    page.fill("#id_stages_text", "50%\n100%")
    page.fill("#id_success_threshold", "100")
    page.fill("#id_error_threshold", "30")
    page.click("input[name=_save]")
    expect(page.locator("ul.messagelist")).to_contain_text("boiler-2000")
    rollout = Rollout.objects.get()
    row = page.locator("#result_list tbody tr", has_text="boiler-2000")
    expect(row).to_contain_text("Running")

    # The driver admits the first stage: half of site=a; one of its three devices fails.
    services.rollouts_drive()
    group = [d for d in devices if poll_of(d) == 2000]
    assert len(group) == 3
    fail(group[:1])
    converge(group[1:])
    services.rollouts_drive()

    page.goto(f"{live_server.url}/admin/rollouts/rollout/{rollout.pk}/change/")
    expect(page.locator("#rollout-state")).to_contain_text("Paused")
    expect(page.locator("#pause-detail")).to_contain_text("1 of 3 online devices failed")
    expect(page.locator(".ss-rollout-reasons")).to_contain_text("temp:")
    expect(page.locator("#rollout-progress tr[data-stage='0'] .ss-deployed")).to_have_text("2")
    expect(page.locator("svg.ss-rollout-chart rect.ss-seg--failed")).to_have_count(1)
    save_screenshot(page, "rollout-paused")

    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#rollout-abort-button")
    expect(page.locator("ul.messagelist")).to_contain_text("aborted")
    expect(page.locator("#rollout-state")).to_contain_text("Aborted")
    assert {poll_of(d) for d in devices} == {1000}
    save_screenshot(page, "rollout-aborted")
