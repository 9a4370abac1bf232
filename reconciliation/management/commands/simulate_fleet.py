"""``manage.py simulate_fleet``: N simulated agents against a running server, with failure injection (SPEC 8).

The fleet is created (or reused) in this command's database through the services; the agents then speak the real
wire protocol over HTTP to ``--url`` only, and the final picture is read back from the database. The server must
therefore use the same database as this command.
"""

import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace

from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Count

from devices.labels import labels_validate
from devices.models import Device
from devices.services import device_create, device_key_rotate, device_labels_update
from ingest.dynsec import BrokerAddress
from ingest.services import device_mqtt_credentials_issue, mqtt_enabled
from reconciliation.services.targets import target_state_update
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from sensors.validation import NAME_RE
from sensorsync_project.commands import OperatorCommand, command_audit_context
from simulator.agent import (
    AGENTS,
    DEFAULT_AGENT,
    NOT_RUN,
    Agent,
    AgentSettings,
    Request,
    device_names,
    sensor_specs,
)
from simulator.fleet import (
    FleetStats,
    HttpTransport,
    ServerAddress,
    TransportError,
    run_fleet,
    server_address_parse,
    traffic_summary,
)
from simulator.mqtt import Broker, MqttCredentials, MqttFallbackTransport, MqttStats, mqtt_summary

MAX_DEVICES = 10_000
MAX_SENSORS = 500  # a report of 500 sensors stays well under the server's 1 MiB cap
MAX_CONCURRENCY = 256
MIN_INTERVAL = 0.05
MAX_DURATION = 7 * 86400
CHUNK = 500  # ids per IN (...) clause: far below SQLite's variable limit
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class SimulatedDevice:
    pk: int
    uuid: str
    name: str
    api_key: str
    is_active: bool


@dataclass
class FleetSetup:
    devices: list[SimulatedDevice]
    created: int = 0
    reused: int = 0
    retargeted: int = 0  # reused devices whose target had to change to the simulated sensors
    duplicates: int = 0  # names held by more than one device (the oldest is used)


# One label, as the selectors write it (devices.labels validates labels themselves; a label that no device
# carries fails no agent).
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*=[A-Za-z0-9._-]*")
# ``--label plant=a,b,c``: the devices labelled in turn, the first plant=a, the second plant=b, ...
LABEL_CYCLE_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._/-]*)=([A-Za-z0-9._-]+(?:,[A-Za-z0-9._-]+)*)")


def label_cycles(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``["plant=a,b"]`` as ``[("plant", ["a", "b"])]``; ValueError naming the first that is not KEY=V1[,V2...]."""
    cycles = []
    for spec in specs:
        match = LABEL_CYCLE_RE.fullmatch(spec)
        if match is None:
            raise ValueError(f"--label must be KEY=VALUE or KEY=V1,V2,... (got {spec!r}).")
        cycles.append((match[1], match[2].split(",")))
    return cycles


def labels_for(index: int, cycles: list[tuple[str, list[str]]]) -> dict[str, str]:
    return {key: values[index % len(values)] for key, values in cycles}


def _chunks(values: list, size: int = CHUNK):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _validate(options: dict) -> ServerAddress:
    problems = [*_fleet_problems(options), *_client_problems(options)]
    try:
        address = server_address_parse(options["url"])
    except ValueError as exc:
        problems.append(f"--url: {exc}")
        address = None
    if problems or address is None:
        raise CommandError(" ".join(problems))
    return address


def _fleet_problems(options: dict) -> list[str]:
    """What is wrong with the fleet asked for: its size, failure rate, duration and intervals."""
    problems = []
    if not 1 <= options["devices"] <= MAX_DEVICES:
        problems.append(f"--devices must be from 1 to {MAX_DEVICES} (got {options['devices']}).")
    if not 0 <= options["sensors"] <= MAX_SENSORS:
        problems.append(f"--sensors must be from 0 to {MAX_SENSORS} (got {options['sensors']}).")
    if not 0.0 <= options["failure_rate"] <= 1.0:
        problems.append(f"--failure-rate is a probability from 0 to 1 (got {options['failure_rate']}).")
    if not 0 < options["duration"] <= MAX_DURATION:
        problems.append(f"--duration must be more than 0 and at most {MAX_DURATION} seconds.")
    for option in ("poll_interval", "report_interval", "metrics_interval"):
        if not options[option] >= MIN_INTERVAL:
            problems.append(f"--{option.replace('_', '-')} must be at least {MIN_INTERVAL} seconds.")
    return problems


def _client_problems(options: dict) -> list[str]:
    """What is wrong with how its agents run: their generation, concurrency, timeout and names."""
    problems = []
    if options["agent"] not in AGENTS:
        problems.append(f"--agent must be one of {', '.join(AGENTS)} (got {options['agent']}).")
    if options["concurrency"] is not None and not 1 <= options["concurrency"] <= MAX_CONCURRENCY:
        problems.append(f"--concurrency must be from 1 to {MAX_CONCURRENCY} (got {options['concurrency']}).")
    if not 0 < options["timeout"] <= 300:
        problems.append("--timeout must be more than 0 and at most 300 seconds.")
    try:
        cycles = label_cycles(options.get("label") or [])
        for index in range(max((len(values) for _, values in cycles), default=0)):
            labels_validate(labels_for(index, cycles))
    except ValueError as exc:
        problems.append(str(exc))
    except ValidationError as exc:
        problems.append(
            f"--label: {' '.join(message for messages in exc.message_dict.values() for message in messages)}"
        )
    label = options.get("fail_label")
    if label is not None and not LABEL_RE.fullmatch(label):
        problems.append(f"--fail-label must be one label as key=value (got {label!r}).")
    prefix = options["prefix"]
    if not NAME_RE.fullmatch(prefix) or len(prefix) > 200:
        problems.append("--prefix must be 1 to 200 characters of letters, digits, '.', '_' or '-'.")
    return problems


def _probe(address: ServerAddress) -> None:
    """Before anything is written: is a SensorSync server listening at the address?

    An unauthenticated poll for a made-up device must answer 401 (nothing is written for it).
    """
    path = f"{address.base_path}/api/v1/device/{uuid.uuid4()}/state"
    transport = HttpTransport(address, timeout=PROBE_TIMEOUT)
    try:
        response = transport.send(Request("poll", "GET", path, {"Accept": "application/json"}))
    except TransportError as exc:
        raise CommandError(
            f"Cannot reach the server at {address}: {exc.reason}. Start it first (for example "
            f"'manage.py runserver {address.host}:{address.port}' against the same database) or fix --url."
        ) from None
    finally:
        transport.close()
    if response.status != 401:
        raise CommandError(
            f"{address} does not answer like SensorSync: GET {path} without a key answered {response.status} "
            "(expected 401). Is --url the server's base URL?"
        )


def _key_check(address: ServerAddress, device: SimulatedDevice) -> None:
    """Does the server know the keys just issued, i.e. does it use this command's database?

    An empty report body is refused with 400 after authentication succeeds, so nothing is written; 401 means
    the key is unknown to the server.
    """
    transport = HttpTransport(address, timeout=PROBE_TIMEOUT)
    headers = {"X-Device-API-Key": device.api_key, "Content-Type": "application/json"}
    try:
        response = transport.send(
            Request("report", "PATCH", f"{address.base_path}/api/v1/device/state", headers, b"{}")
        )
    except TransportError as exc:
        raise CommandError(f"The server at {address} stopped answering: {exc.reason}.") from None
    finally:
        transport.close()
    if response.status == 401:
        raise CommandError(
            f"The server at {address} does not know the API key just issued to '{device.name}': it does not use "
            "this command's database. Run both with the same settings (DATABASE_URL)."
        )


def _labelled(setup: FleetSetup, label: str | None) -> set[str]:
    """The uuids of the fleet's devices carrying ``label`` (``key=value``)."""
    if not label:
        return set()
    key, _, value = label.partition("=")
    pks = [device.pk for device in setup.devices]
    found: set[str] = set()
    for chunk in _chunks(pks):
        found |= {
            str(u)
            for u in Device.objects.filter(pk__in=chunk, labels__key=key, labels__value=value).values_list(
                "uuid", flat=True
            )
        }
    return found


def fleet_setup(
    *, prefix: str, devices: int, sensors: int, progress=None, labels: list[tuple[str, list[str]]] | None = None
) -> FleetSetup:
    """Create the named devices with their sensors, or reuse them (rotating their keys, the only way to get one)."""
    names = device_names(prefix, devices)
    existing: dict[str, tuple[int, uuid.UUID]] = {}
    duplicates = 0
    for chunk in _chunks(names):
        for pk, name, device_uuid in (
            Device.objects.filter(name__in=chunk).order_by("pk").values_list("pk", "name", "uuid")
        ):
            if name in existing:
                duplicates += 1
            else:
                existing[name] = (pk, device_uuid)

    setup = FleetSetup(devices=[], duplicates=duplicates)
    with command_audit_context("simulate_fleet"):
        for index, name in enumerate(names):
            if name in existing:
                issued = device_key_rotate(uuid=existing[name][1], user=None)
                setup.reused += 1
            else:
                issued = device_create(name=name, user=None)
                setup.created += 1
            device = issued.device
            if labels:
                device_labels_update(device_uuid=device.uuid, set=labels_for(index, labels), remove=[], user=None)
            before = device.target_state.version
            target = target_state_update(uuid=device.uuid, user=None, config={"sensors": sensor_specs(index, sensors)})
            if name in existing and target.version != before:
                setup.retargeted += 1
            setup.devices.append(
                SimulatedDevice(device.pk, str(device.uuid), device.name, issued.api_key, device.is_active)
            )
            if progress is not None:
                progress(index + 1, len(names))
    return setup


def fleet_picture(pks: list[int]) -> dict:
    """The simulated devices' final state, read from the database (a handful of queries per 500 devices)."""
    devices: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    running = 0
    for chunk in _chunks(pks):
        for needs_deployment, reported in Device.objects.filter(pk__in=chunk).values_list(
            "target_state__needs_deployment", "current_state__version"
        ):
            devices["in_sync" if not needs_deployment else "drifting"] += 1
            devices["never_reported"] += reported is None
        sensor_rows = DeviceSensor.objects.filter(device_id__in=chunk)
        for status, is_running, count in sensor_rows.values_list("deployment_status", "running").annotate(
            count=Count("id")
        ):
            statuses[status] += count
            running += count if is_running else 0
        for error, count in (
            sensor_rows.filter(deployment_status=Status.FAILED).values_list("deployment_error").annotate(n=Count("id"))
        ):
            errors[error] += count
    return {"devices": devices, "statuses": statuses, "running": running, "errors": errors}


def picture_summary(picture: dict) -> list[str]:
    devices, statuses = picture["devices"], picture["statuses"]
    lines = [
        "Fleet, from the database",
        f"  devices: {devices['in_sync']} in sync, {devices['drifting']} drifting"
        + (f" ({devices['never_reported']} never reported)" if devices["never_reported"] else ""),
        "  sensors: "
        + ", ".join(f"{status} {statuses[status]}" for status in Status.values)
        + f" ({picture['running']} running)",
    ]
    if picture["errors"]:
        lines.append("  failed sensors by error:")
        lines += [f"    {count:>6}  {error or '(no error)'}" for error, count in picture["errors"].most_common(8)]
    return lines


class Command(OperatorCommand):
    help = (
        "Simulate N device agents against a running SensorSync server: they poll their target state, deploy it "
        "(failing sensors at the given rate) and report what runs, speaking the real agent's HTTP protocol."
    )
    epilog = """\
The devices <prefix>-0001... are created in this command's database (or reused, with their API keys
rotated: the old keys stop working), each with M sensors of mixed protocols. The server at --url must use the
same database. Only --url is ever contacted.

The agents speak as the real on-device agent (Iotistica/iotistic, agent/) of --agent's date does: they read
their sensors from config.sensors, report them in that agent's shape (2025-11-22: enabled 0/1, connectionString,
no dataPoints, config left out when unchanged, endpoints_health; 2025-11-06: the sensors as served,
protocol_adapters_health), send metrics every --metrics-interval and some facts once per start, never send seq or
reported_at, back off 15 s x 2^(n-1) on errors (Retry-After ignored), and keep failed reports in an offline queue
without 'version', re-sent oldest first after the next successful report. A failed sensor is either not set up
(absent from the reported config) or set up but unable to reach its device (health offline).

examples:
  manage.py simulate_fleet --url http://127.0.0.1:8000 --devices 50 --sensors 8 --failure-rate 0.05 --duration 120
  manage.py simulate_fleet --url http://127.0.0.1:8000 --devices 1000 --sensors 4 --failure-rate 0 \\
      --duration 300 --concurrency 32 --seed 7
  manage.py simulate_fleet --url http://127.0.0.1:8000 --devices 20 --sensors 4 --failure-rate 0.1 \\
      --duration 600 --agent 2025-11-06 --poll-interval 10 --report-interval 10 --metrics-interval 30

exit status: 0 no connection errors and no 5xx answers; 1 some, or invalid options, or the server unreachable
or not sharing this database; 2 usage error (from the shell)"""

    def add_arguments(self, parser):
        parser.add_argument("--url", required=True, help="the server's base URL, e.g. http://127.0.0.1:8000")
        parser.add_argument("--devices", type=int, required=True, metavar="N", help=f"agents (1 to {MAX_DEVICES})")
        parser.add_argument(
            "--sensors", type=int, required=True, metavar="M", help=f"sensors per device (0 to {MAX_SENSORS})"
        )
        parser.add_argument(
            "--failure-rate",
            type=float,
            required=True,
            metavar="P",
            help="probability (0 to 1) that a sensor fails (not set up, or cannot reach its device), decided "
            "when the agent is first served it or served a changed definition",
        )
        parser.add_argument("--duration", type=float, required=True, metavar="S", help="seconds to run")
        parser.add_argument(
            "--agent",
            choices=AGENTS,
            default=DEFAULT_AGENT,
            help=f"which generation of the real agent to speak as (default {DEFAULT_AGENT})",
        )
        parser.add_argument("--poll-interval", type=float, default=60.0, help="seconds between polls (default 60)")
        parser.add_argument(
            "--report-interval", type=float, default=60.0, help="seconds between report cycles (default 60)"
        )
        parser.add_argument(
            "--metrics-interval",
            type=float,
            default=300.0,
            help="seconds between reports with metrics and health (default 300)",
        )
        parser.add_argument(
            "--concurrency", type=int, metavar="K", help="worker threads, each driving many agents (default min(N, 16))"
        )
        parser.add_argument("--prefix", default="sim", help="device name prefix (default 'sim')")
        parser.add_argument(
            "--label",
            action="append",
            metavar="KEY=V1,V2",
            help="label the devices in turn: plant=a,b gives the first plant=a, the second plant=b, and so on "
            "(repeatable; a label already on a device is replaced)",
        )
        parser.add_argument(
            "--fail-label",
            metavar="KEY=VALUE",
            help="the agents of the devices carrying this label fail every sensor they set up (left out of their "
            "report), whatever --failure-rate: a fault confined to one group of the fleet",
        )
        parser.add_argument("--seed", type=int, help="random seed: the same seed repeats jitter and failures")
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for one answer (default 10)")
        parser.add_argument("--quiet", action="store_true", help="no progress line on stderr")
        # MQTT ingestion (simulator/mqtt.py)
        parser.add_argument(
            "--transport",
            choices=("http", "mqtt"),
            default="http",
            help="how agents report: http (default), or mqtt as the 2025-11-22 agent does, falling back to HTTP",
        )
        parser.add_argument(
            "--mqtt-devices", type=int, metavar="N", help="with --transport mqtt: only the first N agents use MQTT"
        )

    def _mqtt_setup(self, active: list, address, options: dict):
        """``--transport mqtt``: (transport factory, stats, line) with credentials issued here; None over HTTP."""
        if options["transport"] != "mqtt":
            return None
        try:
            mqtt = _mqtt_transport_factory(
                active, address=address, timeout=options["timeout"], mqtt_devices=options["mqtt_devices"]
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(mqtt[2])
        return mqtt

    def _failing(self, setup: FleetSetup, settings: AgentSettings, label: str | None):
        """``--fail-label``: (the settings of the agents that fail every sensor, their devices' uuids)."""
        uuids = _labelled(setup, label)
        if label:
            self.stdout.write(f"  failures injected into the {len(uuids)} agents of devices labelled {label}")
        return replace(settings, failure_rate=1.0, failure_states=(NOT_RUN,)), uuids

    def handle(self, *args, **options):
        address = _validate(options)
        quiet = options["quiet"]
        count, per_device = options["devices"], options["sensors"]
        concurrency = min(options["concurrency"] or 16, count)
        seed = options["seed"] if options["seed"] is not None else random.SystemRandom().randrange(2**32)

        _probe(address)

        progress = None if quiet or count < 100 else self._setup_progress
        setup = fleet_setup(
            prefix=options["prefix"],
            devices=count,
            sensors=per_device,
            progress=progress,
            labels=label_cycles(options.get("label") or []),
        )
        self._setup_report(setup, options, seed)
        active = [device for device in setup.devices if device.is_active]
        if active:
            _key_check(address, active[0])

        settings = AgentSettings(
            failure_rate=options["failure_rate"],
            poll_interval=options["poll_interval"],
            report_interval=options["report_interval"],
            metrics_interval=options["metrics_interval"],
            agent=options["agent"],
            base_path=address.base_path,
        )
        failing, failing_uuids = self._failing(setup, settings, options["fail_label"])
        mqtt = self._mqtt_setup(active, address, options)
        if not connection.in_atomic_block:
            # Not held idle for the whole run (the server may need it); reopened for the final picture.
            connection.close()
        start, wall_start = time.monotonic(), time.time()
        agents = [
            Agent(
                index=index + 1,
                device_uuid=device.uuid,
                api_key=device.api_key,
                settings=failing if device.uuid in failing_uuids else settings,
                rng=random.Random(f"{seed}:{index}"),
                start=start,
                wall_start=wall_start,
            )
            for index, device in enumerate(setup.devices)
        ]
        self.stdout.write(
            f"Running {len(agents)} agents (the {options['agent']} agent) on {concurrency} threads against "
            f"{address} for {options['duration']:g} s (poll every {options['poll_interval']:g} s, report every "
            f"{options['report_interval']:g} s, metrics every {options['metrics_interval']:g} s)."
        )
        run = run_fleet(
            agents,
            address=address,
            concurrency=concurrency,
            duration=options["duration"],
            timeout=options["timeout"],
            on_tick=None if quiet else self._progress(options["duration"]),
            start=start,
            transport_factory=mqtt[0] if mqtt else None,
        )
        if not quiet and self.stderr.isatty():
            self.stderr.write("")

        stats = run.stats
        self.stdout.write("")
        for line in traffic_summary(stats):
            self.stdout.write(line)
        left = sum(len(agent.queue) for agent in agents)
        if left:
            self.stdout.write(f"  still in the agents' offline queues at the end: {left} reports")
        self.stdout.write(f"HTTP connections opened: {run.connections} ({run.threads} threads, keep-alive)")
        if mqtt:
            self.stdout.write(mqtt_summary(mqtt[1]))
        self.stdout.write("")
        for line in picture_summary(fleet_picture([device.pk for device in setup.devices])):
            self.stdout.write(line)

        if run.interrupted:
            raise CommandError(f"Interrupted after {run.elapsed:.1f} s; the summary covers the run so far.")
        if stats.errors:
            raise CommandError(
                f"{stats.errors} request(s) failed with a connection error or a 5xx answer; see the summary above.",
                returncode=1,
            )
        self.stdout.write(self.style.SUCCESS(f"Done in {run.elapsed:.1f} s: no connection errors, no 5xx answers."))

    def _setup_report(self, setup: FleetSetup, options: dict, seed: int) -> None:
        self.stdout.write(
            f"Fleet: {len(setup.devices)} devices x {options['sensors']} sensors, prefix '{options['prefix']}', "
            f"failure rate {options['failure_rate']:g}, seed {seed}"
        )
        if setup.created:
            self.stdout.write(f"  created {setup.created} devices")
        if setup.reused:
            self.stdout.write(
                self.style.WARNING(
                    f"  reused {setup.reused} existing devices and rotated their API keys (keys are stored only as "
                    "digests, so a rotation is the only way to get a usable one): their old keys no longer work"
                )
            )
        if setup.retargeted:
            self.stdout.write(
                f"  replaced the target state of {setup.retargeted} reused devices with the simulated sensors"
            )
        if setup.duplicates:
            self.stdout.write(
                self.style.WARNING(f"  {setup.duplicates} names are used by more than one device; the oldest is used")
            )
        inactive = [device.name for device in setup.devices if not device.is_active]
        if inactive:
            shown = ", ".join(inactive[:5]) + (" ..." if len(inactive) > 5 else "")
            self.stdout.write(
                self.style.WARNING(f"  {len(inactive)} devices are inactive and will be refused (403): {shown}")
            )

    def _setup_progress(self, done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            ending = "\n" if done == total or not self.stderr.isatty() else ""
            prefix = "\r" if self.stderr.isatty() else ""
            self.stderr.write(f"{prefix}Setting up devices: {done}/{total}", ending=ending)
            self.stderr.flush()

    def _progress(self, duration: float):
        tty = self.stderr.isatty()

        def show(elapsed: float, stats: FleetStats) -> None:
            line = (
                f"[{min(elapsed, duration):6.1f} s / {duration:g} s] requests {stats.total_requests}  "
                f"errors {stats.errors}  reports applied {stats.outcomes['applied']}  "
                f"queued {stats.outcomes['queued']}"
            )
            self.stderr.write(f"\r{line}" if tty else line, ending="" if tty else "\n")
            self.stderr.flush()

        return show


def _mqtt_transport_factory(devices, *, address, timeout: float, mqtt_devices: int | None):
    """(transport factory, stats, one line saying what it does) for ``--transport mqtt``: the first
    ``mqtt_devices`` of ``devices`` (all when None) get MQTT credentials, as registration issues them, and report
    over MQTT. ValueError when MQTT ingestion is not configured."""
    if not mqtt_enabled():
        raise ValueError(
            "--transport mqtt needs MQTT ingestion configured: SENSORSYNC_MQTT_BROKER_URL, "
            "SENSORSYNC_MQTT_ADMIN_USERNAME and SENSORSYNC_MQTT_ADMIN_PASSWORD (README, MQTT)."
        )
    if mqtt_devices is not None and mqtt_devices < 0:
        raise ValueError(f"--mqtt-devices must be 0 or more (got {mqtt_devices}).")
    chosen = list(devices)[: mqtt_devices if mqtt_devices is not None else None]
    credentials = {}
    for device in chosen:  # a device the broker could not take is left out: it reports over HTTP
        password = device_mqtt_credentials_issue(device=Device.objects.get(pk=device.pk))
        if password:
            credentials[device.api_key] = MqttCredentials(device.uuid, password)
    url = django_settings.SENSORSYNC_MQTT_BROKER_URL
    parsed = BrokerAddress.parse(url)
    broker = Broker(parsed.host, parsed.port, parsed.tls)
    stats = MqttStats()

    def factory():
        return MqttFallbackTransport(
            HttpTransport(address, timeout=timeout), broker=broker, credentials=credentials, stats=stats
        )

    line = (
        f"MQTT: {len(credentials)} of {len(devices)} agents publish their reports to {url} (QoS 1), falling back "
        "to HTTP when the broker does not take them"
    )
    if len(credentials) < len(chosen):
        line += f"; {len(chosen) - len(credentials)} got no MQTT credentials (broker unreachable) and use HTTP"
    return factory, stats, line
