"""Writes of the fleet configuration: templates (every change of their sensors a new version), assignments,
per-device overrides, and the re-rendering of devices they cause.

Re-rendering a device computes its desired sensors (``fleetconfig.rendering``) and, when they differ from its
desired configuration, writes them through the same write path as every staff edit
(``reconciliation.services.targets.target_state_update``: the device's lock, a new target version with its history
and events, the read model re-projected; or, for a device in draft mode, its draft). It runs in batches
(``render_job_run``), one transaction per device written and none over the fleet, and a device whose rendered
configuration did not change is not written at all.

A change of a template, an assignment or devices' labels makes a ``RenderJob`` over the devices it may reach. A job
of at most ``SENSORSYNC_RENDER_INLINE_MAX_DEVICES`` devices runs at once, after the change commits, in the same
request; a bigger one stays queued for ``manage.py render_fleet`` (a worker process, deployed beside the web
server), so no request re-renders a fleet. An override changes one device, re-rendered in the override's own
transaction.
"""

import contextlib
import contextvars
import logging
import uuid as uuid_lib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from devices.labels import Selector, SelectorError
from devices.locking import device_events, device_write
from devices.models import Device
from devices.services import UNSET
from devices.target_config import SENSORS_KEY, config_sensors, config_upcast
from events.choices import EventTypeChoices
from events.context import RequestUser, actor_label, audit_context, current_context, signed_in_user
from events.services import EventRecorder, event_recording
from reconciliation.services.targets import target_state_update
from sensors.validation import NAME_RE, sensor_validate, sensors_limit, sensors_limit_message
from sensorsync_project.exceptions import PreconditionFailed, if_match_check
from sensorsync_project.validation import has_control_characters, is_int

from .choices import RenderJobStatusChoices as JobStatus
from .choices import RenderProblemKindChoices
from .models import (
    Assignment,
    AssignmentHold,
    AssignmentHoldRelease,
    RenderJob,
    RenderProblem,
    SensorOverride,
    SensorTemplate,
    SensorTemplateVersion,
)
from .rendering import AssignmentInput, Problem, Rendering, diff_is_empty, override_value_validate, sensors_diff
from .selectors import (
    DesiredState,
    RenderInputs,
    device_id_batches,
    render_inputs,
    scope_devices,
)

logger = logging.getLogger("sensorsync.fleetconfig")

TEMPLATE_AGGREGATE = "sensor_template"
ASSIGNMENT_AGGREGATE = "assignment"
NAME_MAX = 100
NOTE_MAX = 255
PRIORITY_MIN, PRIORITY_MAX = -1_000_000, 1_000_000
WRITE_ATTEMPTS = 3  # a device written by someone else meanwhile (412) is read and rendered again, this many times
JOB_ERRORS_KEPT = 20
# A running job whose worker has not reported for this long is taken over by the next worker (it died).
JOB_STALE_AFTER = timedelta(minutes=5)


# --- validation ----------------------------------------------------------------------------------------------------


def _name_validate(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > NAME_MAX:
        raise ValidationError({"name": [f"Must be 1 to {NAME_MAX} characters of letters, digits, '.', '_' or '-'."]})
    return name


def _text_validate(value: Any, key: str, *, limit: int | None = None) -> str:
    if (
        not isinstance(value, str)
        or has_control_characters(value, allow="\n\r\t")
        or (limit is not None and len(value) > limit)
    ):
        within = f" of at most {limit} characters" if limit else ""
        raise ValidationError({key: [f"Must be a string{within} without control characters."]})
    return value


def template_sensors_validate(sensors: Any) -> list[dict]:
    """A template's sensors: a list of 1 to ``SENSORSYNC_MAX_SENSORS_PER_DEVICE`` complete sensor objects (SPEC
    section 3) with distinct names and no ids (a rendered sensor's id is the device's), normalized."""
    if not isinstance(sensors, list) or not sensors:
        raise ValidationError({"sensors": ["Must be a non-empty list of sensor objects."]})
    if len(sensors) > sensors_limit():
        raise ValidationError({"sensors": [sensors_limit_message()]})
    errors: dict[str, list[str]] = {}
    normalized: list[dict] = []
    for index, raw in enumerate(sensors):
        prefix = f"sensors[{index}]."
        try:
            sensor = sensor_validate(raw, prefix=prefix)
        except ValidationError as exc:
            errors.update(exc.message_dict)
            continue
        if any(s["name"] == sensor["name"] for s in normalized):
            errors[f"{prefix}name"] = [f"Duplicate sensor name '{sensor['name']}'."]
            continue
        normalized.append({key: value for key, value in sensor.items() if key != "id"})
    if errors:
        raise ValidationError(errors)
    return normalized


def selector_validate(text: Any) -> Selector:
    if not isinstance(text, str):
        raise ValidationError({"selector": ["Must be a label selector (a string; empty selects every device)."]})
    try:
        return Selector.parse(text)
    except SelectorError as exc:
        raise ValidationError({"selector": [str(exc)]}) from None


def _priority_validate(value: Any) -> int:
    if not is_int(value) or not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ValidationError({"priority": [f"Must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}."]})
    return value


def _pinned_version_validate(template: SensorTemplate, version: Any) -> int | None:
    if version is None:
        return None
    if not is_int(version) or not 1 <= version <= template.version:
        raise ValidationError(
            {"templateVersion": [f"Must be a version of '{template.name}' (1 to {template.version}), or null."]}
        )
    return version


def _etag(version: int) -> str:
    return f'"{version}"'


# --- the renderer's own writes ---------------------------------------------------------------------------------------

_rendering_device: contextvars.ContextVar[str | None] = contextvars.ContextVar("fleetconfig_rendering", default=None)


@contextlib.contextmanager
def rendering_write(device_uuid: str) -> Iterator[None]:
    """Marks the write inside as the renderer's own for this device: the check that keeps staff from changing
    rendered sensors (``fleetconfig.handlers``) lets it through."""
    token = _rendering_device.set(str(device_uuid))
    try:
        yield
    finally:
        _rendering_device.reset(token)


def rendering_in_progress(device_uuid: uuid_lib.UUID | str) -> bool:
    return _rendering_device.get() == str(device_uuid)


# --- rendering devices -----------------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    processed: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    with_problems: int = 0
    errors: list[str] = field(default_factory=list)


def _write(state: DesiredState, rendering: Rendering, user: RequestUser) -> None:
    config = {**config_upcast(state.config), SENSORS_KEY: rendering.sensors}
    with rendering_write(state.device_uuid):
        target_state_update(uuid=state.device_uuid, user=user, config=config, if_match=state.etag)


def _device_render_write(device_id: int, inputs: RenderInputs, user: RequestUser) -> tuple[bool, list[Problem]]:
    """Render one device and write it if it changed: (written, its problems). A write refused because the device
    changed since it was read (412) is read and rendered again, up to ``WRITE_ATTEMPTS`` times."""
    attempts = 0
    while True:
        state = inputs.states[device_id]
        rendering = inputs.render(device_id)
        if diff_is_empty(sensors_diff(config_sensors(state.config), rendering.sensors)):
            return False, rendering.problems
        try:
            _write(state, rendering, user)
        except PreconditionFailed:
            attempts += 1
            if attempts == WRITE_ATTEMPTS:
                raise
            inputs = render_inputs([device_id], assignments=inputs.assignments)
            if device_id not in inputs.states:
                raise Device.DoesNotExist from None
            continue
        return True, rendering.problems


def _problem_rows(device_id: int, problems: list[Problem], assignment_ids: dict[str, int]) -> list[RenderProblem]:
    rows = []
    for problem in problems:
        involved: list[int | None] = [assignment_ids[a] for a in problem.assignments if a in assignment_ids] or [None]
        rows += [
            RenderProblem(
                device_id=device_id,
                assignment_id=assignment_id,
                sensor_name=problem.sensor,
                kind=problem.kind,
                message=problem.message,
            )
            for assignment_id in involved
        ]
    return rows


def _problems_replace(device_ids: Sequence[int], problems: dict[int, list[Problem]]) -> None:
    """The devices' stored problems replaced by what their render found: one DELETE; when there are any, one INSERT
    and the lookup of the assignments they name."""
    wanted = {a for found in problems.values() for p in found for a in p.assignments}
    assignment_ids = (
        {str(u): pk for u, pk in Assignment.objects.filter(uuid__in=wanted).values_list("uuid", "pk")} if wanted else {}
    )
    rows = [row for device_id, found in problems.items() for row in _problem_rows(device_id, found, assignment_ids)]
    with transaction.atomic():
        RenderProblem.objects.filter(device_id__in=list(device_ids)).delete()
        if rows:
            RenderProblem.objects.bulk_create(rows)


def devices_render(
    *, device_ids: Sequence[int], user: RequestUser, assignments: list[AssignmentInput] | None = None
) -> BatchResult:
    """Re-render a batch of devices: their inputs read in a constant number of queries, then each device whose
    rendered configuration changed written in its own transaction (under its lock), then their problems stored.
    A device that cannot be written (deleted meanwhile, a refusal of the write path) is counted and passed over."""
    result = BatchResult()
    inputs = render_inputs(device_ids, assignments=assignments)
    problems: dict[int, list[Problem]] = {}
    for device_id in sorted(inputs.states):
        state = inputs.states[device_id]
        result.processed += 1
        try:
            changed, found = _device_render_write(device_id, inputs, user)
        except Device.DoesNotExist:
            continue
        except (ValidationError, PreconditionFailed, ObjectDoesNotExist) as exc:
            result.failed += 1
            message = _refusal_text(exc)
            result.errors.append(f"{state.device_uuid}: {message}")
            found = [
                Problem("", RenderProblemKindChoices.WRITE_FAILED, f"The rendered configuration was refused: {message}")
            ]
        else:
            result.changed += changed
            result.unchanged += not changed
        problems[device_id] = found
        result.with_problems += bool(found)
    _problems_replace(list(inputs.states), problems)
    return result


def _refusal_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return "; ".join(f"{key}: {messages[0]}" for key, messages in exc.message_dict.items())
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    return str(exc) or type(exc).__name__


def device_render_locked(*, device: Device, user: RequestUser) -> tuple[bool, Rendering]:
    """Re-render one device whose lock the caller holds (``device_write``), in the caller's transaction: (written,
    the rendering). A rendering the write path refuses is raised to the caller."""
    inputs = render_inputs([device.pk])
    state = inputs.states[device.pk]
    rendering = inputs.render(device.pk)
    changed = not diff_is_empty(sensors_diff(config_sensors(state.config), rendering.sensors))
    if changed:
        _write(state, rendering, user)
    _problems_replace([device.pk], {device.pk: rendering.problems})
    return changed, rendering


# --- render jobs ---------------------------------------------------------------------------------------------------


def render_inline_max() -> int:
    return settings.SENSORSYNC_RENDER_INLINE_MAX_DEVICES


def render_batch_size() -> int:
    return settings.SENSORSYNC_RENDER_BATCH_SIZE


def render_job_create(*, reason: str, scope: dict[str, Any], user: RequestUser) -> RenderJob:
    """A job re-rendering the devices ``scope`` names, made in the caller's transaction. Once it commits, a job of
    at most ``SENSORSYNC_RENDER_INLINE_MAX_DEVICES`` devices runs at once; a bigger one waits for
    ``manage.py render_fleet``."""
    ctx = current_context()
    job = RenderJob.objects.create(
        reason=reason[:255],
        scope=scope,
        total=scope_devices(scope).count(),
        created_by=signed_in_user(user),
        source=ctx.source,
        actor=actor_label(user),
        correlation_id=ctx.correlation_id,
    )
    if job.total <= render_inline_max():
        transaction.on_commit(partial(_render_job_run_inline, job.pk))
    return job


def _render_job_run_inline(job_id: int) -> None:
    """After the change committed: run its small job here. A failure is the job's (recorded on it and logged),
    never the committed change's."""
    try:
        render_job_run(job_id=job_id)
    except Exception:
        logger.exception("render job %s failed", job_id)


def _job_claim(job_id: int) -> bool:
    """Take a queued job, or a running one whose worker stopped reporting; False if another worker has it."""
    now = timezone.now()
    claimable = RenderJob.objects.filter(pk=job_id, status=JobStatus.QUEUED) | RenderJob.objects.filter(
        pk=job_id, status=JobStatus.RUNNING, heartbeat_at__lt=now - JOB_STALE_AFTER
    )
    return bool(claimable.update(status=JobStatus.RUNNING, started_at=now, heartbeat_at=now))


def _job_progress(job: RenderJob, batch: BatchResult, last_device_id: int) -> None:
    """Add a batch's counts to the job, in one UPDATE (the admin and the API read them while it runs)."""
    errors = (job.errors + batch.errors)[:JOB_ERRORS_KEPT]
    RenderJob.objects.filter(pk=job.pk).update(
        processed=F("processed") + batch.processed,
        changed=F("changed") + batch.changed,
        unchanged=F("unchanged") + batch.unchanged,
        failed=F("failed") + batch.failed,
        with_problems=F("with_problems") + batch.with_problems,
        last_device_id=last_device_id,
        errors=errors,
        heartbeat_at=timezone.now(),
    )
    job.processed += batch.processed
    job.changed += batch.changed
    job.unchanged += batch.unchanged
    job.failed += batch.failed
    job.with_problems += batch.with_problems
    job.last_device_id = last_device_id
    job.errors = errors


def render_job_run(
    *,
    job_id: int,
    progress: Callable[[RenderJob], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> RenderJob:
    """Run a job to its end, batch after batch (``SENSORSYNC_RENDER_BATCH_SIZE`` devices), from where a previous
    run stopped. Every write is attributed to whoever made the change, with the change's correlation id. A job
    another worker holds is returned untouched; one asked to stop (``should_stop``, checked between batches) is
    queued again, to go on from its last batch."""
    if not _job_claim(job_id):
        return RenderJob.objects.get(pk=job_id)
    job = RenderJob.objects.select_related("created_by").get(pk=job_id)
    user: RequestUser = job.created_by
    status = JobStatus.DONE
    with audit_context(source=job.source, actor=job.actor, correlation_id=job.correlation_id):
        try:
            for ids in device_id_batches(scope_devices(job.scope), after=job.last_device_id, size=render_batch_size()):
                _job_progress(job, devices_render(device_ids=ids, user=user), ids[-1])
                if progress is not None:
                    progress(job)
                if should_stop is not None and should_stop():
                    status = JobStatus.QUEUED
                    break
        except Exception as exc:
            errors = [*job.errors, f"The job stopped: {type(exc).__name__}: {exc}"][: JOB_ERRORS_KEPT + 1]
            RenderJob.objects.filter(pk=job.pk).update(
                status=JobStatus.FAILED, finished_at=timezone.now(), errors=errors
            )
            raise
    finished = timezone.now() if status == JobStatus.DONE else None
    RenderJob.objects.filter(pk=job.pk).update(status=status, finished_at=finished)
    job.refresh_from_db()
    return job


def render_job_next() -> int | None:
    """The oldest job waiting for a worker: queued, or running with a worker that stopped reporting."""
    stale = timezone.now() - JOB_STALE_AFTER
    queued = RenderJob.objects.filter(status=JobStatus.QUEUED) | RenderJob.objects.filter(
        status=JobStatus.RUNNING, heartbeat_at__lt=stale
    )
    return queued.order_by("pk").values_list("pk", flat=True).first()


def render_job_requeue(*, job_uuid: uuid_lib.UUID | str, user: RequestUser) -> RenderJob:
    """Queue a failed job again: it resumes after the last device it finished."""
    with transaction.atomic():
        job = RenderJob.objects.select_for_update().get(uuid=job_uuid)
        if job.status != JobStatus.FAILED:
            raise ValidationError({"status": [f"Only a failed job can be run again; this one is {job.status}."]})
        job.status = JobStatus.QUEUED
        job.finished_at = None
        job.save(update_fields=["status", "finished_at"])
        return job


def render_request(*, scope: Any, reason: str, user: RequestUser) -> RenderJob:
    """Staff ask for a re-render (a repair, or after changing something by hand): of every device, of those a
    selector selects, or of some devices by uuid."""
    if not isinstance(scope, dict):
        raise ValidationError({"body": ["Must be a JSON object."]})
    if scope.get("all") is True and len(scope) == 1:
        clean: dict[str, Any] = {"all": True}
    elif set(scope) == {"selector"}:
        clean = {"selectors": [str(selector_validate(scope["selector"]))]}
    elif set(scope) == {"devices"} and isinstance(scope["devices"], list) and scope["devices"]:
        uuids = []
        for value in scope["devices"]:
            try:
                uuids.append(uuid_lib.UUID(str(value)))
            except ValueError:
                raise ValidationError({"devices": [f"'{value}' is not a device uuid."]}) from None
        ids = list(Device.objects.filter(uuid__in=uuids).values_list("pk", flat=True))
        if len(ids) != len(set(uuids)):
            raise ValidationError({"devices": ["Some of these devices do not exist."]})
        clean = {"devices": ids}
    else:
        raise ValidationError(
            {"body": ['Say which devices: {"all": true}, {"selector": "plant=3"} or {"devices": [uuid, ...]}.']}
        )
    with transaction.atomic():
        return render_job_create(reason=reason, scope=clean, user=user)


# --- templates -----------------------------------------------------------------------------------------------------


def _template_events(template: SensorTemplate) -> contextlib.AbstractContextManager[EventRecorder]:
    return event_recording(str(template.uuid), aggregate_type=TEMPLATE_AGGREGATE)


def template_scope(template: SensorTemplate) -> dict[str, Any] | None:
    """The devices a new version of ``template`` may change: those the assignments following it select."""
    selectors = sorted(
        set(template.assignments.filter(template_version__isnull=True).values_list("selector", flat=True))
    )
    return {"selectors": selectors} if selectors else None


@dataclass(frozen=True)
class Change:
    """A write and the re-render it caused (None: it reaches no device)."""

    instance: Any
    job: RenderJob | None


@transaction.atomic
def sensor_template_create(
    *, name: Any, sensors: Any, description: Any = "", note: Any = "", user: RequestUser
) -> SensorTemplate:
    """A template at version 1. Until an assignment uses it, it renders on no device."""
    name = _name_validate(name)
    description = _text_validate(description, "description")
    note = _text_validate(note, "note", limit=NOTE_MAX)
    sensors = template_sensors_validate(sensors)
    if SensorTemplate.objects.filter(name=name).exists():
        raise ValidationError({"name": [f"A template named '{name}' already exists."]})
    author = signed_in_user(user)
    template = SensorTemplate.objects.create(name=name, description=description, created_by=author, updated_by=author)
    SensorTemplateVersion.objects.create(template=template, version=1, sensors=sensors, note=note, created_by=author)
    with _template_events(template) as recorder:
        recorder.record(
            EventTypeChoices.SENSOR_TEMPLATE_CREATED,
            {"name": name, "version": 1, "sensors": sensors, "note": note},
            actor=actor_label(user),
        )
    return template


@transaction.atomic
def sensor_template_update(
    *,
    uuid: uuid_lib.UUID | str,
    user: RequestUser,
    name: Any = UNSET,
    description: Any = UNSET,
    sensors: Any = UNSET,
    note: Any = "",
    if_match: str | None = None,
) -> Change:
    """Rename or describe a template, and/or give it new sensors: a new version, which every assignment following
    its latest version renders (a job). Sensors equal to the latest version's make no version."""
    template = SensorTemplate.objects.select_for_update().get(uuid=uuid)
    if_match_check(if_match, _etag(template.version))
    changes: dict[str, Any] = {}
    if name is not UNSET and _name_validate(name) != template.name:
        if SensorTemplate.objects.filter(name=name).exclude(pk=template.pk).exists():
            raise ValidationError({"name": [f"A template named '{name}' already exists."]})
        changes["name"] = name
    if description is not UNSET and _text_validate(description, "description") != template.description:
        changes["description"] = description
    note = _text_validate(note, "note", limit=NOTE_MAX)
    new_sensors = None
    if sensors is not UNSET:
        new_sensors = template_sensors_validate(sensors)
        latest = template.versions.get(version=template.version).sensors
        if new_sensors == latest:
            new_sensors = None
        else:
            _held_refuse(template.assignments.filter(template_version__isnull=True), "sensors")
    if not changes and new_sensors is None:
        return Change(template, None)
    author = signed_in_user(user)
    for key, value in changes.items():
        setattr(template, key, value)
    data: dict[str, Any] = {"changes": changes}
    if new_sensors is not None:
        template.version += 1
        SensorTemplateVersion.objects.create(
            template=template, version=template.version, sensors=new_sensors, note=note, created_by=author
        )
        data |= {"version": template.version, "sensors": new_sensors, "note": note}
    template.updated_at, template.updated_by = timezone.now(), author
    template.save(update_fields=[*changes, "version", "updated_at", "updated_by"])
    with _template_events(template) as recorder:
        recorder.record(EventTypeChoices.SENSOR_TEMPLATE_UPDATED, data, actor=actor_label(user))
    job = None
    scope = template_scope(template) if new_sensors is not None else None
    if scope is not None:
        job = render_job_create(reason=f"template {template.name} v{template.version}", scope=scope, user=user)
    return Change(template, job)


@transaction.atomic
def sensor_template_delete(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> None:
    """Delete a template and its versions. Refused while an assignment uses it (delete those first: that removes
    what they rendered)."""
    template = SensorTemplate.objects.select_for_update().get(uuid=uuid)
    used = list(template.assignments.values_list("name", flat=True)[:5])
    if used:
        raise ValidationError(
            {"template": [f"Assignments use this template ({', '.join(used)}); delete or change them first."]}
        )
    with _template_events(template) as recorder:
        recorder.record(
            EventTypeChoices.SENSOR_TEMPLATE_DELETED,
            {"name": template.name, "version": template.version},
            actor=actor_label(user),
        )
    template.delete()


# --- assignments ---------------------------------------------------------------------------------------------------


def _assignment_events(assignment: Assignment) -> contextlib.AbstractContextManager[EventRecorder]:
    return event_recording(str(assignment.uuid), aggregate_type=ASSIGNMENT_AGGREGATE)


def _template_for(value: Any) -> SensorTemplate:
    try:
        return SensorTemplate.objects.get(uuid=uuid_lib.UUID(str(value)))
    except (ValueError, SensorTemplate.DoesNotExist):
        raise ValidationError({"template": [f"No template with uuid '{value}'."]}) from None


def _assignment_data(assignment: Assignment) -> dict[str, Any]:
    return {
        "name": assignment.name,
        "template": str(assignment.template.uuid),
        "template_name": assignment.template.name,
        "template_version": assignment.template_version,
        "selector": assignment.selector,
        "priority": assignment.priority,
    }


@dataclass(frozen=True)
class AssignmentFields:
    """An assignment's fields, validated: what a create or an update would store (and a preview renders)."""

    name: str
    template: SensorTemplate
    template_version: int | None
    selector: Selector
    priority: int
    description: str

    def as_input(self, *, uuid: str) -> AssignmentInput:
        version = self.template_version or self.template.version
        sensors = SensorTemplateVersion.objects.get(template=self.template, version=version).sensors
        return AssignmentInput(
            uuid=uuid,
            name=self.name,
            priority=self.priority,
            selector=self.selector,
            template_uuid=str(self.template.uuid),
            template=self.template.name,
            version=version,
            sensors=tuple(sensors),
        )


def _assignment_fields_complete(errors: dict[str, list[str]], current: Assignment | None, **required: Any) -> None:
    """Add to ``errors`` the required fields missing, and a name another assignment has."""
    for key, value in required.items():
        if value is None and key not in errors:
            errors[key] = ["This field is required."]
    name = required["name"]
    if name is not None and "name" not in errors:
        others = Assignment.objects.filter(name=name)
        if current is not None:
            others = others.exclude(pk=current.pk)
        if others.exists():
            errors["name"] = [f"An assignment named '{name}' already exists."]


def assignment_fields_validate(*, current: Assignment | None = None, **sent: Any) -> AssignmentFields:
    """The fields sent (``name``, ``template`` (uuid), ``template_version``, ``selector``, ``priority``,
    ``description``) over ``current``'s, checked together; every problem is reported at once."""
    errors: dict[str, list[str]] = {}

    def check(key: str, validate: Callable[[], Any], default: Any) -> Any:
        if key not in sent:
            return default
        try:
            return validate()
        except ValidationError as exc:
            errors.update(exc.message_dict)
            return default

    name = check("name", lambda: _name_validate(sent["name"]), current.name if current else None)
    template = check("template", lambda: _template_for(sent["template"]), current.template if current else None)
    selector = check(
        "selector", lambda: selector_validate(sent["selector"]), Selector.parse(current.selector) if current else None
    )
    priority = check("priority", lambda: _priority_validate(sent["priority"]), current.priority if current else 0)
    description = check(
        "description",
        lambda: _text_validate(sent["description"], "description"),
        current.description if current else "",
    )
    pinned = current.template_version if current and "template" not in sent else None
    if template is not None:
        pinned = check("template_version", lambda: _pinned_version_validate(template, sent["template_version"]), pinned)
    _assignment_fields_complete(errors, current, name=name, template=template, selector=selector)
    if errors:
        raise ValidationError(errors)
    return AssignmentFields(name, template, pinned, selector, priority, description)


def assignment_scope(*assignments: "Assignment | AssignmentFields") -> dict[str, Any]:
    """The devices the assignments' selectors select (an assignment before and after a change)."""
    return {"selectors": sorted({str(a.selector) for a in assignments})}


@transaction.atomic
def assignment_create(*, user: RequestUser, **sent: Any) -> Change:
    fields = assignment_fields_validate(**sent)
    author = signed_in_user(user)
    assignment = Assignment.objects.create(
        name=fields.name,
        description=fields.description,
        template=fields.template,
        template_version=fields.template_version,
        selector=str(fields.selector),
        priority=fields.priority,
        created_by=author,
        updated_by=author,
    )
    with _assignment_events(assignment) as recorder:
        recorder.record(EventTypeChoices.ASSIGNMENT_CREATED, _assignment_data(assignment), actor=actor_label(user))
    job = render_job_create(
        reason=f"assignment {assignment.name} created", scope=assignment_scope(assignment), user=user
    )
    return Change(assignment, job)


RENDERED_FIELDS = ("template_id", "template_version", "selector", "priority")


@transaction.atomic
def assignment_update(*, uuid: uuid_lib.UUID | str, user: RequestUser, **sent: Any) -> Change:
    """Change an assignment; the devices its old and its new selector select are re-rendered when what it renders
    changed (its template, version, selector or priority)."""
    assignment = Assignment.objects.select_for_update().select_related("template").get(uuid=uuid)
    fields = assignment_fields_validate(current=assignment, **sent)
    before = {key: getattr(assignment, key) for key in RENDERED_FIELDS}
    old_scope = assignment_scope(assignment)
    new_values = {
        "name": fields.name,
        "description": fields.description,
        "template": fields.template,
        "template_version": fields.template_version,
        "selector": str(fields.selector),
        "priority": fields.priority,
    }
    changed = [key for key, value in new_values.items() if getattr(assignment, key) != value]
    if not changed:
        return Change(assignment, None)
    if {"template", "template_version"} & set(changed):
        _held_refuse(Assignment.objects.filter(pk=assignment.pk), "templateVersion")
    for key in changed:
        setattr(assignment, key, new_values[key])
    assignment.updated_at, assignment.updated_by = timezone.now(), signed_in_user(user)
    assignment.save(update_fields=[*changed, "updated_at", "updated_by"])
    with _assignment_events(assignment) as recorder:
        recorder.record(
            EventTypeChoices.ASSIGNMENT_UPDATED,
            {**_assignment_data(assignment), "changed": changed},
            actor=actor_label(user),
        )
    job = None
    if before != {key: getattr(assignment, key) for key in RENDERED_FIELDS}:
        job = render_job_create(
            reason=f"assignment {assignment.name} changed",
            scope={"selectors": sorted({*old_scope["selectors"], *assignment_scope(assignment)["selectors"]})},
            user=user,
        )
    return Change(assignment, job)


@transaction.atomic
def assignment_delete(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> Change:
    """Delete an assignment: what it rendered goes from the devices it selects (a job)."""
    assignment = Assignment.objects.select_for_update().select_related("template").get(uuid=uuid)
    with _assignment_events(assignment) as recorder:
        recorder.record(EventTypeChoices.ASSIGNMENT_DELETED, _assignment_data(assignment), actor=actor_label(user))
    scope = assignment_scope(assignment)
    name = assignment.name
    assignment.delete()
    return Change(None, render_job_create(reason=f"assignment {name} deleted", scope=scope, user=user))


# --- overrides -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverrideChange:
    override: SensorOverride
    rendered: bool  # the device got a new target version (or draft) from it
    applied: bool  # an assignment renders the sensor on the device, so the override is in its configuration


def _override_render(device: Device, sensor: str, user: RequestUser) -> tuple[bool, bool]:
    """Re-render the device (its lock held): (written, the sensor is rendered on it). Refused when the overrides
    make the sensor invalid."""
    changed, rendering = device_render_locked(device=device, user=user)
    invalid = [p for p in rendering.problems if p.sensor == sensor and p.kind == RenderProblemKindChoices.INVALID]
    if invalid:
        raise ValidationError({"value": [invalid[0].message]})
    return changed, sensor in rendering.rendered


def sensor_override_set(
    *, device_uuid: uuid_lib.UUID | str, sensor_name: Any, field: Any, value: Any, user: RequestUser
) -> OverrideChange:
    """Set one field of one rendered sensor on one device (replacing the override of that field, if any), and
    re-render the device in the same transaction. Refused when the sensor it makes is invalid. An override of a
    sensor no assignment renders on the device is kept, and applies once one does."""
    errors: dict[str, list[str]] = {}
    if not isinstance(sensor_name, str) or not NAME_RE.fullmatch(sensor_name):
        errors["sensor"] = ["Must be a sensor name: 1 to 255 characters of letters, digits, '.', '_' or '-'."]
    try:
        override_value_validate(field, value)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    with device_write(uuid=device_uuid) as device, device_events(device) as recorder:
        override = SensorOverride.objects.filter(device=device, sensor_name=sensor_name, field=field).first()
        author, now = signed_in_user(user), timezone.now()
        data = {"sensor": sensor_name, "field": field, "value": value}
        if override is None:
            override = SensorOverride.objects.create(
                device=device, sensor_name=sensor_name, field=field, value=value, created_by=author, updated_by=author
            )
        elif override.value != value:
            data["previous"] = override.value
            override.value, override.updated_at, override.updated_by = value, now, author
            override.save(update_fields=["value", "updated_at", "updated_by"])
        else:
            return OverrideChange(override, False, True)
        recorder.record(
            EventTypeChoices.SENSOR_OVERRIDE_SET, {"uuid": str(override.uuid), **data}, actor=actor_label(user)
        )
        rendered, applied = _override_render(device, sensor_name, user)
        return OverrideChange(override, rendered, applied)


def sensor_override_update(*, uuid: uuid_lib.UUID | str, value: Any, user: RequestUser) -> OverrideChange:
    """A new value for an override (the device is re-rendered at once)."""
    override = SensorOverride.objects.select_related("device").get(uuid=uuid)
    return sensor_override_set(
        device_uuid=override.device.uuid, sensor_name=override.sensor_name, field=override.field, value=value, user=user
    )


def sensor_override_delete(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> bool:
    """Remove an override: the field takes the template's value again (the device is re-rendered at once). Whether
    the device got a new target version (or draft)."""
    device_uuid = SensorOverride.objects.filter(uuid=uuid).values_list("device__uuid", flat=True).first()
    if device_uuid is None:
        raise SensorOverride.DoesNotExist(f"No override with uuid {uuid}.")
    with device_write(uuid=device_uuid) as device, device_events(device) as recorder:
        override = SensorOverride.objects.filter(uuid=uuid, device=device).first()
        if override is None:  # removed by someone else while this waited for the lock: that is the outcome asked
            return False
        recorder.record(
            EventTypeChoices.SENSOR_OVERRIDE_REMOVED,
            {"uuid": str(override.uuid), "sensor": override.sensor_name, "field": override.field},
            actor=actor_label(user),
        )
        sensor = override.sensor_name
        override.delete()
        rendered, _ = _override_render(device, sensor, user)
        return rendered


# --- holds: a change going out in stages ---------------------------------------------------------------------------


def _held_refuse(assignments: Any, key: str) -> None:
    """Refuse a change of what held assignments render: a change already going out in stages must finish or be
    aborted first (else the devices already released would take a change nobody staged)."""
    held = list(AssignmentHold.objects.filter(assignment__in=assignments).values_list("assignment__name", "reason")[:5])
    if held:
        names = ", ".join(f"'{name}' ({reason or 'held'})" for name, reason in held)
        raise ValidationError(
            {key: [f"A change of {names} is going out in stages: let it finish or abort it before another."]}
        )


def assignment_hold_set(*, assignment: Assignment, version: int, reason: str) -> AssignmentHold:
    """Hold ``assignment`` at template ``version``: the devices it selects keep rendering that version until they
    are released (``assignment_holds_release``). Made in the caller's transaction; refused if already held."""
    if AssignmentHold.objects.filter(assignment=assignment).exists():
        raise ValidationError({"assignment": [f"Assignment '{assignment.name}' is already held by another change."]})
    if not SensorTemplateVersion.objects.filter(template_id=assignment.template_id, version=version).exists():
        raise ValidationError({"templateVersion": [f"Version {version} of the template does not exist."]})
    return AssignmentHold.objects.create(assignment=assignment, version=version, reason=reason[:255])


def assignment_holds_release(*, hold_ids: Sequence[int], device_ids: Sequence[int]) -> None:
    """Let devices through holds (they render the assignments' own versions at their next render): one INSERT,
    a device already released is left as it is."""
    rows = [AssignmentHoldRelease(hold_id=h, device_id=d) for h in hold_ids for d in device_ids]
    AssignmentHoldRelease.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)


def assignment_holds_remove(*, hold_ids: Sequence[int]) -> None:
    """End holds (with their releases): every device renders the assignments' own versions at its next render."""
    AssignmentHold.objects.filter(pk__in=list(hold_ids)).delete()
