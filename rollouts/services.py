"""Writes of rollouts: creating one (the change made, its assignments held at the old version), moving it on stage
by stage (``rollout_step``, run by ``manage.py drive_rollouts``), and staff's pause, resume and abort.

How a device is admitted: its ``RolloutDevice`` row and its release from the holds are written in one transaction,
then it is re-rendered (``fleetconfig.services.devices_render``: each device in its own transaction, through the
write path every staff edit takes), then the target version the render left is recorded on its row. A driver killed
anywhere in between leaves rows without a version, which the next pass re-renders and records: rendering is
idempotent, so nothing is written twice and nothing is lost."""

import uuid as uuid_lib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from devices.labels import Selector
from devices.models import Device, DeviceTargetState
from devices.services import UNSET
from events.context import RequestUser, actor_label, audit_context, current_context, signed_in_user
from events.services import event_recording
from fleetconfig.models import Assignment, AssignmentHold, SensorTemplate, SensorTemplateVersion
from fleetconfig.services import (
    assignment_hold_set,
    assignment_holds_release,
    assignment_holds_remove,
    assignment_update,
    devices_render,
    render_batch_size,
    render_job_create,
    selector_validate,
    sensor_template_update,
)
from sensors.validation import NAME_RE
from sensorsync_project.validation import is_int

from .choices import (
    ROLLOUT_ABORTED,
    ROLLOUT_CREATED,
    ROLLOUT_FINISHED,
    ROLLOUT_PAUSED,
    ROLLOUT_RESUMED,
    ROLLOUT_STAGE_STARTED,
)
from .choices import RolloutKindChoices as Kind
from .choices import RolloutPauseReasonChoices as PauseReason
from .choices import RolloutStatusChoices as Status
from .models import Rollout, RolloutDevice
from .selectors import RolloutProgress, rollout_population, rollout_progress, rollout_unfinished_admissions
from .staging import (
    ADVANCE,
    PAUSE,
    PERCENT,
    REST,
    SELECTOR,
    STAGES_MAX,
    pause_detail,
    percent_members,
    stage_label,
    stage_verdict,
)

ROLLOUT_AGGREGATE = "rollout"
NAME_MAX = 100
DEADLINE_MAX = 30 * 24 * 3600
# How long a driver holds a rollout (renewed after every batch it admits): a killed driver's rollout is taken over
# by the next one after this.
LEASE = timedelta(minutes=2)
DEFAULT_STAGES = [{PERCENT: 1}, {PERCENT: 10}, {PERCENT: 100}]


# --- validation ----------------------------------------------------------------------------------------------------


def stages_validate(stages: Any) -> list[dict[str, Any]]:
    """1 to ``STAGES_MAX`` stages, each ``{"percent": 1..100}`` (of the devices the rollout counts, cumulative, so
    growing) or ``{"selector": "<label selector>"}`` (the devices it selects among them)."""
    message = (
        f'Must be a list of 1 to {STAGES_MAX} stages, each {{"percent": 1 to 100}} or {{"selector": "site=lab"}}; '
        "percentages must grow."
    )
    if not isinstance(stages, list) or not 1 <= len(stages) <= STAGES_MAX:
        raise ValidationError({"stages": [message]})
    clean: list[dict[str, Any]] = []
    last_percent = 0
    for index, stage in enumerate(stages):
        if isinstance(stage, dict) and set(stage) == {PERCENT} and is_int(stage[PERCENT]):
            percent = stage[PERCENT]
            if not 1 <= percent <= 100 or percent <= last_percent:
                raise ValidationError({f"stages[{index}].percent": [message]})
            last_percent = percent
            clean.append({PERCENT: percent})
        elif stage == {REST: True} and index == len(stages) - 1:
            clean.append({REST: True})
        elif isinstance(stage, dict) and set(stage) == {SELECTOR}:
            try:
                selector = selector_validate(stage[SELECTOR])
            except ValidationError as exc:
                raise ValidationError({f"stages[{index}].selector": exc.message_dict["selector"]}) from None
            clean.append({SELECTOR: str(selector)})
        else:
            raise ValidationError({f"stages[{index}]": [message]})
    return clean


def _percent_validate(value: Any, key: str) -> int:
    if not is_int(value) or not 0 <= value <= 100:
        raise ValidationError({key: ["Must be an integer percentage from 0 to 100."]})
    return value


def _deadline_validate(value: Any) -> int | None:
    if value is None:
        return None
    if not is_int(value) or not 1 <= value <= DEADLINE_MAX:
        raise ValidationError({"deadlineSeconds": [f"Must be a number of seconds from 1 to {DEADLINE_MAX}, or null."]})
    return value


def _name_validate(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > NAME_MAX:
        raise ValidationError({"name": [f"Must be 1 to {NAME_MAX} characters of letters, digits, '.', '_' or '-'."]})
    return name


@dataclass(frozen=True)
class RolloutSettings:
    stages: list[dict[str, Any]]
    success_threshold: int
    error_threshold: int
    deadline_seconds: int | None
    selector: Selector


def rollout_settings_validate(
    *, stages: Any, success_threshold: Any, error_threshold: Any, deadline_seconds: Any, selector: Any
) -> RolloutSettings:
    """Every problem of a rollout's settings at once."""
    errors: dict[str, list[str]] = {}
    checks = {
        "stages": lambda: stages_validate(stages),
        "successThreshold": lambda: _percent_validate(success_threshold, "successThreshold"),
        "errorThreshold": lambda: _percent_validate(error_threshold, "errorThreshold"),
        "deadlineSeconds": lambda: _deadline_validate(deadline_seconds),
        "selector": lambda: selector_validate(selector),
    }
    values: dict[str, Any] = {}
    for key, check in checks.items():
        try:
            values[key] = check()
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    stages = values["stages"]
    if str(values["selector"]) and stages[-1] != {REST: True}:
        stages = [*stages, {REST: True}]  # the group first, then the rest of the fleet, as a stage of its own
    return RolloutSettings(
        stages,
        values["successThreshold"],
        values["errorThreshold"],
        values["deadlineSeconds"],
        values["selector"],
    )


# --- events --------------------------------------------------------------------------------------------------------


def _record(rollout: Rollout, type_: str, data: dict[str, Any], user: RequestUser) -> None:
    base = {
        "rollout": str(rollout.uuid),
        "name": rollout.name,
        "status": rollout.status,
        "stage": rollout.current_stage,
        "stages": len(rollout.stages),
    }
    with event_recording(str(rollout.uuid), aggregate_type=ROLLOUT_AGGREGATE) as recorder:
        recorder.record(type_, {**base, **data}, actor=actor_label(user))


def _progress_data(progress: RolloutProgress) -> dict[str, Any]:
    return {"progress": progress.as_dict()["total"]}


# --- creating ------------------------------------------------------------------------------------------------------


def _object(model: Any, value: Any, key: str) -> Any:
    try:
        return model.objects.get(uuid=uuid_lib.UUID(str(value)))
    except (ValueError, model.DoesNotExist):
        raise ValidationError({key: [f"No {model._meta.verbose_name} with uuid '{value}'."]}) from None


def _template_change(template_uuid: Any, sensors: Any, note: Any, user: RequestUser) -> tuple[Any, list, int, int]:
    """A new version of the template, for the assignments following its latest: (template, them, from, to)."""
    template = _object(SensorTemplate, template_uuid, "template")
    followers = list(template.assignments.filter(template_version__isnull=True).order_by("pk"))
    if not followers:
        raise ValidationError(
            {"template": [f"No assignment follows the latest version of '{template.name}': nothing to roll out."]}
        )
    before = template.version
    change = sensor_template_update(uuid=template.uuid, user=user, sensors=sensors, note=note)
    if change.instance.version == before:
        raise ValidationError({"sensors": [f"These are the sensors of '{template.name}' v{before}: no change."]})
    return change.instance, followers, before, change.instance.version


def _assignment_change(assignment_uuid: Any, version: Any, user: RequestUser) -> tuple[Any, list, int, int, Any]:
    """Another pinned version for one assignment: (template, [it], from, to, its pin before)."""
    assignment = _object(Assignment, assignment_uuid, "assignment")
    before = assignment.template_version or assignment.template.version
    if not is_int(version) or version == before:
        raise ValidationError({"templateVersion": [f"Must be a version of the template other than v{before}."]})
    previous_pin = assignment.template_version
    change = assignment_update(uuid=assignment.uuid, user=user, template_version=version)
    return change.instance.template, [change.instance], before, version, previous_pin


@transaction.atomic
def rollout_create(
    *,
    user: RequestUser,
    name: Any,
    kind: Any,
    template: Any = None,
    sensors: Any = None,
    note: Any = "",
    assignment: Any = None,
    template_version: Any = None,
    stages: Any = None,
    success_threshold: Any = 95,
    error_threshold: Any = 10,
    deadline_seconds: Any = None,
    selector: Any = "",
) -> Rollout:
    """Make the change (a new template version, or an assignment's new pinned version) and hold its assignments at
    the version before, so no device takes it until the rollout admits it; ``manage.py drive_rollouts`` admits the
    first stage at its next pass. Nothing is written when anything is refused."""
    errors: dict[str, list[str]] = {}
    try:
        name = _name_validate(name)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        settings = rollout_settings_validate(
            stages=DEFAULT_STAGES if stages is None else stages,
            success_threshold=success_threshold,
            error_threshold=error_threshold,
            deadline_seconds=deadline_seconds,
            selector=selector,
        )
    except ValidationError as exc:
        errors.update(exc.message_dict)
    if kind not in Kind.values:
        errors["kind"] = [f"Must be one of {', '.join(Kind.values)}."]
    if errors:
        raise ValidationError(errors)
    previous_pin = None
    if kind == Kind.TEMPLATE:
        tmpl, assignments, from_version, to_version = _template_change(template, sensors, note, user)
    else:
        tmpl, assignments, from_version, to_version, previous_pin = _assignment_change(
            assignment, template_version, user
        )
    ctx = current_context()
    rollout = Rollout.objects.create(
        name=name,
        kind=kind,
        template=tmpl,
        from_version=from_version,
        to_version=to_version,
        previous_pin=previous_pin,
        selector=str(settings.selector),
        stages=settings.stages,
        success_threshold=settings.success_threshold,
        error_threshold=settings.error_threshold,
        deadline_seconds=settings.deadline_seconds,
        created_by=signed_in_user(user),
        source=ctx.source,
        actor=actor_label(user),
        correlation_id=ctx.correlation_id,
    )
    rollout.assignments.set(assignments)
    for each in assignments:
        assignment_hold_set(assignment=each, version=from_version, reason=f"rollout {rollout.name}")
    _record(
        rollout,
        ROLLOUT_CREATED,
        {
            "kind": kind,
            "template": str(tmpl.uuid),
            "fromVersion": from_version,
            "toVersion": to_version,
            "assignments": [str(a.uuid) for a in assignments],
            "selector": rollout.selector,
            "stageList": rollout.stages,
            "successThreshold": rollout.success_threshold,
            "errorThreshold": rollout.error_threshold,
            "deadlineSeconds": rollout.deadline_seconds,
        },
        user,
    )
    return rollout


# --- driving -------------------------------------------------------------------------------------------------------


def rollout_claim(rollout_id: int) -> bool:
    """Take a running rollout for one step: a conditional UPDATE, so of two drivers at once exactly one gets it (on
    PostgreSQL the second waits for the first's row lock, then sees the lease); a lease left by a killed driver
    runs out after ``LEASE``."""
    now = timezone.now()
    free = Q(lease_until__isnull=True) | Q(lease_until__lt=now)
    return bool(Rollout.objects.filter(free, pk=rollout_id, status=Status.RUNNING).update(lease_until=now + LEASE))


def _lease_renew(rollout_id: int) -> None:
    Rollout.objects.filter(pk=rollout_id).update(lease_until=timezone.now() + LEASE)


def _lease_release(rollout_id: int) -> None:
    Rollout.objects.filter(pk=rollout_id).update(lease_until=None)


def _hold_ids(rollout: Rollout) -> list[int]:
    return list(AssignmentHold.objects.filter(assignment__rollouts=rollout).values_list("pk", flat=True))


def _assignment_selectors(rollout: Rollout) -> list[str]:
    return sorted(set(rollout.assignments.values_list("selector", flat=True)))


def _stage_targets(rollout: Rollout, index: int) -> set[int]:
    """The devices stage ``index`` covers, among those the rollout counts now (the last stage of a rollout narrowed
    to a group: every device its assignments select)."""
    stage = rollout.stages[index]
    population = rollout_population(rollout, _assignment_selectors(rollout), narrowed=REST not in stage)
    if REST in stage:
        return set(population.values_list("pk", flat=True))
    if SELECTOR in stage:
        return set(population.filter(Selector.parse(stage[SELECTOR]).q()).values_list("pk", flat=True))
    pairs = [(pk, str(device_uuid)) for pk, device_uuid in population.values_list("pk", "uuid")]
    return set(percent_members(str(rollout.uuid), pairs, stage[PERCENT]))


def _chunks(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def _render_and_record(rollout: Rollout, device_ids: list[int], user: RequestUser) -> None:
    """Re-render admitted devices, then record the target version each now has on its admission."""
    devices_render(device_ids=device_ids, user=user)
    versions = dict(DeviceTargetState.objects.filter(device_id__in=device_ids).values_list("device_id", "version"))
    rows = list(RolloutDevice.objects.filter(rollout=rollout, device_id__in=device_ids, target_version__isnull=True))
    for row in rows:
        row.target_version = versions.get(row.device_id, row.before_version)
    RolloutDevice.objects.bulk_update(rows, ["target_version"])


def _admit_batch(rollout: Rollout, stage: int, device_ids: list[int], holds: list[int]) -> bool:
    """Admit devices (rows and releases, one transaction, under the rollout's row lock so an abort is not raced);
    False when the rollout stopped running meanwhile."""
    with transaction.atomic():
        if Rollout.objects.select_for_update().filter(pk=rollout.pk, status=Status.RUNNING).first() is None:
            return False
        now = timezone.now()
        facts = Device.objects.filter(pk__in=device_ids).values_list("pk", "target_state__version", "draft_mode")
        RolloutDevice.objects.bulk_create(
            [
                RolloutDevice(
                    rollout=rollout,
                    device_id=pk,
                    stage=stage,
                    before_version=version or 1,
                    draft=draft,
                    admitted_at=now,
                )
                for pk, version, draft in facts
            ],
            ignore_conflicts=True,
        )
        assignment_holds_release(hold_ids=holds, device_ids=device_ids)
    return True


def _stage_admit(rollout: Rollout, user: RequestUser) -> int:
    """Admit the devices the current stage covers that are not admitted yet: how many."""
    index = rollout.current_stage
    admitted = set(RolloutDevice.objects.filter(rollout=rollout).values_list("device_id", flat=True))
    wanted = sorted(_stage_targets(rollout, index) - admitted)
    if not wanted and rollout.stage_started_at is not None:
        return 0
    holds = _hold_ids(rollout)
    for chunk in _chunks(wanted, render_batch_size()):
        if not _admit_batch(rollout, index, chunk, holds):
            return 0
        _render_and_record(rollout, chunk, user)
        _lease_renew(rollout.pk)
    if rollout.stage_started_at is None:
        with transaction.atomic():
            locked = Rollout.objects.select_for_update().get(pk=rollout.pk)
            if locked.status != Status.RUNNING or locked.stage_started_at is not None:
                return len(wanted)
            locked.stage_started_at = locked.updated_at = timezone.now()
            locked.save(update_fields=["stage_started_at", "updated_at"])
            _record(locked, ROLLOUT_STAGE_STARTED, {"admitted": len(wanted), "label": _label(locked)}, user)
            rollout.stage_started_at = locked.stage_started_at
    return len(wanted)


def _label(rollout: Rollout) -> str:
    return stage_label(rollout.stages[rollout.current_stage])


def _finish_unfinished(rollout: Rollout, user: RequestUser) -> None:
    """Devices a killed driver admitted but did not finish re-rendering."""
    for chunk in _chunks(rollout_unfinished_admissions(rollout), render_batch_size()):
        _render_and_record(rollout, chunk, user)


@dataclass(frozen=True)
class StepResult:
    rollout: Rollout
    outcome: str  # "busy" (another driver has it), "admitted", "waiting", "advanced", "paused", "finished", "idle"
    admitted: int = 0


def _pause_for_threshold(rollout: Rollout, progress: RolloutProgress, user: RequestUser) -> bool:
    with transaction.atomic():
        locked = Rollout.objects.select_for_update().get(pk=rollout.pk)
        if locked.status != Status.RUNNING:
            return False
        locked.status, locked.pause_reason = Status.PAUSED, PauseReason.THRESHOLD
        locked.pause_detail = pause_detail(progress.total, locked.error_threshold)
        locked.updated_at = timezone.now()
        locked.save(update_fields=["status", "pause_reason", "pause_detail", "updated_at"])
        _record(
            locked,
            ROLLOUT_PAUSED,
            {"reason": PauseReason.THRESHOLD, "detail": locked.pause_detail, **_progress_data(progress)},
            user,
        )
    return True


def _advance(rollout: Rollout, progress: RolloutProgress, user: RequestUser) -> str:
    """The stage reached its threshold: the next stage, or the end (the holds lifted, the rest re-rendered)."""
    with transaction.atomic():
        locked = Rollout.objects.select_for_update().get(pk=rollout.pk)
        if locked.status != Status.RUNNING or locked.current_stage != rollout.current_stage:
            return "idle"
        now = timezone.now()
        if locked.current_stage + 1 < len(locked.stages):
            locked.current_stage += 1
            locked.stage_started_at, locked.updated_at = None, now
            locked.save(update_fields=["current_stage", "stage_started_at", "updated_at"])
            return "advanced"
        assignment_holds_remove(hold_ids=_hold_ids(locked))
        locked.status, locked.finished_at, locked.updated_at = Status.FINISHED, now, now
        locked.save(update_fields=["status", "finished_at", "updated_at"])
        _record(locked, ROLLOUT_FINISHED, _progress_data(progress), user)
        # The devices outside the stages (or selected since) take the change now that nothing holds it.
        render_job_create(
            reason=f"rollout {locked.name} finished", scope={"selectors": _assignment_selectors(locked)}, user=user
        )
        return "finished"


def _step(rollout: Rollout, user: RequestUser) -> StepResult:
    _finish_unfinished(rollout, user)
    admitted = 0
    while True:
        admitted += _stage_admit(rollout, user)
        progress = rollout_progress(rollout)
        verdict = stage_verdict(
            stage=progress.stages[rollout.current_stage],
            total=progress.total,
            success_threshold=rollout.success_threshold,
            error_threshold=rollout.error_threshold,
        )
        if verdict == PAUSE:
            paused = _pause_for_threshold(rollout, progress, user)
            return StepResult(rollout, "paused" if paused else "idle", admitted)
        if verdict != ADVANCE:
            return StepResult(rollout, "admitted" if admitted else "waiting", admitted)
        outcome = _advance(rollout, progress, user)
        if outcome != "advanced":
            return StepResult(rollout, outcome, admitted)
        rollout.refresh_from_db()


def rollout_step(*, rollout_id: int) -> StepResult:
    """One pass over one running rollout: finish admissions a killed driver left, admit the current stage's
    devices, then advance, wait or pause by the thresholds. Another driver's rollout is left alone ("busy")."""
    if not rollout_claim(rollout_id):
        return StepResult(Rollout.objects.get(pk=rollout_id), "busy")
    rollout = Rollout.objects.select_related("created_by").get(pk=rollout_id)
    try:
        with audit_context(source=rollout.source, actor=rollout.actor, correlation_id=rollout.correlation_id):
            return _step(rollout, rollout.created_by)
    finally:
        _lease_release(rollout_id)


def rollouts_drive() -> list[StepResult]:
    """One pass of the driver over every running rollout, oldest first."""
    ids = list(Rollout.objects.filter(status=Status.RUNNING).order_by("pk").values_list("pk", flat=True))
    return [rollout_step(rollout_id=pk) for pk in ids]


# --- staff: pause, resume, abort -----------------------------------------------------------------------------------


def _locked(uuid: uuid_lib.UUID | str) -> Rollout:
    return Rollout.objects.select_for_update().get(uuid=uuid)


@transaction.atomic
def rollout_pause(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> Rollout:
    rollout = _locked(uuid)
    if rollout.status != Status.RUNNING:
        raise ValidationError({"status": [f"Only a running rollout can be paused; this one is {rollout.status}."]})
    rollout.status, rollout.pause_reason = Status.PAUSED, PauseReason.STAFF
    rollout.pause_detail = f"Paused by {actor_label(user)}."
    rollout.updated_at = timezone.now()
    rollout.save(update_fields=["status", "pause_reason", "pause_detail", "updated_at"])
    _record(rollout, ROLLOUT_PAUSED, {"reason": PauseReason.STAFF, "detail": rollout.pause_detail}, user)
    return rollout


@transaction.atomic
def rollout_resume(
    *, uuid: uuid_lib.UUID | str, user: RequestUser, success_threshold: Any = UNSET, error_threshold: Any = UNSET
) -> Rollout:
    """Run a paused rollout again, with new thresholds if given; the driver's next pass checks them again (so
    failures still over the error threshold pause it again)."""
    rollout = _locked(uuid)
    if rollout.status != Status.PAUSED:
        raise ValidationError({"status": [f"Only a paused rollout can be resumed; this one is {rollout.status}."]})
    errors: dict[str, list[str]] = {}
    changed = {}
    for key, field_name, value in (
        ("successThreshold", "success_threshold", success_threshold),
        ("errorThreshold", "error_threshold", error_threshold),
    ):
        if value is UNSET or value is None:
            continue
        try:
            changed[field_name] = _percent_validate(value, key)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    for field_name, value in changed.items():
        setattr(rollout, field_name, value)
    rollout.status, rollout.pause_reason, rollout.pause_detail = Status.RUNNING, PauseReason.NONE, ""
    rollout.updated_at = timezone.now()
    rollout.save(update_fields=["status", "pause_reason", "pause_detail", "updated_at", *changed])
    _record(rollout, ROLLOUT_RESUMED, {"changed": changed}, user)
    return rollout


@transaction.atomic
def rollout_abort(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> Rollout:
    """Stop a rollout and take its change back: the holds are lifted and the change undone (a template gets a new
    version with the old version's sensors; an assignment its old pin), which re-renders every device it touched to
    what it ran before, as a new target version with the old content (a render job: at once when small, else by
    ``manage.py render_fleet``). The assignments then stay on the old sensors."""
    rollout = _locked(uuid)
    if not rollout.active:
        raise ValidationError({"status": [f"Only a running or paused rollout can be aborted; it is {rollout.status}."]})
    progress = rollout_progress(rollout)
    assignment_holds_remove(hold_ids=_hold_ids(rollout))
    template = SensorTemplate.objects.get(pk=rollout.template_id)
    if rollout.kind == Kind.TEMPLATE:
        old = SensorTemplateVersion.objects.get(template=template, version=rollout.from_version).sensors
        note = f"rollout {rollout.name} aborted: back to v{rollout.from_version}"
        sensor_template_update(uuid=template.uuid, user=user, sensors=old, note=note[:255])
    else:
        keep_following = rollout.previous_pin is None and template.version == rollout.from_version
        pin = None if keep_following else (rollout.previous_pin or rollout.from_version)
        for assignment in rollout.assignments.all():
            assignment_update(uuid=assignment.uuid, user=user, template_version=pin)
    rollout.status, rollout.pause_reason, rollout.pause_detail = Status.ABORTED, PauseReason.NONE, ""
    rollout.finished_at = rollout.updated_at = timezone.now()
    rollout.save(update_fields=["status", "pause_reason", "pause_detail", "finished_at", "updated_at"])
    touched = RolloutDevice.objects.filter(rollout=rollout).count()
    _record(rollout, ROLLOUT_ABORTED, {"devicesTouched": touched, **_progress_data(progress)}, user)
    return rollout
