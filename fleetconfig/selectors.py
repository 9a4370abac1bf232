"""Reads of the fleet configuration: what rendering needs for a batch of devices (a constant number of queries
whatever the batch's size), a device's rendering with the provenance of every field, the lists the API and admin
show, and the preview of a change before it is applied."""

import uuid as uuid_lib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery

from devices.labels import Selector, labels_of
from devices.models import Device
from devices.target_config import config_sensors
from reconciliation.services.targets import target_working
from sensors.validation import sensors_limit
from sensorsync_project.fields import JSONField

from .choices import RenderJobStatusChoices
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
from .rendering import (
    AssignmentInput,
    OverrideInput,
    Rendering,
    device_render,
    diff_is_empty,
    sensors_diff,
    sensors_split,
)

BATCH_SIZE = 500


# --- what rendering reads ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DesiredState:
    """A device's desired configuration as staff edits see it (``reconciliation.services.targets.target_working``):
    its draft when it is in draft mode, else its published target; with the ETag a write based on it must match."""

    device_id: int
    device_uuid: str
    config: dict
    etag: str
    draft: bool


def desired_states(device_ids: Iterable[int]) -> dict[int, DesiredState]:
    """The devices' desired configurations, by id, in one query (devices deleted meanwhile are left out)."""
    devices = (
        Device.objects.filter(pk__in=list(device_ids))
        .select_related("target_state", "target_draft")
        .only(
            "pk",
            "uuid",
            "draft_mode",
            "target_state__version",
            "target_state__config",
            "target_state__apps",
            "target_draft__config",
            "target_draft__apps",
            "target_draft__base_version",
            "target_draft__revision",
        )
    )
    return {device.pk: desired_state_of(device) for device in devices}


def desired_state_of(device: Device) -> DesiredState:
    """``device`` read with its target state and draft (``select_related``): what a staff edit starts from."""
    working = target_working(device)
    return DesiredState(device.pk, str(device.uuid), working.config, working.etag, working.drafting)


def _selector_or_none(text: str) -> Selector | None:
    try:
        return Selector.parse(text)
    except ValueError:
        return None  # stored through the services, so always valid; a hand-edited row selects nothing


def _hold_of(assignment: Assignment) -> AssignmentHold | None:
    return getattr(assignment, "hold", None)  # the reverse one-to-one raises (an AttributeError) when there is none


def assignment_inputs() -> list[AssignmentInput]:
    """Every assignment with its template version's sensors (and, for one held while its change goes out in stages,
    the held version's): two queries."""
    assignments = list(
        Assignment.objects.select_related("template", "hold").only(
            "uuid",
            "name",
            "priority",
            "selector",
            "template_version",
            "template__uuid",
            "template__name",
            "template__version",
            "hold__id",
            "hold__version",
        )
    )
    wanted = {(a.template_id, a.template_version or a.template.version) for a in assignments}
    wanted |= {(a.template_id, hold.version) for a in assignments if (hold := _hold_of(a)) is not None}
    condition = Q()
    for template_id, version in wanted:
        condition |= Q(template_id=template_id, version=version)
    sensors: dict[tuple[int, int], list] = {}
    if wanted:
        rows = SensorTemplateVersion.objects.filter(condition).values_list("template_id", "version", "sensors")
        sensors = {(template_id, version): value for template_id, version, value in rows}
    inputs = []
    for a in assignments:
        selector = _selector_or_none(a.selector)
        version = a.template_version or a.template.version
        if selector is None or (a.template_id, version) not in sensors:
            continue
        made = AssignmentInput(
            uuid=str(a.uuid),
            name=a.name,
            priority=a.priority,
            selector=selector,
            template_uuid=str(a.template.uuid),
            template=a.template.name,
            version=version,
            sensors=tuple(sensors[(a.template_id, version)]),
        )
        hold = _hold_of(a)
        if hold is not None and (a.template_id, hold.version) in sensors:
            held = replace(made, version=hold.version, sensors=tuple(sensors[(a.template_id, hold.version)]))
            made = replace(made, held=held, hold_id=hold.pk)
        inputs.append(made)
    return inputs


def releases_of(device_ids: Iterable[int], assignments: Sequence[AssignmentInput]) -> dict[int, frozenset[int]]:
    """The holds (ids) each device is released from, by device id: one query, none when nothing is held."""
    holds = [a.hold_id for a in assignments if a.hold_id is not None]
    if not holds:
        return {}
    found: dict[int, set[int]] = {}
    rows = AssignmentHoldRelease.objects.filter(hold_id__in=holds, device_id__in=list(device_ids)).values_list(
        "device_id", "hold_id"
    )
    for device_id, hold_id in rows:
        found.setdefault(device_id, set()).add(hold_id)
    return {device_id: frozenset(ids) for device_id, ids in found.items()}


def overrides_of(device_ids: Iterable[int]) -> dict[int, list[OverrideInput]]:
    """Each device's overrides, by device id, in one query."""
    result: dict[int, list[OverrideInput]] = {}
    rows = SensorOverride.objects.filter(device_id__in=list(device_ids)).values_list(
        "device_id", "uuid", "sensor_name", "field", "value"
    )
    for device_id, override_uuid, sensor, field_path, value in rows:
        result.setdefault(device_id, []).append(OverrideInput(str(override_uuid), sensor, field_path, value))
    return result


@dataclass
class RenderInputs:
    """What rendering a batch of devices reads, in four queries: desired states, labels, overrides, and (given or
    read once) the assignments."""

    states: dict[int, DesiredState]
    labels: dict[int, dict[str, str]]
    overrides: dict[int, list[OverrideInput]]
    assignments: list[AssignmentInput]
    released: dict[int, frozenset[int]] = field(default_factory=dict)  # device id -> holds it is released from

    def render(self, device_id: int, *, assignments: Sequence[AssignmentInput] | None = None) -> Rendering:
        state = self.states[device_id]
        own, previous = sensors_split(state.device_uuid, config_sensors(state.config))
        released = self.released.get(device_id, frozenset())
        return device_render(
            device_uuid=state.device_uuid,
            own=own,
            previous=previous,
            labels=self.labels.get(device_id, {}),
            assignments=[a.for_device(released) for a in (self.assignments if assignments is None else assignments)],
            overrides=self.overrides.get(device_id, []),
            sensors_max=sensors_limit(),
        )


def render_inputs(device_ids: Sequence[int], *, assignments: list[AssignmentInput] | None = None) -> RenderInputs:
    states = desired_states(device_ids)
    present = list(states)
    assignments = assignment_inputs() if assignments is None else assignments
    return RenderInputs(
        states=states,
        labels=labels_of([Device(pk=pk) for pk in present]),
        overrides=overrides_of(present),
        assignments=assignments,
        released=releases_of(present, assignments),
    )


# --- which devices a change reaches -----------------------------------------------------------------------------------


def scope_devices(scope: dict[str, Any]) -> QuerySet[Device]:
    """The devices a render job's scope names: every device, those any of some selectors selects, or a list."""
    if scope.get("all"):
        return Device.objects.all()
    if "devices" in scope:
        return Device.objects.filter(pk__in=scope["devices"])
    selectors = [s for s in map(_selector_or_none, scope.get("selectors", [])) if s is not None]
    if not selectors:
        return Device.objects.none()
    if not all(selectors):  # an empty selector selects every device
        return Device.objects.all()
    condition = Q()
    for selector in selectors:
        condition |= selector.q()
    return Device.objects.filter(condition)


def device_id_batches(devices: QuerySet[Device], *, after: int = 0, size: int = BATCH_SIZE) -> Iterator[list[int]]:
    """The devices' ids in ascending order, ``size`` per query (keyset paging: no cursor held across batches)."""
    last = after
    while True:
        ids = list(devices.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:size])
        if not ids:
            return
        yield ids
        last = ids[-1]
        if len(ids) < size:
            return


def assignments_of_template(template: SensorTemplate) -> QuerySet[Assignment]:
    return Assignment.objects.filter(template=template)


# --- one device ----------------------------------------------------------------------------------------------------


@dataclass
class DeviceRendering:
    """A device's rendering as staff see it: what its assignments and overrides make of it now, where each field
    came from, and whether its desired configuration is that (``pending``: a re-render has still to write it)."""

    device: Device
    labels: dict[str, str]
    state: DesiredState
    rendering: Rendering
    overrides: list[SensorOverride]
    pending: dict[str, Any]  # the difference between the stored configuration and the rendering (empty: none)
    stored_problems: list[RenderProblem] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return diff_is_empty(self.pending)


def device_rendering(*, device_uuid: uuid_lib.UUID | str) -> DeviceRendering:
    device = Device.objects.select_related("target_state", "target_draft").get(uuid=device_uuid)
    inputs = render_inputs([device.pk])
    rendering = inputs.render(device.pk)
    state = inputs.states[device.pk]
    return DeviceRendering(
        device=device,
        labels=inputs.labels[device.pk],
        state=state,
        rendering=rendering,
        overrides=list(SensorOverride.objects.filter(device=device).select_related("updated_by")),
        pending=sensors_diff(config_sensors(state.config), rendering.sensors),
        stored_problems=list(RenderProblem.objects.filter(device=device).select_related("assignment")),
    )


# --- lists ---------------------------------------------------------------------------------------------------------


def template_list() -> QuerySet[SensorTemplate]:
    """Templates with their latest version's sensors (``latest_sensors``) and how many assignments use each."""
    latest = SensorTemplateVersion.objects.filter(template=OuterRef("pk"), version=OuterRef("version"))
    return SensorTemplate.objects.select_related("created_by", "updated_by").annotate(
        latest_sensors=Subquery(latest.values("sensors")[:1], output_field=JSONField()),
        assignment_count=Count("assignments", distinct=True),
    )


def latest_sensors(template: SensorTemplate) -> list[dict]:
    """The sensors of a template's latest version."""
    return SensorTemplateVersion.objects.get(template=template, version=template.version).sensors


def template_versions(*, template_uuid: uuid_lib.UUID | str) -> QuerySet[SensorTemplateVersion]:
    return SensorTemplateVersion.objects.filter(template__uuid=template_uuid).select_related("created_by", "template")


def assignment_list() -> QuerySet[Assignment]:
    return Assignment.objects.select_related("template", "created_by", "updated_by").annotate(
        devices_with_problems=Count("render_problems__device", distinct=True)
    )


@dataclass(frozen=True)
class AssignmentCounts:
    targeted: int  # devices the selector selects now
    converged: int  # of which their agent runs their target exactly
    with_problems: int  # devices whose last render found a problem this assignment is part of


def assignment_counts(*, assignment: Assignment) -> AssignmentCounts:
    selector = _selector_or_none(assignment.selector)
    targeted = Device.objects.filter(selector.q()) if selector is not None else Device.objects.none()
    counts = targeted.aggregate(
        targeted=Count("pk"), converged=Count("pk", filter=Q(target_state__needs_deployment=False))
    )
    problems = RenderProblem.objects.filter(assignment=assignment).values("device").distinct().count()
    return AssignmentCounts(counts["targeted"], counts["converged"], problems)


def override_list() -> QuerySet[SensorOverride]:
    return SensorOverride.objects.select_related("device", "created_by", "updated_by")


def render_job_list() -> QuerySet[RenderJob]:
    return RenderJob.objects.select_related("created_by")


def render_jobs_open() -> QuerySet[RenderJob]:
    return RenderJob.objects.filter(status__in=[RenderJobStatusChoices.QUEUED, RenderJobStatusChoices.RUNNING])


def problem_list() -> QuerySet[RenderProblem]:
    return RenderProblem.objects.select_related("device", "assignment")


# --- preview -------------------------------------------------------------------------------------------------------

PREVIEW_SHOWN_DEFAULT = 50
PREVIEW_SHOWN_MAX = 500


@dataclass
class DeviceChange:
    device_id: int
    device_uuid: str
    device_name: str
    draft: bool  # the change would collect in the device's draft, not reach its agent yet
    diff: dict[str, Any]
    problems: list[dict[str, Any]]


@dataclass
class Preview:
    devices: int = 0  # in the change's reach
    changed: int = 0
    unchanged: int = 0
    with_problems: int = 0
    changes: list[DeviceChange] = field(default_factory=list)  # the first ``shown`` devices that change

    @property
    def truncated(self) -> bool:
        return self.changed > len(self.changes)


def change_preview(*, devices: QuerySet[Device], assignments: list[AssignmentInput], shown: int) -> Preview:
    """What re-rendering ``devices`` with ``assignments`` (the fleet's, with the change made to them) would do to
    each device's desired configuration: counts over all of them, and the difference for the first ``shown`` that
    change. Reads only: a constant number of queries per batch of devices."""
    preview = Preview()
    names: dict[int, str] = {}
    for ids in device_id_batches(devices):
        inputs = render_inputs(ids, assignments=assignments)
        if len(preview.changes) < shown:
            names.update(Device.objects.filter(pk__in=ids).values_list("pk", "name"))
        for device_id, state in inputs.states.items():
            rendering = inputs.render(device_id)
            diff = sensors_diff(config_sensors(state.config), rendering.sensors)
            preview.devices += 1
            preview.with_problems += bool(rendering.problems)
            if diff_is_empty(diff):
                preview.unchanged += 1
                continue
            preview.changed += 1
            if len(preview.changes) < shown:
                preview.changes.append(
                    DeviceChange(
                        device_id=device_id,
                        device_uuid=state.device_uuid,
                        device_name=names.get(device_id, ""),
                        draft=state.draft,
                        diff=diff,
                        problems=[p.as_dict() for p in rendering.problems],
                    )
                )
    return preview


def assignments_with(
    assignments: list[AssignmentInput], *, replace_uuid: str | None = None, add: AssignmentInput | None = None
) -> list[AssignmentInput]:
    """The fleet's assignments with one left out (``replace_uuid``) and/or one added in its place."""
    kept = [a for a in assignments if a.uuid != replace_uuid]
    return [*kept, add] if add is not None else kept


def assignments_with_template_version(
    assignments: list[AssignmentInput], *, template: SensorTemplate, version: int, sensors: list[dict]
) -> list[AssignmentInput]:
    """The fleet's assignments as they would be with a new version of ``template``: those following its latest
    version take it; those pinned to a version stay."""
    pinned = set(
        Assignment.objects.filter(template=template, template_version__isnull=False).values_list("uuid", flat=True)
    )
    return [
        replace(a, version=version, sensors=tuple(sensors))
        if a.template_uuid == str(template.uuid) and uuid_lib.UUID(a.uuid) not in pinned
        else a
        for a in assignments
    ]
