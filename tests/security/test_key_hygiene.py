"""SPEC section 4: device keys are shown once (at creation or rotation) and stored only as a SHA-256 digest.

One device life through every door (API create, rotation, ``manage.py create_device``, the admin's add form),
with agents using good, rotated-away and mangled keys, and staff reading everything afterwards. Every response
after the one that showed a key, every log line at DEBUG (SQL included), every event and every table (sessions
decoded) is searched for each key.
"""

import hashlib
import json
import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from devices.models import Device
from tests.factories import UserFactory
from tests.helpers import (
    API,
    REPORT_URL,
    agent_headers,
    database_text,
    devices_url,
    report_body,
    rotate_key_url,
    staff_headers,
    state_url,
    token_for,
)

pytestmark = pytest.mark.django_db


class Recorder:
    """Sends requests and keeps every response, so all of them can be searched afterwards."""

    def __init__(self):
        self.client = Client(raise_request_exception=False)
        self.responses: list[tuple[str, object]] = []

    def __call__(self, method: str, url: str, *, body=None, raw: bytes | None = None, **headers):
        data = raw if raw is not None else (json.dumps(body) if body is not None else "")
        response = self.client.generic(method, url, data=data, content_type="application/json", headers=headers)
        self.responses.append((f"{method} {url}", response))
        return response


def _text(response) -> str:
    return response.content.decode("utf-8", "replace") + "\n" + json.dumps(dict(response.items()))


def test_keys_are_shown_once_and_stored_only_as_digests(secret_watch):
    staff = staff_headers(token_for(UserFactory(is_superuser=True)))
    send = Recorder()

    # Created through the API: the key is in this answer only.
    created = send("POST", devices_url(), body={"name": "k-api"}, **staff)
    assert created.status_code == 201, created.content
    device_uuid = created.json()["uuid"]
    first_key = created.json()["apiKey"]
    secret_watch.append(first_key)
    assert len(first_key) >= 43  # >= 32 bytes of entropy, url-safe base64
    shown = [created]

    device = Device.objects.get(uuid=device_uuid)
    device.api_key = first_key
    assert send("GET", state_url(device_uuid), **agent_headers(first_key)).status_code == 200
    assert (
        send("PATCH", REPORT_URL, raw=report_body(device, 1, [], seq=1), **agent_headers(first_key)).status_code == 200
    )

    # Rotated: the new key is shown once, the old one stops working.
    rotated = send("POST", rotate_key_url(device_uuid), **staff)
    assert rotated.status_code == 200, rotated.content
    second_key = rotated.json()["apiKey"]
    secret_watch.append(second_key)
    assert second_key != first_key
    shown.append(rotated)

    # Created by the operator's command.
    out = StringIO()
    call_command("create_device", "k-command", "--json", stdout=out, stderr=StringIO())
    command_key = json.loads(out.getvalue())["apiKey"]
    secret_watch.append(command_key)

    # Created in the admin: the key is shown in the page after the redirect, once.
    admin = Client(raise_request_exception=False)
    admin.force_login(UserFactory(is_superuser=True))
    added = admin.post("/admin/devices/device/add/", {"name": "k-admin", "description": "", "is_active": "on"})
    assert added.status_code == 302, added.content[:500]
    page = admin.get(added["Location"])
    admin_device = Device.objects.get(name="k-admin")
    found = [
        k for k in re.findall(r"[A-Za-z0-9_-]{43,}", page.content.decode()) if _digest(k) == admin_device.api_key_digest
    ]
    assert len(found) >= 1, "the admin did not show the new key after creating the device"
    admin_key = found[0]
    secret_watch.append(admin_key)
    again = admin.get(added["Location"])
    assert admin_key not in again.content.decode(), "the admin shows the key a second time"
    assert admin_key not in admin.get(f"/admin/devices/device/{admin_device.pk}/change/").content.decode()
    assert admin_key not in admin.get("/admin/devices/device/").content.decode()

    # Agents with keys that must not work, in every way a key can be sent.
    for key in (first_key, first_key + "x", first_key[:-1], second_key.upper(), f" {first_key} "):
        for headers in (agent_headers(key), {"Authorization": f"Bearer {key}"}):
            polled = send("GET", state_url(device_uuid), **headers)
            reported = send("PATCH", REPORT_URL, raw=report_body(device, 1, [], seq=2), **headers)
            if key.strip() != second_key:
                assert polled.status_code == 401, (key == first_key, polled.status_code)
                assert reported.status_code == 401, reported.status_code
    assert send("GET", state_url(device_uuid), **agent_headers(second_key)).status_code == 200
    # A key on the management API is not a credential, whatever the header.
    for key in (second_key, command_key):
        for headers in (agent_headers(key), {"Authorization": f"Bearer {key}"}):
            assert send("GET", devices_url(), **headers).status_code == 401

    # Staff read everything there is to read about these devices.
    for path in ("devices", "sensors", "events", "drift-episodes"):
        assert send("GET", f"{API}/{path}", **staff).status_code == 200, path
    for each in Device.objects.all():
        for path in ("", "/target-state", "/target-state/versions", "/current-state", "/drift", "/events", "/sensors"):
            send("GET", f"{API}/devices/{each.uuid}{path}", **staff)

    # No response but the one that showed a key contains it; the first key never appears after rotation.
    for label, response in send.responses:
        text = _text(response)
        for key in (first_key, second_key, command_key, admin_key):
            if any(response is s for s in shown) and key in response.content.decode():
                continue
            assert key not in text, f"a key appears in the answer to {label} ({response.status_code})"
    assert first_key not in _text(rotated)

    # Stored: digests only, and nowhere in any table (sessions decoded: the admin's one-time message is gone).
    stored = database_text()
    for key in (first_key, second_key, command_key, admin_key):
        assert key not in stored, "a key is stored in clear"
    current = {Device.objects.get(uuid=device_uuid).api_key_digest: second_key}
    current[Device.objects.get(name="k-command").api_key_digest] = command_key
    current[admin_device.api_key_digest] = admin_key
    for digest, key in current.items():
        assert digest == _digest(key)
    assert not Device.objects.filter(api_key_digest=_digest(first_key)).exists()
    for digest in Device.objects.values_list("api_key_digest", flat=True):
        assert re.fullmatch(r"[0-9a-f]{64}", digest), digest


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
