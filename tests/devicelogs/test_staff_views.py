"""Staff read a device's log: the API (filtered, newest first, cursor pages), the admin (the device page's "Logs"),
and the retention command."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from devicelogs.models import DeviceLogLine
from tests.factories import DeviceFactory, UserFactory
from tests.helpers import staff_headers, token_for


def _line(device, message: str, *, level: str = "info", received_at=None, **fields) -> DeviceLogLine:
    now = received_at or timezone.now()
    return DeviceLogLine.objects.create(
        device_id=device.pk, logged_at=now, received_at=now, level=level, message=message, **fields
    )


def _url(device_uuid, **query) -> str:
    suffix = "&".join(f"{name}={value}" for name, value in query.items())
    return f"/api/v1/devices/{device_uuid}/logs" + (f"?{suffix}" if suffix else "")


@pytest.mark.django_db
def test_the_api_lists_one_devices_log_newest_first_with_filters(admin_client):
    device, other = DeviceFactory(), DeviceFactory()
    _line(device, "boot", level="info")
    _line(device, "modbus timeout", level="error", service_name="sensors", is_stderr=True)
    _line(device, "slow poll", level="warn")
    _line(other, "not mine", level="error")

    page = admin_client.get(_url(device.uuid)).json()
    assert [row["message"] for row in page["results"]] == ["slow poll", "modbus timeout", "boot"]
    error = page["results"][1]
    assert (error["level"], error["serviceName"], error["isStderr"]) == ("error", "sensors", True)
    assert {"loggedAt", "receivedAt", "source", "sourceName"} <= set(error)

    def messages(**query) -> list[str]:
        return [row["message"] for row in admin_client.get(_url(device.uuid, **query)).json()["results"]]

    assert messages(level="error") == ["modbus timeout"]
    assert messages(level="error&level=warn") == ["slow poll", "modbus timeout"]
    assert messages(q="MODBUS") == ["modbus timeout"]
    assert messages(service="sensors") == ["modbus timeout"]
    assert messages(limit=1) == ["slow poll"]


@pytest.mark.django_db
def test_the_log_pages_with_a_cursor(admin_client):
    device = DeviceFactory()
    for n in range(5):
        _line(device, f"m{n}")
    first = admin_client.get(_url(device.uuid, limit=3)).json()
    assert [row["message"] for row in first["results"]] == ["m4", "m3", "m2"]
    second = admin_client.get(first["next"]).json()
    assert [row["message"] for row in second["results"]] == ["m1", "m0"]


@pytest.mark.django_db
def test_an_unknown_device_is_a_404_and_a_bad_filter_a_400(admin_client):
    from uuid import uuid4

    assert admin_client.get(_url(uuid4())).status_code == 404
    device = DeviceFactory()
    assert admin_client.get(_url(device.uuid, level="loud")).status_code == 400
    assert admin_client.get(_url(device.uuid, since="yesterday")).status_code == 400


@pytest.mark.django_db
def test_reading_the_log_needs_its_view_permission(api_client):
    device = DeviceFactory()
    assert api_client.get(_url(device.uuid)).status_code == 401
    without = UserFactory(username="no-logs")
    assert api_client.get(_url(device.uuid), headers=staff_headers(token_for(without))).status_code == 403
    reader = UserFactory(username="log-reader", permissions=["devicelogs.view_devicelogline"])
    assert api_client.get(_url(device.uuid), headers=staff_headers(token_for(reader))).status_code == 200


@pytest.mark.django_db
def test_the_device_page_links_to_its_log_and_the_log_page_shows_it(admin_browser):
    device, other = DeviceFactory(name="press-7"), DeviceFactory()
    _line(device, "Sensor temp-1 failed", level="error", service_name="sensors")
    _line(other, "someone else's line")

    page = admin_browser.get(f"/admin/devices/device/{device.pk}/change/").content.decode()
    assert f'href="/admin/devicelogs/devicelogline/?q={device.uuid}"' in page

    listing = admin_browser.get(f"/admin/devicelogs/devicelogline/?q={device.uuid}")
    assert listing.status_code == 200
    html = listing.content.decode()
    assert "Sensor temp-1 failed" in html and "press-7" in html
    assert "someone else" not in html
    assert "ss-badge--failed" in html
    # Plain text searches the messages; nobody adds or edits a log line.
    assert "someone else" in admin_browser.get("/admin/devicelogs/devicelogline/?q=else").content.decode()
    assert admin_browser.get("/admin/devicelogs/devicelogline/add/").status_code == 403


@pytest.mark.django_db
@override_settings(SENSORSYNC_DEVICE_LOG_RETENTION_DAYS=14)
def test_prune_device_logs_deletes_what_is_past_retention_in_batches(capsys):
    device = DeviceFactory()
    old = timezone.now() - timedelta(days=15)
    for n in range(7):
        _line(device, f"old-{n}", received_at=old)
    _line(device, "recent", received_at=timezone.now() - timedelta(days=13))
    call_command("prune_device_logs", "--batch", "3")
    assert list(DeviceLogLine.objects.values_list("message", flat=True)) == ["recent"]
    assert "7 device log lines older than 14 days deleted" in capsys.readouterr().out


@pytest.mark.django_db
def test_deleting_a_device_deletes_its_log():
    from devices.services import device_delete

    device = DeviceFactory()
    _line(device, "x")
    device_delete(uuid=device.uuid, user=None)
    assert not DeviceLogLine.objects.exists()


@pytest.mark.django_db
def test_the_device_page_shows_the_latest_warnings_and_errors_of_its_log(admin_browser):
    device = DeviceFactory()
    page_url = f"/admin/devices/device/{device.pk}/change/"
    _line(device, "all is well", level="info")
    assert "device-log-problems" not in admin_browser.get(page_url).content.decode()  # nothing to complain about

    for n in range(12):
        _line(device, f"modbus timeout {n}", level="error" if n % 2 else "warn", service_name="sensors")
    _line(device, "later info", level="info")
    response = admin_browser.get(page_url)
    shown = [line.message for line in response.context["log_problems"]]
    assert shown == [f"modbus timeout {n}" for n in range(11, 1, -1)]  # the newest ten, info lines left out
    html = response.content.decode()
    assert 'id="device-log-problems"' in html and "modbus timeout 11" in html and "later info" not in html
