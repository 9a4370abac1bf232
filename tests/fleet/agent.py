"""An on-device agent for the admin and fleet tests: its two calls over the real agent endpoints, with its key.

Works with ``django.test.Client`` (in-process) and, through ``HttpAgent``, with a live server over plain HTTP.
"""

import itertools
import json
import urllib.error
import urllib.request

from tests.helpers import REPORT_URL, agent_headers, state_url

_seq = itertools.count(1)


def report_body(device, *, version: int, running: list[dict], health: dict | None = None, **extra) -> dict:
    """The agent's report; ``extra`` adds top-level fields as the agent sends them (``endpoints_health``, metrics)."""
    return {
        str(device.uuid): {
            "version": version,
            "config": {"sensors": running},
            "apps": {},
            "os_version": "Debian GNU/Linux 12",
            "agent_version": "2.7.1",
            "local_ip": "10.20.0.10",
            "uptime": 3600,
            "seq": next(_seq),
            "sensor_health": health if health is not None else {s["name"]: {"healthy": True} for s in running},
            **extra,
        }
    }


# What the 2025-11-22 agent sends every metrics cycle (agent-wire/agent-2025-11-22.json, trimmed).
METRICS = {
    "is_online": True,
    "cpu_usage": 59,
    "memory_usage": 2756,
    "memory_total": 24105,
    "storage_usage": 26713,
    "storage_total": 258019,
    "temperature": 48.5,
    "uptime": 93784.5,
    "top_processes": [
        {"pid": 812, "name": "agent", "cpu": 3.1, "mem": 1.2},
        {"pid": 641, "name": "modbus-adapter", "cpu": 0.8, "mem": 0.4},
    ],
    "network_interfaces": [
        {
            "name": "lo",
            "ip4": "127.0.0.1",
            "ip6": "::1",
            "mac": "00:00:00:00:00:00",
            "type": "virtual",
            "default": False,
            "virtual": False,
            "operstate": "unknown",
        },
        {
            "name": "eth0",
            "ip4": "192.0.2.2",
            "ip6": "fd00::2",
            "mac": "02:fc:00:00:00:01",
            "type": "wired",
            "default": True,
            "virtual": False,
            "operstate": "up",
        },
    ],
}


def endpoint_health(status: str, *, error: str | None = None, error_count: int = 0, last_seen=None) -> dict:
    """One sensor's entry of ``endpoints_health`` as the 2025-11-22 agent sends it."""
    return {
        "protocol": "modbus",
        "status": status,
        "connected": status == "online",
        "lastPoll": None,
        "lastSeen": last_seen,
        "errorCount": error_count,
        "lastError": error,
        "responseTimeMs": 12,
        "pollSuccessRate": 1.0 if status == "online" else 0.0,
        "registersUpdated": 4,
        "communicationQuality": {"online": "good"}.get(status, status),
    }


class Agent:
    """In-process agent (``django.test.Client``)."""

    def __init__(self, client, device) -> None:
        self.client = client
        self.device = device
        self.headers = agent_headers(device.api_key)

    def poll(self) -> dict:
        response = self.client.get(state_url(self.device.uuid), headers=self.headers)
        assert response.status_code == 200, response.content
        return response.json()[str(self.device.uuid)]

    def report(self, *, version: int, running: list[dict], health: dict | None = None, **extra) -> dict:
        body = report_body(self.device, version=version, running=running, health=health, **extra)
        response = self.client.generic(
            "PATCH", REPORT_URL, json.dumps(body), content_type="application/json", headers=self.headers
        )
        assert response.status_code == 200, response.content
        return response.json()

    def deploy_all(self) -> None:
        """Poll, then report running every sensor of the target exactly as desired."""
        state = self.poll()
        self.report(version=state["version"], running=state["config"]["sensors"])

    def deploy_failing(self, name: str, error: str) -> None:
        """Poll, then report running everything but ``name``, which failed with ``error``."""
        state = self.poll()
        sensors = state["config"]["sensors"]
        health = {s["name"]: {"healthy": True} for s in sensors if s["name"] != name}
        health[name] = {"healthy": False, "lastError": error}
        self.report(version=state["version"], running=[s for s in sensors if s["name"] != name], health=health)

    def deploy_offline(self, *names: str, error: str, **extra) -> None:
        """Poll, then report running every sensor as desired, with the adapters of ``names`` offline (``error``)
        and the others online, in ``endpoints_health`` (the 2025-11-22 agent's health map)."""
        state = self.poll()
        sensors = state["config"]["sensors"]
        health = {
            s["name"]: endpoint_health("offline", error=error, error_count=3)
            if s["name"] in names
            else endpoint_health("online", last_seen="2026-12-04T10:00:00+00:00")
            for s in sensors
        }
        self.report(version=state["version"], running=sensors, health={}, endpoints_health=health, **extra)


class HttpAgent:
    """The same agent against a live server, over HTTP (``urllib``): what a real device does."""

    def __init__(self, base_url: str, device) -> None:
        self.base_url = base_url.rstrip("/")
        self.device = device
        self.headers = {**agent_headers(device.api_key), "Accept": "application/json"}

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self.headers, **({"Content-Type": "application/json"} if data else {}))
        request = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def poll(self) -> dict:
        return self._call("GET", state_url(self.device.uuid))[str(self.device.uuid)]

    def report(self, *, version: int, running: list[dict], health: dict | None = None, **extra) -> dict:
        body = report_body(self.device, version=version, running=running, health=health, **extra)
        return self._call("PATCH", REPORT_URL, body)
