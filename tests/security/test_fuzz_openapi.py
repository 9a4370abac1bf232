"""Property-based fuzzing of every operation in the project's own OpenAPI schema (``/api/schema/``), in process
through the Django WSGI application, as staff (a superuser's DRF token) and as a device (its agent key).

Per operation, schemathesis generates schema-valid (positive) and schema-violating (negative) requests; path
parameters are mostly real (existing device uuids, existing sensor names, the current target ETag) so that the
fuzzer gets past the 404s and 412s into the write paths. Every response must:

- not be a server error (no 5xx);
- conform to the schema: a documented status code, the documented content type and headers, a body that
  validates against the documented schema;
- when refusing (4xx), be the JSON error shape ``{"error", "message"}`` (SPEC section 7);
- never contain a device key that existed before the request;
- and, for the wrong kind of credentials (a device key on the management API, staff auth on the agent API),
  be a 401.

Failures are collected per operation (no shrinking, so the run stays bounded and every distinct problem is
listed, not only the first), and the read model and event log are checked afterwards with
``rebuild_read_model --check`` and ``replay_events --check``. Generation is derandomized (deterministic in CI).
"""

import json
import logging
import os

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.result import Ok
from schemathesis.specs.openapi import checks as openapi_checks

from devices.models import Device, DeviceTargetState
from reconciliation.agent_protocol import report_parse
from reconciliation.services.reports import state_report_apply
from tests.factories import UserFactory
from tests.helpers import device_with, read_model_and_log_consistent, target_sensors, token_for

APP = get_wsgi_application()
# A refusal is any 4xx but a redirect or success; 412 included: an If-Match is checked before the body (RFC 9110).
REJECTIONS = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "415", "422", "428", "429", "5xx"]
CONFIG = schemathesis.Config.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}})
SCHEMA = schemathesis.openapi.from_wsgi("/api/schema/", APP, config=CONFIG)
RESULTS = list(SCHEMA.get_all_operations())
OPERATIONS = {result.ok().label: result.ok() for result in RESULTS if isinstance(result, Ok)}
SCHEMA_ERRORS = [str(result.err()) for result in RESULTS if not isinstance(result, Ok)]
AGENT_OPERATIONS = {
    "GET /api/v1/device/{uuid}/state",
    "PATCH /api/v1/device/state",
    "POST /api/v1/device/register",  # a provisioning key: neither a device's key nor staff auth gets in
    "POST /api/v1/device/{uuid}/key-exchange",
}

# Examples per operation and generation mode. FUZZ_SCALE multiplies them for a deeper local run.
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))
EXAMPLES = {
    ("staff", "management"): {GenerationMode.POSITIVE: 12, GenerationMode.NEGATIVE: 8},
    ("staff", "agent"): {GenerationMode.POSITIVE: 3, GenerationMode.NEGATIVE: 3},
    ("device", "agent"): {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 20},
    ("device", "management"): {GenerationMode.POSITIVE: 2, GenerationMode.NEGATIVE: 2},
}

CHECKS = [
    not_a_server_error,
    openapi_checks.status_code_conformance,
    openapi_checks.content_type_conformance,
    openapi_checks.response_headers_conformance,
    openapi_checks.response_schema_conformance,
    openapi_checks.negative_data_rejection,
]
AUTH_HEADERS = ("authorization", "x-device-api-key", "cookie")


def test_the_schema_loads_and_describes_every_endpoint_family():
    assert not SCHEMA_ERRORS, SCHEMA_ERRORS
    paths = {label.split(" ", 1)[1] for label in OPERATIONS}
    assert set(OPERATIONS) >= AGENT_OPERATIONS, sorted(OPERATIONS)
    for family in ("/devices/", "/sensors/", "/target-state/", "/events/", "/drift/", "/reconcile/"):
        assert any(family in path for path in paths), (family, sorted(paths))


class World:
    """The data the fuzzer's path parameters point at: three devices with sensors, one of them reported."""

    def __init__(self):
        self.admin = UserFactory(username="fuzz-admin", is_superuser=True)
        self.token = token_for(self.admin)
        self.devices = [device_with(f"{p}-1", f"{p}-2", name=f"fuzz-{p}") for p in ("a", "b", "c")]
        self.own = self.devices[0]
        for device in self.devices[:2]:  # reported, so current-state, drift episodes and verdicts have data
            fresh = Device.objects.select_related("target_state").get(pk=device.pk)
            running = target_sensors(device)[:1]
            state_report_apply(
                device=fresh,
                report=report_parse({"version": 1, "config": {"sensors": running}, "seq": 1}),
            )
        self.keys = [d.api_key for d in self.devices]
        self.uuids = [str(d.uuid) for d in self.devices]

    def sensor_names(self, device_uuid) -> list[str]:
        if device_uuid not in self.uuids:
            return []
        target = DeviceTargetState.objects.filter(device__uuid=device_uuid).values_list("config", flat=True).first()
        return [s["name"] for s in (target or {}).get("sensors", [])]

    def etag(self, device_uuid) -> str | None:
        if device_uuid not in self.uuids:
            return None
        version = DeviceTargetState.objects.filter(device__uuid=device_uuid).values_list("version", flat=True).first()
        return None if version is None else f'"{version}"'


def _set_header(case, name: str, value: str | None) -> None:
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != name.lower()}
    if value is not None:
        headers[name] = value
    case.headers = headers


def _is_negative(case, location) -> bool:
    component = case.meta.components.get(location) if case.meta is not None else None
    return component is not None and component.mode is GenerationMode.NEGATIVE


def _aim(case, data, world: World, identity: str, mode: GenerationMode) -> bool:
    """Point the generated case at real data most of the time, and give it the identity's credentials.

    Returns whether every path parameter names something real (else a 404 from the URL router is expected)."""
    # Containers are replaced, never edited in place: assignment is how schemathesis learns that a generated
    # (possibly schema-violating) value was changed, and revalidates the case before judging the answer.
    real, device_uuid = _aim_path(case, data, world, identity)
    if any(p.name == "If-Match" for p in case.operation.headers) and device_uuid:
        choice = data.draw(st.sampled_from(["current", "absent", "generated"]), label="If-Match")
        if choice == "current":
            _set_header(case, "If-Match", world.etag(device_uuid))
        elif choice == "absent":
            _set_header(case, "If-Match", None)
    is_report = case.operation.label == "PATCH /api/v1/device/state" and isinstance(case.body, dict) and case.body
    # The body is keyed by device uuid; re-key it under a real uuid so the report itself is exercised.
    if is_report and (mode is GenerationMode.POSITIVE or data.draw(st.booleans(), label="re-key")):
        # Re-keying keeps the report entry as generated (valid or not); only the key becomes a real uuid.
        case.body = {str(world.own.uuid): next(iter(case.body.values()))}
    _credentials_set(case, world, identity)
    return real


def _aim_path(case, data, world: World, identity: str) -> tuple[bool, str | None]:
    """Most of the time, a real device (the identity's own, for a device) and a real sensor of it in the path.
    Whether every path parameter is real, and the device uuid put there."""
    params = dict(case.path_parameters or {})
    real = True
    device_uuid = None
    # A deliberately invalid path stays as generated: replacing it would leave the case's other negative parts
    # judged against a description that no longer holds.
    aim = not _is_negative(case, ParameterLocation.PATH)
    for name in ("uuid", "device_uuid"):
        if name not in params:
            continue
        if aim and data.draw(st.integers(0, 9), label=f"real {name}") < 8:
            choices = [str(world.own.uuid)] if identity == "device" else world.uuids
            params[name] = device_uuid = data.draw(st.sampled_from(choices), label=name)
        else:
            real = False
    if "name" in params:
        names = world.sensor_names(device_uuid) if device_uuid else []
        if aim and names and data.draw(st.integers(0, 9), label="real name") < 8:
            params["name"] = data.draw(st.sampled_from(names), label="name")
        else:
            real = False
    if params:
        case.path_parameters = params
    return real, device_uuid


def _credentials_set(case, world: World, identity: str) -> None:
    """The identity's credentials, and no others (generated auth headers and cookies are dropped)."""
    for name in list(case.headers or {}):
        if name.lower() in AUTH_HEADERS:
            _set_header(case, name, None)
    case.cookies = {}
    if identity == "staff":
        _set_header(case, "Authorization", f"Token {world.token}")
    else:
        _set_header(case, "X-Device-API-Key", world.own.api_key)


def _describe(case) -> str:
    body = case.body if not isinstance(case.body, bytes) else case.body[:200]
    if type(body).__name__ == "NotSet":
        body = None
    try:
        body_text = json.dumps(body, default=repr)[:400]
    except (TypeError, ValueError):
        body_text = repr(body)[:400]
    headers = {k: v for k, v in (case.headers or {}).items() if k.lower() not in AUTH_HEADERS}
    return (
        f"{case.method} {case.formatted_path} query={case.query} headers={headers} "
        f"media_type={case.media_type} body={body_text}"
    )


def _own_checks(response, world: World, identity: str, family: str, real_path: bool) -> list[tuple[str, str]]:
    problems = []
    status = response.status_code
    text = response.text if hasattr(response, "text") else response.content.decode("utf-8", "replace")
    if status >= 400:
        try:
            body = json.loads(text)
            shaped = (
                isinstance(body, dict) and isinstance(body.get("error"), str) and isinstance(body.get("message"), str)
            )
        except ValueError:
            shaped = False
        if not shaped:
            problems.append(("error shape", f"{status} is not the {{error, message}} JSON shape: {text[:200]}"))
    expected = {401} if real_path else {401, 404}  # an unroutable path is a 404 whoever asks
    if identity == "device" and family == "management" and status not in expected:
        problems.append(("device key on management API", f"answered {status}, expected 401"))
    if identity == "staff" and family == "agent" and status not in expected:
        problems.append(("staff auth on agent API", f"answered {status}, expected 401"))
    headers_text = json.dumps({k: v for k, v in response.headers.items()})
    for key in world.keys:
        if key in text or key in headers_text:
            problems.append(("key leak", f"a device key appears in a {status} response"))
    return problems


class ServerErrors(logging.Handler):
    """The exceptions behind 5xx answers (what the server logged), so a report names the cause."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            self.last = f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:200]}"

    def take(self) -> str | None:
        last, self.last = self.last, None
        return last


class Findings:
    """Distinct problems (by mode, check, status and message), each with a count and a first example."""

    def __init__(self):
        self.failures: dict[tuple, dict] = {}
        self.sent = 0

    def record(self, signature: tuple, detail: str, case) -> None:
        entry = self.failures.setdefault(signature, {"count": 0, "detail": detail, "example": _describe(case)})
        entry["count"] += 1


def _fuzz_mode(operation, world: World, identity: str, mode: GenerationMode, findings: Findings) -> None:
    family = "agent" if operation.label in AGENT_OPERATIONS else "management"
    examples = max(1, int(EXAMPLES[(identity, family)][mode] * SCALE))
    errors = ServerErrors()

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case, data):
        real_path = _aim(case, data, world, identity, mode)
        errors.take()
        response = case.call()
        findings.sent += 1
        cause = errors.take() if response.status_code >= 500 else None
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                message = " | ".join(line for line in str(failure.message).splitlines() if line.strip())
                if cause:
                    message = f"server raised {cause} | {message}"
                findings.record((mode.value, failure.title, response.status_code, message[:160]), message[:600], case)
        for title, detail in _own_checks(response, world, identity, family, real_path):
            findings.record((mode.value, title, response.status_code, detail[:160]), detail, case)

    logging.getLogger().addHandler(errors)
    try:
        run()
    except Unsatisfiable:
        pass  # nothing schema-violating can be generated for this operation (no inputs to negate)
    finally:
        logging.getLogger().removeHandler(errors)


def _report(label: str, identity: str, sent: int, failures: dict, consistency: list[str]) -> str:
    lines = [f"{label} as {identity}: {sent} requests, {len(failures)} distinct problems"]
    for (mode, title, status, _), entry in sorted(failures.items(), key=lambda item: str(item[0])):
        lines.append(f"- [{mode}] {title} (HTTP {status}, x{entry['count']}): {entry['detail']}")
        lines.append(f"    e.g. {entry['example']}")
    lines.extend(f"- {problem}" for problem in consistency)
    return "\n".join(lines)


def _run(label: str, identity: str) -> None:
    world = World()
    findings = Findings()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        _fuzz_mode(OPERATIONS[label], world, identity, mode, findings)
    consistency = read_model_and_log_consistent()
    assert findings.sent > 0
    assert not findings.failures and not consistency, _report(
        label, identity, findings.sent, findings.failures, consistency
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_as_staff(label):
    _run(label, "staff")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_fuzz_as_device(label):
    _run(label, "device")
