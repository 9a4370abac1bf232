"""The MQTT publisher of the benchmark, run as its own process by ``bench.realfleet``.

``publish``: the fleet's reports (``bench.fleet``'s schedule, report events only) published at their times to
``iot/device/<uuid>/state``, QoS 1, the JSON object of the PATCH body uncompressed, as the 2025-11-22 agent does,
for many devices over a few connections (a benchmark account on the project's broker, ``publisher_account``; the
same account runs the transport ceiling's Mosquitto clients on the no-op topics). It prints one line
``BENCH_RESULT {json}`` at its end.
"""

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from . import fleet

RESULT_MARK = "BENCH_RESULT "
PUBLISHER_ROLE = "bench-publisher"
NOOP_TOPIC = "bench/noop"
LATE_MS = 250


def publisher_acls() -> list[dict]:
    """What the benchmark's account may do on the project's broker: publish any device's report (the load
    generator speaks for many devices over a few connections) and use the no-op topics of the transport ceiling."""
    return [
        {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}
        for acltype, topic in (
            ("publishClientSend", "iot/device/+/state"),
            ("publishClientSend", f"{NOOP_TOPIC}/#"),
            ("subscribePattern", f"$share/bench/{NOOP_TOPIC}/#"),
            ("publishClientReceive", f"{NOOP_TOPIC}/#"),
        )
    ]


def publisher_account(url: str, *, admin: tuple[str, str], username: str, password: str) -> None:
    """The benchmark's client and role on the broker, through the dynamic-security API with the admin account."""
    from ingest.dynsec import DynsecControl

    with DynsecControl(url, username=admin[0], password=admin[1]) as control:
        control.run_one_quiet("deleteClient", username=username)
        control.run_one_quiet("deleteRole", rolename=PUBLISHER_ROLE)
        control.run_one("createRole", rolename=PUBLISHER_ROLE, acls=publisher_acls())
        control.run_one("createClient", username=username, password=password, roles=[{"rolename": PUBLISHER_ROLE}])


def _connect(args, client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.username_pw_set(args.username, args.password)
    client.max_inflight_messages_set(args.inflight)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p=None: connected.set()
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        raise SystemExit(f"could not connect to {args.host}:{args.port}")
    return client


class Acks:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def on_publish(self, client, userdata, mid, reason_code=None, properties=None) -> None:
        with self.lock:
            self.count += 1


def publish(args) -> dict:
    """Every report event of the schedule at its time; waits for the broker's acknowledgements at the end."""
    acks = Acks()
    clients = [_connect(args, f"bench-publisher-{n}") for n in range(args.connections)]
    for client in clients:
        client.on_publish = acks.on_publish
    data = fleet.fleet_read(Path(args.fleet))
    versions = fleet.states_read(Path(args.states))
    states = [fleet.DeviceState(d, v, w) for d, (v, w) in zip(data.devices, versions, strict=True)]
    tails = [(fleet._inflate(a), fleet._inflate(b)) for a, b in data.tails]
    events = fleet.schedule_read(Path(args.schedule))
    wait = args.start - time.time()
    if wait > 0:
        time.sleep(wait)
    started = time.monotonic()
    sent = late = 0
    lateness_max = 0.0
    for event in events:
        state = states[event.device]
        state.on_event(event.kind)
        if event.kind not in fleet.REPORT_KINDS:
            continue
        delay = started + event.t_ms / 1000 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif -delay * 1000 > LATE_MS:
            late += 1
            lateness_max = max(lateness_max, -delay)
        _publish(clients[event.device % len(clients)], state, event.kind, tails)
        sent += 1
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 30
    while acks.count < sent and time.monotonic() < deadline:
        time.sleep(0.01)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    return {
        "sent": sent,
        "acked": acks.count,
        "late": late,
        "max_late_s": lateness_max,
        "seconds": elapsed,
        "rate": sent / elapsed if elapsed else None,
    }


def _publish(client: mqtt.Client, state: fleet.DeviceState, kind: str, tails: list[tuple[bytes, bytes]]) -> None:
    topic = f"iot/device/{state.device.uuid}/state"
    payload = _payload(state, kind, tails)
    while client.publish(topic, payload, qos=1).rc == mqtt.MQTT_ERR_QUEUE_SIZE:
        time.sleep(0.0005)


def _payload(state: fleet.DeviceState, kind: str, tails: list[tuple[bytes, bytes]]) -> bytes:
    plain, metrics = tails[state.device.template]
    return fleet.body_text(
        uuid=state.device.uuid,
        version=state.version,
        kind=kind,
        generation=state.device.generation,
        config=fleet._inflate(state.device.configs[state.variant]),
        tails=(plain, metrics),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mqttload", description=__doc__.split("\n\n")[0])
    parser.add_argument("role", choices=["publish"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--username", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--inflight", type=int, default=100)
    parser.add_argument("--fleet")
    parser.add_argument("--states")
    parser.add_argument("--schedule")
    parser.add_argument("--start", type=float, default=0.0, help="time.time() of the schedule's zero")
    args = parser.parse_args(argv)
    result = publish(args)
    print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
