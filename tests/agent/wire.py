"""The real agent's recorded exchanges (``../shared/agent-wire/*.json``, beside the repository), replayed verbatim.

Each file holds what the unmodified upstream agent sent, with the device's uuid and key written as ``{uuid}`` and
``{key}``; a replay substitutes a real device's and sends the same method, path, headers and body (gzipped again
where the agent gzipped it). What SensorSync answered when it was recorded is not what it must answer now: the
tests say that.
"""

import gzip
import json
from functools import cache
from pathlib import Path

from django.conf import settings

WIRE_DIR = Path(settings.BASE_DIR).parent / "shared" / "agent-wire"
FILES = (
    "agent-2025-11-06.json",
    "agent-2025-11-06-running-a-sensor.json",
    "agent-2025-11-22.json",
    "agent-2025-11-22-running-a-sensor.json",
)


@cache
def recording(name: str) -> dict:
    path = WIRE_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the shared folder (with agent-wire/) must sit beside the repository, as in CI."
        )
    return json.loads(path.read_text())


def exchanges(name: str) -> list[dict]:
    return recording(name)["exchanges"]


def _substitute(value, device):
    text = json.dumps(value).replace("{uuid}", str(device.uuid)).replace("{key}", device.api_key)
    return json.loads(text)


def exchange_body(exchange: dict, device) -> dict | None:
    """The body the agent sent, with this device's uuid."""
    return _substitute(exchange["body"], device) if exchange["body"] is not None else None


def replay(client, exchange: dict, device):
    """Send one recorded exchange as the agent sent it, for ``device`` (its uuid and plaintext key)."""
    headers = {
        name: value
        for name, value in _substitute(exchange["headers"], device).items()
        if name.lower() not in ("content-type", "content-encoding")
    }
    path = exchange["path"].replace("{uuid}", str(device.uuid))
    if exchange["method"] == "GET":
        return client.get(path, headers=headers)
    raw = json.dumps(exchange_body(exchange, device)).encode()
    encoding = exchange["headers"].get("content-encoding")
    if exchange["body_gzipped_on_the_wire"]:
        assert encoding == "gzip"
        raw = gzip.compress(raw)
        headers["Content-Encoding"] = "gzip"
    return client.generic(
        exchange["method"], path, data=raw, content_type=exchange["headers"]["content-type"], headers=headers
    )


def sent_sensors(exchange: dict) -> list[dict]:
    """The sensors a recorded report says run (``config.sensors``)."""
    return next(iter(exchange["body"].values()))["config"]["sensors"]
