"""``manage.py seed_demo``: demo devices for the quick start, showing every sensor status (SPEC sections 6, 9).

Everything is written the way production writes it: staff changes through the services, agent polls through
``target_state_fetched`` and agent reports built in the wire format, parsed by the agent protocol parser and
applied by ``state_report_apply``, so the demo rows are exactly what a real fleet would show.
"""

import uuid as uuid_lib
from dataclasses import dataclass
from uuid import UUID

import orjson
from django.core.management.base import CommandError
from django.db import transaction
from django.utils import timezone

from devicelogs.parsing import log_body_parse
from devicelogs.services import device_logs_store
from devices.selectors import device_get, device_list
from devices.services import DeviceWithKey, device_create
from devices.target_config import config_sensors
from reconciliation.agent_protocol import json_parse, reports_parse
from reconciliation.selectors import drift_explain
from reconciliation.services.reports import ReportOutcome, state_report_apply, target_state_fetched
from reconciliation.services.sensors import sensor_create, sensor_delete, sensor_update
from sensors.selectors import sensor_list
from sensorsync_project.commands import OperatorCommand, user_or_none

MAX_DEVICES = 1000
MAX_SENSORS = 100

# (name, description, scenario) of the first devices; further ones are "demo-device-<n>", scenarios cycling.
DEMO_DEVICES = (
    ("press-line-1", "Stamping press line 1, hall A", "in_sync"),
    ("boiler-room", "Boiler house, building 2", "failed"),
    ("packaging-cell", "Packaging cell; agent installed, never connected", "pending"),
    ("cold-store", "Cold store 3; a sensor change is being rolled out", "reconciling"),
)
SCENARIOS = tuple(scenario for _, _, scenario in DEMO_DEVICES)
FAILING_SENSOR_ERROR = "connection refused"
UNREACHABLE_SENSOR_ERROR = "timeout after 3000 ms"

# Sensor templates; "{net}" is the device's subnet and "{device}" its name.
SENSOR_CATALOG = (
    {
        "name": "modbus-supply-temp",
        "protocol": "modbus",
        "pollInterval": 5000,
        "connection": {"host": "10.20.{net}.11", "port": 502, "unitId": 1, "timeoutMs": 1000},
        "dataPoints": [
            {"name": "supply_temperature", "address": 40001, "type": "float32", "unit": "C"},
            {"name": "return_temperature", "address": 40003, "type": "float32", "unit": "C"},
        ],
    },
    {
        "name": "can-drive-motor",
        "protocol": "can",
        "pollInterval": 1000,
        "connection": {"interface": "can0", "bitrate": 500000},
        "dataPoints": [
            {"name": "motor_speed", "canId": "0x0CF00400", "startBit": 24, "length": 16, "scale": 0.125, "unit": "rpm"},
            {
                "name": "motor_temperature",
                "canId": "0x18FEEE00",
                "startBit": 0,
                "length": 8,
                "offset": -40,
                "unit": "C",
            },
        ],
    },
    {
        "name": "opcua-line-plc",
        "protocol": "opcua",
        "pollInterval": 2000,
        "connection": {
            "endpoint": "opc.tcp://10.20.{net}.30:4840",
            "securityPolicy": "Basic256Sha256",
            "securityMode": "SignAndEncrypt",
        },
        "dataPoints": [
            {"name": "line_speed", "nodeId": "ns=2;s=Line.Speed", "type": "double", "unit": "m/min"},
            {"name": "good_parts", "nodeId": "ns=2;s=Line.Counter.Good", "type": "uint32"},
        ],
    },
    {
        "name": "mqtt-environment",
        "protocol": "mqtt",
        "pollInterval": 10000,
        "connection": {"broker": "mqtt://10.20.{net}.40:1883", "topic": "site/{device}/environment", "qos": 1},
        "dataPoints": [
            {"name": "humidity", "jsonPath": "$.humidity", "unit": "%"},
            {"name": "ambient_temperature", "jsonPath": "$.temperature", "unit": "C"},
        ],
    },
    {
        "name": "modbus-power-meter",
        "protocol": "modbus",
        "pollInterval": 15000,
        "connection": {"host": "10.20.{net}.12", "port": 502, "unitId": 3},
        "dataPoints": [
            {"name": "active_power", "address": 30053, "type": "float32", "unit": "kW"},
            {"name": "energy_total", "address": 30343, "type": "float32", "unit": "kWh"},
        ],
    },
    {
        "name": "can-hydraulics",
        "protocol": "can",
        "pollInterval": 500,
        "connection": {"interface": "can1", "bitrate": 250000},
        "dataPoints": [{"name": "oil_pressure", "canId": "0x18FEEF00", "startBit": 24, "length": 8, "unit": "bar"}],
    },
    {
        "name": "opcua-oven",
        "protocol": "opcua",
        "pollInterval": 5000,
        "connection": {"endpoint": "opc.tcp://10.20.{net}.31:4840", "securityPolicy": "None"},
        "dataPoints": [{"name": "zone1_temperature", "nodeId": "ns=3;i=1001", "type": "float", "unit": "C"}],
    },
    {
        "name": "mqtt-door-contact",
        "protocol": "mqtt",
        "pollInterval": 1000,
        "connection": {"broker": "mqtt://10.20.{net}.40:1883", "topic": "site/{device}/door", "qos": 0},
        "dataPoints": [{"name": "door_open", "jsonPath": "$.open", "type": "bool"}],
    },
)


def _filled(value, **names):
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {key: _filled(item, **names) for key, item in value.items()}
    if isinstance(value, list):
        return [_filled(item, **names) for item in value]
    return value


def sensor_payloads(*, index: int, device_name: str, count: int) -> list[dict]:
    """``count`` sensors for the ``index``-th demo device: a different mix of protocols on each device."""
    payloads = []
    for number in range(count):
        template = SENSOR_CATALOG[(index + number) % len(SENSOR_CATALOG)]
        payload = _filled(template, net=10 + index % 200, device=device_name)
        lap = number // len(SENSOR_CATALOG)
        if lap:
            payload["name"] = f"{payload['name']}-{lap + 1}"
        payloads.append(payload)
    return payloads


@dataclass
class _DemoAgent:
    """The on-device agent's two calls, minus HTTP: poll the target state, report what runs."""

    device_uuid: UUID
    index: int
    seq: int = 0

    def poll(self) -> None:
        target_state_fetched(device=device_get(uuid=self.device_uuid))

    def report(self, *, running: list[str], offline: dict[str, str] | None = None) -> None:
        """Report running the named sensors of the target exactly as desired, at the target version, as the
        2025-11-22 agent does: its own row shape, its adapters' health, its metrics. ``offline``: sensors whose
        adapter cannot reach the device, with its error (they may be running, or not)."""
        device = device_get(uuid=self.device_uuid)
        target = device.target_state
        offline = offline or {}
        now = timezone.now().isoformat()

        def health(sensor: dict) -> dict:
            error = offline.get(sensor["name"])
            return {
                "protocol": sensor["protocol"],
                "status": "offline" if error else "online",
                "connected": not error,
                "lastPoll": now,
                "lastSeen": None if error else now,
                "errorCount": 3 if error else 0,
                "lastError": error,
                "communicationQuality": "offline" if error else "good",
            }

        def reported(sensor: dict) -> dict:
            return {
                "id": str(uuid_lib.uuid5(uuid_lib.NAMESPACE_URL, sensor["name"])),  # the agent's own row id
                "name": sensor["name"],
                "protocol": sensor["protocol"],
                "connectionString": orjson.dumps(sensor["connection"]).decode(),
                "pollInterval": sensor["pollInterval"],
                "enabled": int(sensor["enabled"]),
                "metadata": sensor["metadata"],
            }

        sensors = config_sensors(target.config)
        body = {
            str(self.device_uuid): {
                "apps": target.apps,
                "is_online": True,
                "version": target.version,
                "config": {"sensors": [reported(s) for s in sensors if s["name"] in running]},
                "endpoints_health": {
                    s["name"]: health(s) for s in sensors if s["name"] in running or s["name"] in offline
                },
                "os_version": "Ubuntu 22.04.4 LTS",
                "agent_version": "1.0.84",
                "local_ip": f"10.20.{10 + self.index % 200}.10",
                "uptime": 86_400.5 + 3_600 * self.index,
                "cpu_usage": 20 + self.index,
                "memory_usage": 1_800,
                "memory_total": 3_906,
                "storage_usage": 9_400,
                "storage_total": 29_600,
                "temperature": 48.5,
                "top_processes": [{"pid": 812, "name": "agent", "cpu": 3.1, "mem": 1.2}],
                "network_interfaces": [
                    {
                        "name": "eth0",
                        "ip4": f"10.20.{10 + self.index % 200}.10",
                        "mac": "02:42:ac:11:00:02",
                        "type": "wired",
                        "default": True,
                        "virtual": False,
                        "operstate": "up",
                    }
                ],
            }
        }
        # Through the bytes and the parser the agent endpoint uses, so the demo cannot store what an agent could not.
        report = reports_parse(json_parse(orjson.dumps(body)), device_uuid=device.uuid)
        verdict = state_report_apply(device=device, report=report)
        if verdict.outcome != ReportOutcome.APPLIED or verdict.reconciliation_failed:
            raise CommandError(f"The demo report for {device.name} was not applied ({verdict.outcome}).")
        self._log(device, running=running, offline=offline)

    def _log(self, device, *, running: list[str], offline: dict[str, str]) -> None:
        """What the agent's log upload would have brought: its start, each sensor registered, each adapter's
        error; through the upload's own parser."""
        moment = int(timezone.now().timestamp() * 1000)

        def line(message: str, level: str, component: str) -> bytes:
            source = {"type": "system", "name": component}
            return orjson.dumps({"message": message, "timestamp": moment, "level": level, "source": source})

        lines = [line("Device Agent initialized successfully", "info", "Agent")]
        lines += [line(f"Device saved to sensors table: {name}", "info", "ConfigManager") for name in running]
        lines += [line(f"{name}: {error}", "error", "Sensor") for name, error in offline.items()]
        parsed = log_body_parse(b"\n".join(lines), received_at=timezone.now(), message_max=8000)
        device_logs_store(device_id=device.pk, lines=parsed.lines, received_at=timezone.now())


class Command(OperatorCommand):
    help = "Create demo devices whose sensors show every deployment status, for the quick start."
    epilog = f"""\
Creates up to four named devices (then demo-device-5, ...), each with a mix of modbus, can, opcua and mqtt
sensors, and plays the agent's side so that the sensor table shows every status:

  press-line-1    the agent applied the target: every sensor deployed, in sync; one cannot reach its device
                  ("{UNREACHABLE_SENSOR_ERROR}"): deployed but offline
  boiler-room     the agent applied the target, but one sensor reports "{FAILING_SENSOR_ERROR}": failed
  packaging-cell  the agent never connected: every sensor pending
  cold-store      a sensor was changed and another removed; the agent fetched but has not applied: reconciling

Devices that already exist (by name) are skipped. The API key of each new device is printed so a simulated
agent can be pointed at it; it is demo data, not a secret worth keeping.

examples:
  manage.py seed_demo
  manage.py seed_demo --devices 20 --sensors 6

exit status: 0 seeded (or everything already there); 1 bad option or a write that failed; 2 usage error"""

    def add_arguments(self, parser):
        parser.add_argument(
            "--devices", type=int, default=len(DEMO_DEVICES), metavar="N", help="how many devices (default: 4)"
        )
        parser.add_argument("--sensors", type=int, default=3, metavar="M", help="sensors per device (default: 3)")
        parser.add_argument(
            "--user", metavar="USERNAME", help="record this existing user as the author of the staff changes"
        )

    def handle(self, *args, **options):
        devices, sensors = options["devices"], options["sensors"]
        if not (isinstance(devices, int) and 1 <= devices <= MAX_DEVICES):
            raise CommandError(f"--devices must be a whole number from 1 to {MAX_DEVICES}.")
        if not (isinstance(sensors, int) and 1 <= sensors <= MAX_SENSORS):
            raise CommandError(f"--sensors must be a whole number from 1 to {MAX_SENSORS}.")
        user = user_or_none(options["user"])

        created = skipped = 0
        with self.audit_context():
            for index in range(devices):
                name, description, scenario = self._plan(index)
                existing = device_list().filter(name=name).first()
                if existing is not None:
                    skipped += 1
                    self.stdout.write(
                        f"{name}: already exists ({existing.uuid}), skipped. Its API key cannot be shown again; "
                        "rotate it (POST /api/v1/devices/<uuid>/rotate-key) for a new one."
                    )
                    continue
                with transaction.atomic():  # a device is seeded whole or not at all, so a re-run can finish it
                    device_with_key = self._seed(
                        index=index, name=name, description=description, scenario=scenario, sensors=sensors, user=user
                    )
                created += 1
                self._write_device(device_with_key)

        self.stdout.write("")
        self.stdout.write(
            self.style.SUCCESS(f"Demo data: {created} device{'' if created == 1 else 's'} created, {skipped} skipped.")
        )
        if created:
            self.stdout.write(
                "The API keys above are for this demo only. Poll as a device would:\n"
                '  curl -H "X-Device-API-Key: <key>" http://127.0.0.1:8000/api/v1/device/<uuid>/state'
            )

    @staticmethod
    def _plan(index: int) -> tuple[str, str, str]:
        if index < len(DEMO_DEVICES):
            return DEMO_DEVICES[index]
        scenario = SCENARIOS[index % len(SCENARIOS)]
        return f"demo-device-{index + 1}", f"Demo device {index + 1} ({scenario.replace('_', ' ')})", scenario

    def _seed(self, *, index: int, name: str, description: str, scenario: str, sensors: int, user) -> DeviceWithKey:
        device_with_key = device_create(name=name, description=description, user=user)
        uuid = device_with_key.device.uuid
        payloads = sensor_payloads(index=index, device_name=name, count=sensors)
        for payload in payloads:
            sensor_create(device_uuid=uuid, data=payload, user=user)
        names = [payload["name"] for payload in payloads]
        agent = _DemoAgent(device_uuid=uuid, index=index)

        if scenario == "in_sync":
            agent.poll()
            # Every sensor deployed and running; the last one's adapter cannot reach its device: deployed, offline.
            agent.report(running=names, offline={names[-1]: UNREACHABLE_SENSOR_ERROR} if len(names) > 1 else None)
        elif scenario == "failed":
            agent.poll()
            *healthy, failing = names
            agent.report(running=healthy, offline={failing: FAILING_SENSOR_ERROR})
        elif scenario == "reconciling":
            agent.poll()
            agent.report(running=names)
            # Staff change one sensor and remove another; the agent has fetched that version but not applied it.
            first = payloads[0]
            sensor_update(
                device_uuid=uuid,
                name=first["name"],
                data={"pollInterval": first["pollInterval"] * 2},
                partial=True,
                user=user,
            )
            if len(names) > 1:
                sensor_delete(device_uuid=uuid, name=names[-1], user=user)
            agent.poll()
        # "pending": the agent never connected, so nothing more happens.
        return device_with_key

    def _write_device(self, device_with_key: DeviceWithKey) -> None:
        device = device_get(uuid=device_with_key.device.uuid)
        explained = drift_explain(device=device)
        rows = (
            sensor_list(device_uuid=device.uuid)
            .order_by("name")
            .values_list("name", "deployment_status", "deployment_error")
        )
        state = "in sync" if explained["inSync"] else "not in sync"
        self.stdout.write("")
        self.stdout.write(self.style.MIGRATE_HEADING(f"{device.name}: created ({state})"))
        self.stdout.write(f"  uuid:     {device.uuid}")
        self.stdout.write(f"  API key:  {device_with_key.api_key}")
        self.stdout.write(f"  state:    {explained['reason']}")
        self.stdout.write("  sensors:" if rows else "  sensors:  -")
        for name, status, error in rows:
            self.stdout.write(f"    {name:<24} {status:<12} {error}".rstrip())
