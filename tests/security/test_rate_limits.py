"""Abuse: a per-device budget on the agent endpoints (``SENSORSYNC_AGENT_RATE_LIMIT``, "COUNT/SECONDS"), shared by
server processes through Redis when ``SENSORSYNC_RATE_LIMIT_REDIS_URL`` is set, and throttled password logins
(``SENSORSYNC_ADMIN_LOGIN_RATE_LIMIT``, per client address and username).

Over the budget: 429, the JSON error shape, a ``Retry-After`` of whole seconds > 0, and nothing written.
"""

import json
import time
import uuid

import pytest
from django.test import Client, override_settings

from tests.factories import UserFactory
from tests.helpers import (
    REPORT_URL,
    agent_headers,
    assert_error_shape,
    device_with,
    report_body,
    snapshot_diff,
    state_url,
    target_sensors,
    world_snapshot,
)
from tests.servers import ServerProcesses, http

REDIS_URL = "redis://127.0.0.1:6379/15"


def _poll(client, device):
    return client.get(state_url(device.uuid), headers=agent_headers(device.api_key))


def _report(client, device, seq: int):
    raw = report_body(device, 2, target_sensors(device), seq=seq)
    return client.generic(
        "PATCH", REPORT_URL, data=raw, content_type="application/json", headers=agent_headers(device.api_key)
    )


def _fresh_window(period: int, margin: float = 2.0) -> None:
    """Counters may be kept per fixed window (aligned to the clock): do not start a sequence of requests that
    must fall into one window just before a window ends."""
    remaining = period - (time.time() % period)
    if remaining < margin or period <= margin:
        time.sleep(remaining + 0.02)


def _retry_after(response, period: int) -> int:
    value = response.get("Retry-After") if hasattr(response, "get") else None
    assert value is not None and value.isdigit(), f"Retry-After is {value!r}"
    seconds = int(value)
    assert 0 < seconds <= period, seconds
    return seconds


def _assert_limited(response, period: int) -> int:
    assert_error_shape(response, 429)
    return _retry_after(response, period)


@pytest.mark.django_db
@override_settings(SENSORSYNC_AGENT_RATE_LIMIT="4/60", SENSORSYNC_RATE_LIMIT_REDIS_URL="")
def test_a_device_over_its_budget_gets_429_with_retry_after_and_nothing_is_written():
    device = device_with("s-1")
    client = Client(raise_request_exception=False)
    _fresh_window(60)

    within = [_poll(client, device), _report(client, device, 1), _poll(client, device), _report(client, device, 2)]
    assert [r.status_code for r in within] == [200, 200, 200, 200], [r.content[:100] for r in within]
    before = world_snapshot()
    polled = _poll(client, device)
    reported = _report(client, device, 3)

    _assert_limited(polled, 60)
    _assert_limited(reported, 60)
    after = world_snapshot()
    assert after == before, f"a refused request wrote: {snapshot_diff(before, after)}"


@pytest.mark.django_db
@override_settings(SENSORSYNC_AGENT_RATE_LIMIT="3/60", SENSORSYNC_RATE_LIMIT_REDIS_URL="")
def test_devices_have_independent_budgets_and_a_wrong_key_spends_none_of_them():
    a = device_with("s-1", name="a")
    b = device_with("s-1", name="b")
    client = Client(raise_request_exception=False)
    _fresh_window(60)

    for _ in range(10):  # someone without a's key hammering a's URL
        assert client.get(state_url(a.uuid), headers=agent_headers("wrong-" + "k" * 40)).status_code == 401
    assert [_poll(client, a).status_code for _ in range(3)] == [200, 200, 200]
    _assert_limited(_poll(client, a), 60)
    assert [_poll(client, b).status_code for _ in range(3)] == [200, 200, 200]
    _assert_limited(_poll(client, b), 60)


@pytest.mark.django_db
@override_settings(SENSORSYNC_AGENT_RATE_LIMIT="2/2", SENSORSYNC_RATE_LIMIT_REDIS_URL="")
def test_the_budget_comes_back_when_the_window_has_passed():
    device = device_with("s-1")
    client = Client(raise_request_exception=False)
    _fresh_window(2)
    statuses = [_poll(client, device).status_code for _ in range(2)]
    limited = _poll(client, device)
    assert statuses == [200, 200]
    wait = _assert_limited(limited, 2)

    time.sleep(wait + 0.05)

    assert _poll(client, device).status_code == 200


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_server_processes_share_one_budget_through_redis(tmp_path):
    device = device_with("s-1")
    env = {"SENSORSYNC_AGENT_RATE_LIMIT": "5/60", "SENSORSYNC_RATE_LIMIT_REDIS_URL": REDIS_URL}
    with ServerProcesses(2, env=env, log_dir=tmp_path) as servers:
        _fresh_window(60, margin=5)
        answers = [
            http("GET", servers.url(i, state_url(device.uuid)), headers=agent_headers(device.api_key))
            for i in range(12)
        ]
        logs = servers.logs()
    statuses = [status for status, _, _ in answers]
    # One budget of 5 for the device, whichever process answers (alternating); per-process budgets would give 10.
    assert statuses == [200] * 5 + [429] * 7, (statuses, logs[-1500:])
    for status, headers, body in answers:
        if status == 429:
            payload = json.loads(body)
            assert payload["error"] and payload["message"], payload
            retry_after = {k.lower(): v for k, v in headers.items()}.get("retry-after", "")
            assert retry_after.isdigit() and 0 < int(retry_after) <= 60, headers


# ----------------------------------------------------------------------------------------------------------------
# Password logins
# ----------------------------------------------------------------------------------------------------------------

# Every password login form of the site: the admin's, and the browsable API's (``/api-auth/login/``), which checks
# the same passwords; throttling one door and not the other throttles nothing.
LOGIN_FORMS = ["/admin/login/", "/api-auth/login/"]
PASSWORD = "correct horse battery staple"


def _login(client, url: str, username: str, password: str, address: str = "10.0.0.1"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=address)


def _logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def _assert_refused(response, client) -> None:
    """Throttled: a 429, or the login form again without logging in."""
    assert response.status_code in (200, 429), response.status_code
    assert not _logged_in(client), "logged in although throttled"
    if response.status_code == 429:
        _retry_after(response, 300)


@pytest.mark.django_db
@pytest.mark.parametrize("url", LOGIN_FORMS)
@override_settings(SENSORSYNC_ADMIN_LOGIN_RATE_LIMIT="3/300", SENSORSYNC_RATE_LIMIT_REDIS_URL="")
def test_failed_logins_are_throttled_per_address_and_username(url):
    username = f"ops-{uuid.uuid4().hex[:8]}"
    UserFactory(username=username, is_superuser=True, password=PASSWORD)
    client = Client()
    _fresh_window(300, margin=5)

    for _ in range(3):
        failed = _login(client, url, username, "wrong password")
        assert failed.status_code == 200 and not _logged_in(client)

    _assert_refused(_login(client, url, username, "another guess"), client)
    throttled = _login(client, url, username, PASSWORD)
    _assert_refused(throttled, client)

    # Another username from the same address, and the same username from another address, are not throttled.
    other = f"ops-{uuid.uuid4().hex[:8]}"
    UserFactory(username=other, is_superuser=True, password=PASSWORD)
    assert _login(Client(), url, other, "wrong password").status_code == 200
    elsewhere = Client()
    assert _login(elsewhere, url, username, PASSWORD, address="10.0.0.2").status_code == 302
    assert _logged_in(elsewhere)


@pytest.mark.django_db
@override_settings(SENSORSYNC_ADMIN_LOGIN_RATE_LIMIT="2/2", SENSORSYNC_RATE_LIMIT_REDIS_URL="")
def test_login_throttling_ends_when_the_window_has_passed():
    url = "/admin/login/"
    username = f"ops-{uuid.uuid4().hex[:8]}"
    UserFactory(username=username, is_superuser=True, password=PASSWORD)
    client = Client()
    _fresh_window(2)
    for _ in range(2):
        _login(client, url, username, "wrong password")
    refused = _login(client, url, username, PASSWORD)
    _assert_refused(refused, client)

    time.sleep(2.1)

    assert _login(client, url, username, PASSWORD).status_code == 302
    assert _logged_in(client)
