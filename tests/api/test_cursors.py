"""A pagination cursor the server did not issue for this list is a 400 naming ``cursor``, never a 500 and never a
silently wrong page: the cursor lists are the fleet-wide sensors, the event log and one device's events."""

import base64
from urllib.parse import parse_qs, urlparse

import pytest

from tests.helpers import assert_error, device_events_url, events_url, fleet_sensors_url

pytestmark = pytest.mark.django_db


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


MALFORMED = {
    "garbage": "garbage",
    "punctuation": "!!!***",
    "base64 of garbage": _b64("garbage"),
    "base64 of binary": base64.b64encode(bytes(range(256))).decode("ascii"),
    "base64 of non-ascii": _b64("p=é"),
    "non-ascii": "é☃",
    "huge": "A" * 200_000,
    "huge base64 of a query string": _b64("p=1&" * 50_000),
    "position of the wrong type": _b64("p=abc"),
    "position a float": _b64("p=1.5"),
    "position empty": _b64("p="),
    "position with a nul": _b64("p=1\x00"),
    "position beyond 64 bits": _b64("p=" + "9" * 40),
    "position of 5000 digits": _b64("p=" + "9" * 5000),
    "position a time (a created_at ordering's cursor)": _b64("p=2024-01-01 00:00:00+00:00"),
    "DRF's cursor with no ordering": _b64("p=1"),
    "reverse not a flag": _b64("r=yes"),
    "offset negative": _b64("o=-1"),
    "offset text": _b64("o=x"),
}


def _urls(device) -> dict[str, str]:
    return {
        "sensors": fleet_sensors_url(),
        "events": events_url(),
        "device events": device_events_url(device.uuid),
    }


def _next_cursor(client, url: str) -> str:
    body = client.get(url, {"limit": 1}).json()
    assert body["next"], body
    return parse_qs(urlparse(body["next"]).query)["cursor"][0]


@pytest.mark.parametrize("list_name", ["sensors", "events", "device events"])
@pytest.mark.parametrize("cursor", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_cursor_is_a_400_naming_the_cursor(admin_client, device_with_sensors, list_name, cursor):
    response = admin_client.get(_urls(device_with_sensors)[list_name], {"cursor": cursor})

    body = assert_error(response, 400, "validation_error", fields=["cursor"])
    assert "cursor" in body["message"]


@pytest.mark.parametrize(("issued_by", "used_on"), [("sensors", "events"), ("events", "sensors")])
def test_a_cursor_of_another_ordering_is_a_400(admin_client, device_with_sensors, issued_by, used_on):
    """Fleet sensors run oldest first, events newest first: a position from one list means nothing in the other."""
    urls = _urls(device_with_sensors)
    cursor = _next_cursor(admin_client, urls[issued_by])

    assert_error(admin_client.get(urls[used_on], {"cursor": cursor}), 400, "validation_error", fields=["cursor"])


@pytest.mark.parametrize("list_name", ["sensors", "events", "device events"])
def test_the_cursors_the_server_issues_page_through_every_row_once(admin_client, device_with_sensors, list_name):
    url = _urls(device_with_sensors)[list_name]
    everything = [row["id"] for row in admin_client.get(url, {"limit": 1000}).json()["results"]]
    assert len(everything) >= 3

    seen, previous_links, next_url = [], [], f"{url}?limit=2"
    while next_url:
        body = admin_client.get(next_url).json()
        seen += [row["id"] for row in body["results"]]
        previous_links.append(body["previous"])
        next_url = body["next"]

    assert seen == everything
    # The way back works too: a previous link from the last page answers the page before it.
    assert previous_links[-1] is not None
    back = admin_client.get(previous_links[-1])
    assert back.status_code == 200 and back.json()["results"], back.content[:300]


def test_an_events_cursor_pages_one_devices_events_too(admin_client, device_with_sensors):
    """The two event lists share their ordering, so a cursor from one is a position in the other."""
    cursor = _next_cursor(admin_client, events_url())

    response = admin_client.get(device_events_url(device_with_sensors.uuid), {"cursor": cursor})

    assert response.status_code == 200, response.content[:300]
