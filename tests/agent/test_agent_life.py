"""A 2025-11-06 agent's whole life against the server, over HTTP, in the agent's own bodies: a staff-created
device, polls, a deploy, reports with the adapters' health, an outage whose reports the agent queued (version
stripped) and flushes after the next success, then a change, a removal and an adapter that cannot start.

After every step the read model is checked against what the agent last said, and it never goes back: the stored
report's version never decreases, and nothing a queued report says reaches the rows.
"""

import copy
import gzip
import json

import pytest

from devices.models import DeviceCurrentState
from tests.helpers import (
    REPORT_URL,
    add_sensor,
    change_sensor,
    delete_sensor,
    device_snapshot,
    fresh,
    poll,
    rows,
    sensor_payload,
    verdict,
)

from .wire import exchange_body, exchanges

pytestmark = pytest.mark.django_db

PLC_DOWN = "connect ECONNREFUSED 10.0.0.5:502"


class Agent2025_11_06:
    """The agent's side, as its sync loop builds reports (see ``../shared/agent-wire/README.md``)."""

    def __init__(self, client, device):
        self.client, self.device = client, device
        self.etag: str | None = None
        self.version = 0
        self.desired: list[dict] = []
        self.running: list[dict] = []
        self.connected: dict[str, bool] = {}
        self.queue: list[dict] = []
        self.first_report = exchange_body(exchanges("agent-2025-11-06.json")[1], device)[str(device.uuid)]

    def poll(self) -> int:
        response = poll(self.client, self.device, self.etag)
        if response.status_code == 200:
            self.etag = response["ETag"]
            state = response.json()[str(self.device.uuid)]
            self.version, self.desired = state["version"], state["config"].get("sensors", [])
        return response.status_code

    def deploy(self, *, failing: tuple[str, ...] = ()) -> None:
        """Start an adapter for each enabled desired sensor; ``failing`` ones cannot start."""
        self.running = [copy.deepcopy(s) for s in self.desired if s["enabled"] and s["name"] not in failing]
        for s in self.running:
            s["id"] = f"agent-row-{s['name']}"  # its own row id, not the server's
        self.connected = {s["name"]: s["name"] not in failing for s in self.desired if s["enabled"]}

    def body(self, *, metrics: bool, first: bool = False) -> dict:
        entry = {"apps": {}, "config": {"sensors": self.running}, "is_online": True, "version": self.version}
        if first:
            entry |= {k: self.first_report[k] for k in ("os_version", "agent_version", "local_ip")}
        if metrics:
            entry |= {k: self.first_report[k] for k in ("cpu_usage", "memory_usage", "memory_total", "uptime")}
            entry["protocol_adapters_health"] = {
                "modbus": [
                    {
                        "deviceName": name,
                        "connected": up,
                        "lastPoll": None,
                        "errorCount": 0 if up else 4,
                        "lastError": None if up else PLC_DOWN,
                    }
                    for name, up in self.connected.items()
                ]
            }
        return entry

    def send(self, entry: dict):
        raw = gzip.compress(json.dumps({str(self.device.uuid): entry}).encode())
        return self.client.generic(
            "PATCH",
            REPORT_URL,
            data=raw,
            content_type="application/json",
            headers={"X-Device-API-Key": self.device.api_key, "Content-Encoding": "gzip"},
        )

    def report(self, **kwargs) -> dict:
        answer = verdict(self.send(self.body(**kwargs)), self.device)
        # After a success the queue is flushed oldest first, each queued report on its own.
        while self.queue:
            assert verdict(self.send(self.queue.pop(0)), self.device)["outcome"] == "queued"
        return answer

    def report_fails(self, **kwargs) -> None:
        """The server is unreachable: the report is queued with its version stripped (after three failures)."""
        entry = self.body(**kwargs)
        entry.pop("version")
        self.queue.append(entry)


def test_a_2025_11_06_agent_lifetime_converges_and_never_goes_back(admin_client, agent, device):
    life = Agent2025_11_06(agent, device)
    stored_versions: list[int] = []

    def check(expected: dict[str, tuple]) -> dict[str, dict]:
        """Rows as (status, running, health) by name; the stored report's version never decreases."""
        table = rows(admin_client, device)
        assert {n: (r["deploymentStatus"], r["running"], r["healthStatus"]) for n, r in table.items()} == expected
        current = DeviceCurrentState.objects.filter(device=device).first()
        if current is not None:
            assert not stored_versions or current.version >= stored_versions[-1]
            stored_versions.append(current.version)
        return table

    assert life.poll() == 200 and life.version == 1
    assert life.report(metrics=True, first=True)["inSync"] is True
    assert fresh(device).agent_version == "upstream"

    # Staff add a sensor: pending until the agent applies the version that has it.
    add_sensor(admin_client, device, sensor_payload("boiler-temp"))
    check({"boiler-temp": ("pending", False, "")})
    assert life.poll() == 200 and life.version == 2
    life.deploy()
    answer = life.report(metrics=True)
    assert (answer["inSync"], answer["sensors"]["boiler-temp"]["health"]) == (True, "online")
    check({"boiler-temp": ("deployed", True, "online")})
    assert life.poll() == 304

    # An outage: three reports fail and are queued; meanwhile the PLC stops answering.
    for _ in range(3):
        life.report_fails(metrics=False)
    life.connected["boiler-temp"] = False
    life.report_fails(metrics=True)
    queued = list(life.queue)
    # The server comes back: the fresh report applies, then the queue drains with 200s and changes nothing.
    before_flush = None

    def fresh_then_flush():
        nonlocal before_flush
        answer = verdict(life.send(life.body(metrics=True)), device)
        before_flush = device_snapshot(device)
        while life.queue:
            assert verdict(life.send(life.queue.pop(0)), device)["outcome"] == "queued"
        return answer

    answer = fresh_then_flush()
    assert answer["outcome"] == "applied"
    after_flush = device_snapshot(device)
    assert (after_flush["sensors"], after_flush["current"]) == (before_flush["sensors"], before_flush["current"])
    assert len([e for e in after_flush["events"] if e[1] == "current_state.queued"]) == len(queued)
    # Deployed and running, yet its adapter cannot reach the PLC: its own state, with the adapter's error.
    table = check({"boiler-temp": ("deployed", True, "offline")})
    assert table["boiler-temp"]["healthError"] == PLC_DOWN
    assert table["boiler-temp"]["connected"] is False

    # The PLC is back.
    life.connected["boiler-temp"] = True
    life.report(metrics=True)
    check({"boiler-temp": ("deployed", True, "online")})

    # Changed: reconciling while the agent runs the old config, deployed once it applies the new version.
    change_sensor(admin_client, device, "boiler-temp", {"pollInterval": 2000})
    check({"boiler-temp": ("reconciling", True, "online")})
    assert life.poll() == 200 and life.version == 3
    life.deploy()
    life.report(metrics=False)
    table = check({"boiler-temp": ("deployed", True, "online")})
    assert table["boiler-temp"]["pollInterval"] == 2000

    # An adapter that cannot start: failed, with the adapter's own error rather than a generic one.
    add_sensor(admin_client, device, sensor_payload("door-contact", connection={"host": "10.0.0.5", "port": 503}))
    assert life.poll() == 200 and life.version == 4
    life.deploy(failing=("door-contact",))
    answer = life.report(metrics=True)
    assert answer["inSync"] is False
    assert answer["sensors"]["door-contact"] == {
        "status": "failed",
        "running": False,
        "error": PLC_DOWN,
        "health": "offline",
    }
    check({"boiler-temp": ("deployed", True, "online"), "door-contact": ("failed", False, "offline")})

    # Removed: reconciling while it still runs, gone once the agent applies the version without it.
    delete_sensor(admin_client, device, "door-contact")
    delete_sensor(admin_client, device, "boiler-temp")
    check({"boiler-temp": ("reconciling", True, "online")})
    assert life.poll() == 200 and life.version == 6
    life.deploy()
    assert life.report(metrics=True)["inSync"] is True
    check({})
    assert stored_versions == sorted(stored_versions)
