"""The staff fleet page (/fleet/): who may see it, that its numbers are the admin's numbers (every count links to the
admin list that shows exactly those rows), the drift episodes and time-to-converge charts, and a bounded number of
queries however big the fleet."""

import re
from datetime import timedelta
from html.parser import HTMLParser

import pytest
from django.test import Client
from django.utils import timezone
from django.utils.html import escape

from devices.models import Device
from reconciliation.models import DriftEpisode
from reconciliation.selectors import time_to_converge_series
from reconciliation.services.sensors import sensor_create, sensor_update
from reconciliation.views.charts import BUCKETS, duration_text, histogram, hourly_chart
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from tests.factories import DeviceFactory, SensorPayloadFactory, UserFactory

from .agent import Agent

FLEET = "/fleet/"
ERROR = "connection refused by 10.0.0.5:502"


def device_with(user, *sensors: tuple[str, str], **fields) -> Device:
    """A device with sensors given as (name, protocol)."""
    device = DeviceFactory(**fields)
    for name, protocol in sensors:
        sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name=name, protocol=protocol), user=user)
    return device


def agent_for(device) -> Agent:
    return Agent(Client(), device)


def seen_long_ago(device) -> None:
    Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(hours=2))


def episode(device, *, started_ago: float, lasted: float | None, **fields) -> DriftEpisode:
    """A past drift episode (time travel for the test; the product opens and closes them on drift changes)."""
    started = timezone.now() - timedelta(seconds=started_ago)
    return DriftEpisode.objects.create(
        device=device,
        started_at=started,
        ended_at=None if lasted is None else started + timedelta(seconds=lasted),
        cause="agent_report",
        start_target_version=2,
        end_target_version=None if lasted is None else 2,
        **fields,
    )


@pytest.fixture
def fleet(superuser):
    in_sync = device_with(superuser, ("modbus-1", "modbus"), ("mqtt-1", "mqtt"), name="a-in-sync")
    agent_for(in_sync).deploy_all()
    drifting = device_with(superuser, ("modbus-1", "modbus"), ("can-1", "can"), name="b-drifting")
    agent_for(drifting).deploy_failing("can-1", ERROR)
    never = device_with(superuser, ("opcua-1", "opcua"), name="c-never-reported")
    offline = device_with(superuser, ("modbus-1", "modbus"), name="d-offline")
    agent_for(offline).deploy_all()
    seen_long_ago(offline)
    reconciling = device_with(superuser, ("mqtt-1", "mqtt"), name="e-reconciling")
    agent_for(reconciling).deploy_all()
    sensor_update(device_uuid=reconciling.uuid, name="mqtt-1", data={"pollInterval": 750}, partial=True, user=None)
    return {d.name: d for d in (in_sync, drifting, never, offline, reconciling)}


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src", "action") and value is not None:
                self.urls.append(value)


def urls_of(content: str) -> list[str]:
    parser = _Links()
    parser.feed(content)
    return parser.urls


# --- who may see it ---


def test_fleet_page_is_for_staff_only(client, db):
    anonymous = client.get(FLEET)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/?next=/fleet/")

    client.force_login(UserFactory(username="not-staff", is_staff=False))
    assert client.get(FLEET).status_code == 302

    client.force_login(UserFactory(username="staff-member"))
    assert client.get(FLEET).status_code == 403  # staff, but with none of the view permissions the page needs

    client.force_login(
        UserFactory(
            username="fleet-viewer",
            permissions=["devices.view_device", "sensors.view_devicesensor", "reconciliation.view_driftepisode"],
        )
    )
    assert client.get(FLEET).status_code == 200


# --- devices: counts that link to the admin list of exactly those devices ---


def test_device_counts_link_to_the_admin_filtered_accordingly(admin_browser, fleet, settings):
    settings.SENSORSYNC_OFFLINE_AFTER_SECONDS = 300

    response = admin_browser.get(FLEET)

    tiles = {tile["state"]: tile for tile in response.context["tiles"]}
    assert {state: tile["count"] for state, tile in tiles.items()} == {
        "in_sync": 2,
        "drifting": 2,
        "offline": 2,
        "never_reported": 1,
    }
    assert response.context["devices_total"] == 5
    for state, tile in tiles.items():
        assert tile["url"] == f"/admin/devices/device/?drift={state}"
        assert f'href="{tile["url"]}"' in response.content.decode()
        listed = admin_browser.get(tile["url"]).context["cl"].result_list
        assert len(listed) == tile["count"], state
    assert {d.name for d in admin_browser.get(tiles["offline"]["url"]).context["cl"].result_list} == {
        "c-never-reported",
        "d-offline",
    }


# --- sensors by status and protocol ---


def test_sensor_heatmap_counts_link_to_the_admin_sensor_list(admin_browser, fleet):
    response = admin_browser.get(FLEET)

    heatmap = response.context["heatmap"]
    cells = {(row["protocol"], cell["status"]): cell for row in heatmap["rows"] for cell in row["cells"]}
    expected = {
        ("modbus", Status.DEPLOYED): 3,
        ("mqtt", Status.DEPLOYED): 1,
        ("mqtt", Status.RECONCILING): 1,
        ("can", Status.FAILED): 1,
        ("opcua", Status.PENDING): 1,
    }
    assert {key: cell["count"] for key, cell in cells.items() if cell["count"]} == expected
    assert len(cells) == 16  # every protocol and status, zeros included
    assert heatmap["total"] == DeviceSensor.objects.count() == 7
    for (protocol, status), count in expected.items():
        listed = admin_browser.get(cells[(protocol, status)]["url"]).context["cl"].result_list
        assert {(row.protocol, row.deployment_status) for row in listed} == {(protocol, status)}
        assert len(listed) == count
    assert [total["count"] for total in heatmap["totals"]] == [1, 1, 4, 1]  # pending, reconciling, deployed, failed
    assert response.context["errors"] == [(ERROR, 1)]
    assert ERROR in response.content.decode()


def test_deployed_but_offline_sensors_are_counted_and_link_to_the_admin(admin_browser, fleet, superuser):
    plant = device_with(superuser, ("plc-1", "modbus"), ("plc-2", "modbus"), ("bus-1", "can"), name="f-plant")
    agent_for(plant).deploy_offline("plc-1", "bus-1", error=ERROR)
    # Offline but not deployed (failed): drift, counted with the failed sensors, not here.
    agent_for(fleet["b-drifting"]).deploy_failing("can-1", ERROR)

    response = admin_browser.get(FLEET)

    offline = response.context["deployed_offline"]
    assert offline["count"] == 2
    assert [(row["protocol"], row["count"]) for row in offline["protocols"]] == [("modbus", 1), ("can", 1)]
    # Still deployed in the heatmap: the agent runs them as desired.
    cells = {
        (row["protocol"], cell["status"]): cell["count"]
        for row in response.context["heatmap"]["rows"]
        for cell in row["cells"]
    }
    assert cells[("modbus", Status.DEPLOYED)] == 5
    content = response.content.decode()
    assert 'id="deployed-offline" data-count="2"' in content
    assert offline["url"] == "/admin/sensors/devicesensor/?deployment_status__exact=deployed&health=offline"
    assert f'href="{escape(offline["url"])}"' in content
    listed = admin_browser.get(offline["url"]).context["cl"].result_list
    assert sorted((row.device.name, row.name) for row in listed) == [("f-plant", "bus-1"), ("f-plant", "plc-1")]
    for row in offline["protocols"]:
        assert f'href="{escape(row["url"])}"' in content
        listed = admin_browser.get(row["url"]).context["cl"].result_list
        assert {(r.protocol, r.deployment_status, r.health_status) for r in listed} == {
            (row["protocol"], Status.DEPLOYED, "offline")
        }
        assert len(listed) == row["count"]


def test_no_sensor_deployed_but_offline(admin_browser, fleet):
    response = admin_browser.get(FLEET)

    assert response.context["deployed_offline"] == {
        "count": 0,
        "url": "/admin/sensors/devicesensor/?deployment_status__exact=deployed&health=offline",
        "protocols": [],
    }
    assert 'id="deployed-offline" data-count="0"' in response.content.decode()


# --- drift episodes and time to converge ---


def test_drift_episodes_of_the_last_24_hours_with_device_links(admin_browser, fleet):
    old = episode(fleet["a-in-sync"], started_ago=3 * 86400, lasted=60)

    response = admin_browser.get(FLEET)

    rows = response.context["episodes"]
    names = [row["device"].name for row in rows]
    assert old.pk not in [e.pk for e in DriftEpisode.objects.filter(started_at__gte=timezone.now() - timedelta(1))]
    # Every device drifted when its sensors were added, and the ones that reported everything converged; the
    # reconciling one drifted again when its sensor changed. Three are still open.
    assert sorted(names) == [
        "a-in-sync",
        "b-drifting",
        "c-never-reported",
        "d-offline",
        "e-reconciling",
        "e-reconciling",
    ]
    open_ones = sorted(row["device"].name for row in rows if row["ended_at"] is None)
    assert open_ones == ["b-drifting", "c-never-reported", "e-reconciling"]
    content = response.content.decode()
    for device in fleet.values():
        assert f'href="/admin/devices/device/{device.pk}/change/"' in content
    drifting = next(row for row in rows if row["device"].name == "b-drifting")
    assert [(s["name"], s["status"], s["error"]) for s in drifting["sensors"]] == [("can-1", Status.FAILED, ERROR)]
    assert response.context["converge"]["episodes"] == 3 and response.context["converge"]["open"] == 3


def test_time_to_converge_chart_is_server_side_svg_of_the_episodes(admin_browser, device):
    for seconds in (3, 4, 5, 20, 45, 200, 1200, 7200):
        episode(device, started_ago=seconds + 3600, lasted=seconds)
    episode(device, started_ago=600, lasted=None)  # still open: not a time to converge

    response = admin_browser.get(FLEET)

    content = response.content.decode()
    bars = response.context["histogram"]["bars"]
    assert [bar.count for bar in bars] == [3, 1, 1, 1, 0, 1, 1, 0]
    assert [bar.label for bar in bars] == [label for _, label, _ in BUCKETS]
    svg = content[content.index('<svg class="ss-chart" id="converge-histogram"') :]
    svg = svg[: svg.index("</svg>")]
    assert svg.count("<rect ") == len(BUCKETS)
    assert "<title>&lt; 10 s: 3 episodes</title>" in svg
    hourly = content[content.index('id="converge-hourly"') :]
    assert "<circle" in hourly[: hourly.index("</svg>")]
    stats = response.context["converge"]
    assert (stats["episodes"], stats["open"], stats["p50"], stats["max"]) == (8, 1, "45 s", "2 h")


def test_fleet_page_loads_nothing_from_outside(admin_browser, fleet):
    content = admin_browser.get(FLEET).content.decode()

    for url in urls_of(content):
        assert url.startswith(("/", "?", "#")), url
    assert "<script" not in content.split('id="content-main"')[1]  # the page itself runs no script
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", content)


def test_fleet_page_refreshes_itself_unless_asked_not_to(admin_browser, db):
    assert '<meta http-equiv="refresh" content="15">' in admin_browser.get(FLEET).content.decode()
    assert 'http-equiv="refresh"' not in admin_browser.get(FLEET + "?refresh=0").content.decode()


def test_empty_fleet(admin_browser):
    response = admin_browser.get(FLEET)

    assert response.status_code == 200
    assert [tile["count"] for tile in response.context["tiles"]] == [0, 0, 0, 0]
    content = response.content.decode()
    assert "No device drifted in the last 24 hours." in content
    assert "No episode converged in the last 24 hours." in content


# --- bounded queries ---

# Session, user, device counts, drift_stats, the time-to-converge series, the shown episodes with their devices,
# the sensors drifting now on the devices whose episode is open, the sensor matrix (with the deployed but offline
# counts), the failing errors, the running rollouts (none here: their progress is not read): whatever the size of
# the fleet.
FLEET_PAGE_QUERIES = 10


def make_big_fleet(user, devices: int) -> None:
    protocols = ("modbus", "can", "opcua", "mqtt")
    for index in range(devices):
        device = device_with(user, *((f"s-{j}", protocols[(index + j) % 4]) for j in range(3)), name=f"dev-{index:03d}")
        if index % 3 == 0:
            agent_for(device).deploy_offline("s-2", error=ERROR)
        elif index % 3 == 1:
            agent_for(device).deploy_failing("s-1", ERROR)
        for n in range(2):
            episode(device, started_ago=3600 * (n + 1), lasted=30 * (n + 1))


def test_fleet_page_query_count_is_bounded(admin_browser, superuser, django_assert_num_queries):
    make_big_fleet(superuser, 3)
    admin_browser.get(FLEET)  # warm the session
    with django_assert_num_queries(FLEET_PAGE_QUERIES):
        assert admin_browser.get(FLEET).status_code == 200

    make_big_fleet(superuser, 40)
    assert DriftEpisode.objects.count() > 100

    with django_assert_num_queries(FLEET_PAGE_QUERIES):
        response = admin_browser.get(FLEET)

    assert response.context["devices_total"] == 43
    assert response.context["deployed_offline"]["count"] == 1 + 14
    assert len(response.context["episodes"]) == 50
    assert response.context["episodes_more"] > 0


# --- the pure pieces ---


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.04, "0.0 s"),
        (4.25, "4.2 s"),
        (42, "42 s"),
        (185, "3 min 5 s"),
        (1500, "25 min"),
        (3600, "1 h"),
        (7260, "2 h 1 min"),
        (3 * 86400 + 7200, "3 d 2 h"),
    ],
)
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


def test_histogram_buckets_edges_and_scale():
    chart = histogram([0, 9.99, 10, 59.9, 60, 4 * 3600, 10**6])

    assert [bar.count for bar in chart["bars"]] == [2, 1, 1, 1, 0, 0, 0, 2]
    tallest = max(chart["bars"], key=lambda bar: bar.count)
    assert tallest.y >= chart["top"] and tallest.y + tallest.height == pytest.approx(chart["bottom"], abs=0.2)
    assert [tick.label for tick in chart["ticks"]] == ["0", "1", "2", "3", "4"]
    assert histogram([])["empty"] is True


def test_hourly_chart_draws_lines_only_through_hours_with_episodes(device):
    now = timezone.now().replace(minute=30)
    since = (now - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
    for hours_before, seconds in ((5, 10), (4, 20), (4, 40), (1, 3600)):
        ended = now - timedelta(hours=hours_before)
        DriftEpisode.objects.create(
            device=device,
            started_at=ended - timedelta(seconds=seconds),
            ended_at=ended,
            cause="manual",
            start_target_version=1,
            end_target_version=1,
        )

    series = time_to_converge_series(since=since, until=now)

    assert len(series["hours"]) == 25
    assert series["durations"] == [10, 20, 40, 3600]
    busy = [(hour["episodes"], hour["p50Seconds"], hour["p95Seconds"]) for hour in series["hours"] if hour["episodes"]]
    assert busy == [(1, 10, 10), (2, 20, 40), (1, 3600, 3600)]
    chart = hourly_chart(series["hours"])
    assert len(chart["p50"]["points"]) == 3
    assert len(chart["p50"]["lines"]) == 1  # the two neighbouring hours are joined; the lone hour is a dot
    assert [tick.label for tick in chart["ticks"]][-1] == "1 h"
    assert chart["x_labels"][0]["label"] == f"{timezone.localtime(since):%H:%M}"
