"""Adapter health and the device's facts in the admin: the health column and filter, "deployed · offline" as a state
of its own, the adapter's own error on failed rows, fields the agent did not report, the device page's Facts panel,
and the "why not converged" panel's offline sensors. Agents report through the real agent endpoint, with their keys
(``endpoints_health`` and metrics as the 2025-11-22 agent sends them)."""

import pytest

from reconciliation.services.sensors import sensor_update
from reconciliation.services.targets import target_state_update
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.choices import DeviceSensorHealthStatusChoices as Health
from sensors.models import DeviceSensor
from tests.fleet.agent import METRICS, endpoint_health
from tests.helpers import device_with

from .test_admin import SENSORS, text_of
from .test_admin_status import DEVICE_PAGE_QUERIES, agent_for, change_url

REFUSED = "connect ECONNREFUSED 10.0.0.5:502"
NASTY = '<script>alert("x")</script> & <b>bold</b>'


def rows_of(response) -> dict[str, DeviceSensor]:
    return {row.name: row for row in response.context["cl"].result_list}


def listed(client, query: str) -> set[str]:
    response = client.get(SENSORS + query)
    assert response.status_code == 200
    return {row.name for row in response.context["cl"].result_list}


@pytest.fixture
def plant(superuser):
    """boiler: ok-1 deployed and online, plc-1 deployed but offline; press: plain-1 reported by the seed note's
    health map (online), new-1 never reported (health unknown); mixer: changed-1 runs another configuration than
    its applied target and its adapter is offline with its own error."""
    boiler = device_with("ok-1", "plc-1", name="boiler", user=superuser)
    agent_for(boiler).deploy_offline("plc-1", error=REFUSED, **METRICS)
    press = device_with("plain-1", name="press", user=superuser)
    agent_for(press).deploy_all()
    device_with("new-1", name="silo", user=superuser)
    mixer = device_with("changed-1", name="mixer", user=superuser)
    agent = agent_for(mixer)
    state = agent.poll()
    running = [{**state["config"]["sensors"][0], "pollInterval": 9999}]
    agent.report(
        version=state["version"],
        running=running,
        health={},
        endpoints_health={"changed-1": endpoint_health("offline", error=REFUSED, error_count=7)},
    )
    return {"boiler": boiler, "press": press, "mixer": mixer}


def test_reports_set_the_health_columns(plant):
    rows = {row.name: row for row in DeviceSensor.objects.all()}
    plc = rows["plc-1"]
    assert (plc.deployment_status, plc.running) == (Status.DEPLOYED, True)
    assert (plc.health_status, plc.connected, plc.communication_quality) == (Health.OFFLINE, False, "offline")
    assert (plc.health_error, plc.health_error_count) == (REFUSED, 3)
    assert rows["ok-1"].health_status == Health.ONLINE
    assert rows["plain-1"].health_status == Health.ONLINE
    assert rows["new-1"].health_status == Health.UNKNOWN
    assert rows["changed-1"].deployment_status == Status.FAILED


def test_sensor_list_shows_health_and_deployed_but_offline_as_its_own_state(admin_browser, plant):
    response = admin_browser.get(SENSORS)

    content = response.content.decode()
    admin = response.context["cl"].model_admin
    rows = rows_of(response)
    assert {name: text_of(admin.status(row)) for name, row in rows.items()} == {
        "changed-1": "failed still running",
        "new-1": "pending",
        "ok-1": "deployed",
        "plain-1": "deployed",
        "plc-1": "deployed · offline",
    }
    assert 'class="ss-badge ss-badge--deployed_offline"' in admin.status(rows["plc-1"])
    assert 'class="ss-badge ss-badge--deployed"' in admin.status(rows["ok-1"])
    assert [text_of(admin.health(rows[name])).split()[0] for name in ("ok-1", "plc-1", "changed-1")] == [
        "online",
        "offline",
        "offline",
    ]
    assert admin.health(rows["new-1"]) == ""  # unknown: blank
    assert '<span class="ss-health ss-health--offline"' in admin.health(rows["plc-1"])
    assert '<span class="ss-health ss-health--online"' in admin.health(rows["ok-1"])
    assert "column-health" in content
    # A deployed but offline sensor has no deployment error: its adapter's error is what explains it.
    assert text_of(admin.error(rows["plc-1"])) == f"adapter: {REFUSED}"
    assert text_of(admin.error(rows["ok-1"])) == "-"


def test_failed_rows_show_the_adapters_error_only_where_it_says_more(admin_browser, superuser, plant):
    # Not running, failed: reconciliation quotes the adapter's error as the deployment error; not shown twice.
    boiler = plant["boiler"]
    sensor_update(device_uuid=boiler.uuid, name="ok-1", data={"pollInterval": 4321}, partial=True, user=superuser)
    agent = agent_for(boiler)
    state = agent.poll()
    running = [s for s in state["config"]["sensors"] if s["name"] != "ok-1"]
    agent.report(
        version=state["version"],
        running=running,
        health={},
        endpoints_health={"ok-1": endpoint_health("offline", error=REFUSED)},
    )

    response = admin_browser.get(SENSORS)

    admin = response.context["cl"].model_admin
    rows = rows_of(response)
    assert rows["ok-1"].deployment_status == Status.FAILED and rows["ok-1"].deployment_error == REFUSED
    assert text_of(admin.error(rows["ok-1"])) == REFUSED
    # Running another configuration: the deployment error names the difference and quotes the adapter's error at
    # its end; the list shows the difference, and the adapter's error on its own line (once, and not cut off).
    changed = rows["changed-1"]
    assert changed.deployment_error.endswith(f"pollInterval. {REFUSED}")
    assert text_of(admin.error(changed)) == (
        f"Running a configuration that differs from target version 2 in: pollInterval. adapter: {REFUSED}"
    )


def test_the_adapters_error_is_shown_when_the_deployment_error_does_not_carry_it(admin_browser, superuser):
    """A sensor removed from the target that the agent still runs, with its adapter offline: the deployment error
    says it should not run, the adapter's error says why it does not work."""
    device = device_with("keep-1", "gone-1", name="line", user=superuser)
    agent = agent_for(device)
    state = agent.poll()
    running = state["config"]["sensors"]
    target_state_update(
        uuid=device.uuid, user=superuser, config={"sensors": [s for s in running if s["name"] == "keep-1"]}
    )
    version = agent.poll()["version"]
    agent.report(
        version=version,
        running=running,
        health={},
        endpoints_health={"gone-1": endpoint_health("offline", error=REFUSED)},
    )

    response = admin_browser.get(SENSORS)

    row = rows_of(response)["gone-1"]
    assert row.deployment_status == Status.FAILED and REFUSED not in row.deployment_error
    shown = text_of(response.context["cl"].model_admin.error(row))
    assert shown.startswith("Still running although removed") and shown.endswith(f"adapter: {REFUSED}")


def test_health_filter(admin_browser, plant):
    assert listed(admin_browser, "?health=online") == {"ok-1", "plain-1"}
    assert listed(admin_browser, "?health=offline") == {"plc-1", "changed-1"}
    assert listed(admin_browser, "?health=unknown") == {"new-1"}
    assert listed(admin_browser, "?health=disabled") == set()
    # The fleet page's "deployed but offline" link.
    assert listed(admin_browser, "?deployment_status__exact=deployed&health=offline") == {"plc-1"}
    content = admin_browser.get(SENSORS).content.decode()
    assert "?health=offline" in content and "?health=unknown" in content  # offered in the filter sidebar


# Session, user, COUNT(*) with the filter, COUNT(*) of all, the page of rows with device and target.
SENSOR_CHANGELIST_FILTERED_QUERIES = 5


@pytest.mark.parametrize(
    "query", ["?health=offline", "?health=unknown", "?deployment_status__exact=deployed&health=offline"]
)
def test_filtered_sensor_list_query_count_does_not_grow(admin_browser, superuser, django_assert_num_queries, query):
    def grow(count: int, offset: int) -> None:
        for index in range(offset, offset + count):
            device = device_with("a-1", "b-1", name=f"device-{index:02d}", user=superuser)
            if index % 2:
                agent_for(device).deploy_offline("b-1", error=REFUSED)

    grow(4, 0)
    admin_browser.get(SENSORS + query)
    with django_assert_num_queries(SENSOR_CHANGELIST_FILTERED_QUERIES):
        assert admin_browser.get(SENSORS + query).status_code == 200
    grow(20, 4)
    with django_assert_num_queries(SENSOR_CHANGELIST_FILTERED_QUERIES):
        response = admin_browser.get(SENSORS + query)
    assert len(response.context["cl"].result_list) >= 12


def test_sensor_page_shows_adapter_health_read_only(admin_browser, plant):
    row = DeviceSensor.objects.get(name="plc-1")

    content = admin_browser.get(f"{SENSORS}{row.pk}/change/").content.decode()

    assert "Adapter health" in content
    assert '<span class="ss-health ss-health--offline"' in content
    assert REFUSED in content
    assert 'name="health_status"' not in content and 'name="health_error"' not in content  # read-only


def test_rows_say_which_fields_the_agent_did_not_report(admin_browser, superuser):
    """The 2025-11-22 agent's rows carry no dataPoints: the row shows the desired ones and says so."""
    device = device_with("temp-1", name="oven", user=superuser)
    agent = agent_for(device)
    state = agent.poll()
    running = [{k: v for k, v in s.items() if k != "dataPoints"} for s in state["config"]["sensors"]]
    agent.report(version=state["version"], running=running)
    row = DeviceSensor.objects.get(device=device)
    assert row.unreported_fields == ["dataPoints"] and row.deployment_status == Status.DEPLOYED

    listing = admin_browser.get(SENSORS)
    page = admin_browser.get(f"{SENSORS}{row.pk}/change/").content.decode()
    device_page = admin_browser.get(change_url(device)).content.decode()

    version = listing.context["cl"].model_admin.version(rows_of(listing)["temp-1"])
    assert "not reported by the agent: dataPoints" in text_of(version)
    assert 'class="ss-quiet ss-unreported"' in version
    assert "dataPoints <span" in page  # the "Fields the agent did not report" row
    sensors_html = device_page[device_page.index('id="device-sensors"') :]
    assert "not reported by the agent: dataPoints" in sensors_html


def test_unreported_note_is_absent_when_the_agent_reported_everything(admin_browser, plant):
    listing = admin_browser.get(SENSORS)
    admin = listing.context["cl"].model_admin
    assert "not reported" not in admin.version(rows_of(listing)["ok-1"])


# --- the device page ---


def test_device_page_shows_facts(admin_browser, plant):
    content = admin_browser.get(change_url(plant["boiler"])).content.decode()

    facts = content[content.index("ss-facts") :]
    for shown in (
        "59 %",  # CPU
        "2.7 GB of 23.5 GB (11 %)",  # memory
        "26.1 GB of 252.0 GB (10 %)",  # storage
        "48.5 °C",
        "1 d 2 h",  # uptime 93784.5 s
        'id="network-interfaces"',
        "<td><strong>eth0</strong></td><td>wired</td><td>up</td><td>192.0.2.2</td><td>fd00::2</td>"
        "<td>02:fc:00:00:00:01</td><td>default</td>",
        'id="top-processes"',
        '<td class="ss-num">641</td><td>modbus-adapter</td><td class="ss-num">0.8 %</td>',
    ):
        assert shown in facts, shown
    assert "Never: the agent has not sent metrics yet." not in facts
    assert '<img src="/static/admin/img/icon-yes.svg" alt="True">' in facts  # is_online


def test_device_page_facts_before_any_metrics(admin_browser, plant):
    content = admin_browser.get(change_url(plant["press"])).content.decode()  # reported, but no metrics

    facts = content[content.index("ss-facts") :]
    assert "Never: the agent has not sent metrics yet." in facts
    assert "1 h 0 min" in facts  # uptime 3600 s, sent with every report
    assert 'id="network-interfaces"' not in facts


def test_facts_are_escaped(admin_browser, superuser):
    device = device_with("temp-1", name="evil", user=superuser)
    metrics = {
        "cpu_usage": 1,
        "top_processes": [{"pid": 1, "name": NASTY, "cpu": 0.1, "mem": 0.1}],
        "network_interfaces": [{"name": NASTY, "ip4": "10.0.0.1", "type": NASTY}],
    }
    agent_for(device).deploy_offline("temp-1", error=NASTY, **metrics)

    content = admin_browser.get(change_url(device)).content.decode()
    listing = admin_browser.get(SENSORS).content.decode()

    for page in (content, listing):
        assert NASTY not in page
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_device_page_sensors_show_health_and_the_adapters_error(admin_browser, plant):
    content = admin_browser.get(change_url(plant["boiler"])).content.decode()

    sensors_html = content[content.index('id="device-sensors"') :]
    plc = sensors_html[sensors_html.index('data-sensor="plc-1"') :]
    plc = plc[: plc.index("</tr>")]
    assert 'data-health="offline"' in plc
    assert '<span class="ss-badge ss-badge--deployed_offline"' in plc and "deployed · offline</span>" in plc
    assert '<span class="ss-health ss-health--offline"' in plc
    assert f"adapter:</span> {REFUSED}" in plc
    ok = sensors_html[sensors_html.index('data-sensor="ok-1"') :]
    ok = ok[: ok.index("</tr>")]
    assert '<span class="ss-badge ss-badge--deployed">deployed</span>' in ok
    assert '<span class="ss-health ss-health--online"' in ok


def test_why_not_converged_lists_deployed_but_offline_sensors(admin_browser, plant):
    response = admin_browser.get(change_url(plant["boiler"]))

    panel = response.context["convergence"]
    # In sync: nothing drifts; the offline sensor is listed apart, with its adapter's error.
    assert (panel["stage"], panel["sensors"]) == ("in_sync", [])
    assert [(s["name"], s["healthStatus"], s["healthError"]) for s in panel["deployedOfflineSensors"]] == [
        ("plc-1", Health.OFFLINE, REFUSED)
    ]
    content = response.content.decode()
    panel_html = content[content.index('id="convergence"') : content.index('id="device-sensors"')]
    assert "1 sensor deployed · offline" in panel_html
    offline_table = panel_html[panel_html.index('id="convergence-offline-sensors"') :]
    assert "plc-1" in offline_table and REFUSED in offline_table
    assert '<td class="ss-num">3</td>' in offline_table  # the adapter's error count


def test_why_not_converged_shows_health_and_the_adapters_error_of_drifting_sensors(admin_browser, plant):
    response = admin_browser.get(change_url(plant["mixer"]))

    panel = response.context["convergence"]
    [changed] = panel["sensors"]
    assert (changed["name"], changed["healthStatus"], changed["healthError"]) == ("changed-1", "offline", REFUSED)
    assert panel["deployedOfflineSensors"] == []
    content = response.content.decode()
    table = content[content.index('id="convergence-sensors"') : content.index('id="device-sensors"')]
    assert '<span class="ss-health ss-health--offline"' in table
    assert table.count(REFUSED) == 1  # as the adapter's error, not again inside the deployment error
    assert f"adapter:</span> {REFUSED}" in table
    assert 'id="convergence-offline-sensors"' not in content


# The same page for a device in sync: no open drift episode to read.
IN_SYNC_DEVICE_PAGE_QUERIES = DEVICE_PAGE_QUERIES - 1


def test_device_page_query_count_stays_constant_with_offline_sensors_and_facts(
    admin_browser, superuser, django_assert_num_queries
):
    small = device_with("temp-1", "temp-2", user=superuser)
    agent_for(small).deploy_offline("temp-2", error=REFUSED, **METRICS)
    big = device_with(*(f"temp-{n}" for n in range(30)), user=superuser)
    agent_for(big).deploy_offline(*(f"temp-{n}" for n in range(0, 30, 2)), error=REFUSED, **METRICS)
    admin_browser.get(change_url(small))  # warms the content-type cache

    with django_assert_num_queries(IN_SYNC_DEVICE_PAGE_QUERIES):
        assert admin_browser.get(change_url(small)).status_code == 200
    with django_assert_num_queries(IN_SYNC_DEVICE_PAGE_QUERIES):
        response = admin_browser.get(change_url(big))
    assert response.context["convergence"]["inSync"]
    assert len(response.context["convergence"]["deployedOfflineSensors"]) == 15
    assert 'id="top-processes"' in response.content.decode()
