"""Rendering a device's desired sensors from the fleet configuration: pure functions, plain data in and out.

A device's desired sensors (``config.sensors`` of its target, what the agent gets) are

- its **own sensors**, set on the device itself (the sensor API and admin, a whole target-state document), and
- the sensors its **assignments** render: every assignment whose selector matches the device's labels contributes
  its template version's sensors;
- with the device's **overrides** of single fields of rendered sensors applied on top.

Precedence, for each sensor name:

1. The device's own sensor of that name wins whole: the templates' sensor of the name is not rendered on this
   device (a problem staff see, ``shadowed``: delete the own sensor to take the template's).
2. Otherwise the assignment of the highest priority renders it. Assignments of equal, highest priority that render
   it *differently* are a **conflict**: no silent pick. Meanwhile the device keeps that sensor as it was rendered
   before (or goes without it if it never had it): a conflict never disturbs what runs. Equal priorities that
   render it identically are no conflict.
3. Overrides then replace single fields of the winner (``pollInterval``, ``connection``, ``connection.host``, ...):
   an override always wins over every template.
4. The result is validated as every sensor is (``sensors.validation.sensor_validate``); a sensor the overrides make
   invalid is kept as rendered before (problem ``invalid``), as is everything when the device would exceed its
   sensor limit (problem ``limit``).

Rendered sensors are told apart from the device's own by their id: a rendered sensor's id is derived from the
device and the sensor's name (``rendered_sensor_id``), an own sensor's is random. The mark travels with the
configuration (history, drafts, rollbacks), the agent sees a plain UUID, and a re-render replaces exactly the
sensors that carry it, so removing an assignment removes exactly what it rendered.

For each field of each sensor the rendering says where it came from (``provenance``): the device itself, a
template version through an assignment, an override, or "held" (kept from before, with the reason).
"""

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError

from devices.labels import Selector
from sensors.validation import SENSOR_FIELDS, sensor_validate

# Fixed for ever: changing it would make every rendered sensor look like the device's own.
RENDERED_ID_NAMESPACE = uuid.UUID("5b0c6d0e-8f3a-5c1e-9a57-2f7c0d9e4b13")

# The fields an override may replace whole, and those whose single keys it may replace ("connection.host").
OVERRIDE_FIELDS = ("enabled", "pollInterval", "connection", "dataPoints", "metadata")
OVERRIDE_OBJECT_FIELDS = ("connection", "metadata")
OVERRIDE_KEY_MAX = 255
SHOWN_FIELDS = tuple(f for f in SENSOR_FIELDS if f != "id")  # name, protocol, enabled, pollInterval, ...

# Problem kinds (``fleetconfig.choices.RenderProblemKindChoices`` mirrors them for the database).
CONFLICT = "conflict"
SHADOWED = "shadowed"
INVALID = "invalid"
LIMIT = "limit"


def rendered_sensor_id(device_uuid: uuid.UUID | str, name: str) -> str:
    """The id of the sensor ``name`` rendered on a device: the same at every render, unlike any own sensor's."""
    return str(uuid.uuid5(RENDERED_ID_NAMESPACE, f"{uuid.UUID(str(device_uuid))}/{name}"))


def is_rendered(device_uuid: uuid.UUID | str, sensor: Mapping[str, Any]) -> bool:
    name = sensor.get("name")
    return isinstance(name, str) and sensor.get("id") == rendered_sensor_id(device_uuid, name)


def sensors_split(device_uuid: uuid.UUID | str, sensors: Iterable[Mapping]) -> tuple[list[dict], dict[str, dict]]:
    """A configuration's sensors as (the device's own, in their order; the rendered ones by name)."""
    own: list[dict] = []
    rendered: dict[str, dict] = {}
    for sensor in sensors:
        if is_rendered(device_uuid, sensor):
            rendered[sensor["name"]] = dict(sensor)
        else:
            own.append(dict(sensor))
    return own, rendered


def override_field_problem(field_path: Any) -> str | None:
    """Why ``field_path`` is not a field an override may set, or None."""
    if not isinstance(field_path, str) or not field_path:
        return "Must be a sensor field name."
    base, dot, key = field_path.partition(".")
    if not dot:
        if base in OVERRIDE_FIELDS:
            return None
        return f"Must be one of {', '.join(OVERRIDE_FIELDS)}, or {' or '.join(OVERRIDE_OBJECT_FIELDS)}.<key>."
    if base not in OVERRIDE_OBJECT_FIELDS:
        return f"Only the keys of {' and '.join(OVERRIDE_OBJECT_FIELDS)} can be set one by one ('connection.host')."
    if not key or len(key) > OVERRIDE_KEY_MAX or any(ch < " " or ch == "\x7f" for ch in key):
        return f"The key after '{base}.' must be 1 to {OVERRIDE_KEY_MAX} characters, no control characters."
    return None


def override_apply(sensor: dict, field_path: str, value: Any) -> dict:
    """``sensor`` with one override applied (a copy): a whole field, or one key of an object field."""
    base, dot, key = field_path.partition(".")
    if not dot:
        return {**sensor, base: value}
    current = sensor.get(base)
    return {**sensor, base: {**(current if isinstance(current, dict) else {}), key: value}}


# A sensor every override can be tried on: the override's own field is then the only thing that can be wrong.
_PROBE_SENSOR = {"name": "probe", "protocol": "modbus", "connection": {}}


def override_value_validate(field_path: str, value: Any) -> None:
    """Refuse a value the field can never take (``pollInterval`` 5, ``enabled`` "yes"), with the field's own
    message; whether the overridden sensor as a whole is valid is checked when it is rendered."""
    problem = override_field_problem(field_path)
    if problem is not None:
        raise ValidationError({"field": [problem]})
    try:
        sensor_validate(override_apply(_PROBE_SENSOR, field_path, value))
    except ValidationError as exc:
        messages = [message for messages in exc.message_dict.values() for message in messages]
        raise ValidationError({"value": messages}) from None


# --- inputs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AssignmentInput:
    """An assignment as rendering sees it: its selector and priority, and the sensors of its template version."""

    uuid: str
    name: str
    priority: int
    selector: Selector
    template_uuid: str
    template: str
    version: int
    sensors: tuple[Mapping[str, Any], ...]  # complete, validated sensor objects without ids
    # While the assignment's change goes out in stages (``fleetconfig.models.AssignmentHold``): the assignment as
    # the devices not yet released render it (the held version), and the hold's id.
    held: "AssignmentInput | None" = None
    hold_id: int | None = None

    def for_device(self, released: "frozenset[int] | set[int]") -> "AssignmentInput":
        """The assignment as a device released from the holds ``released`` (their ids) renders it."""
        if self.held is None or self.hold_id in released:
            return self
        return self.held

    def source(self) -> dict[str, Any]:
        return {
            "kind": "template",
            "template": self.template,
            "templateUuid": self.template_uuid,
            "version": self.version,
            "assignment": self.name,
            "assignmentUuid": self.uuid,
            "priority": self.priority,
        }


@dataclass(frozen=True)
class OverrideInput:
    uuid: str
    sensor: str
    field: str
    value: Any

    def source(self) -> dict[str, Any]:
        return {"kind": "override", "override": self.uuid}


OWN_SOURCE: dict[str, Any] = {"kind": "own"}


def held_source(reason: str) -> dict[str, Any]:
    return {"kind": "held", "reason": reason}


# --- outputs -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    sensor: str
    kind: str  # CONFLICT, SHADOWED, INVALID, LIMIT
    message: str
    assignments: tuple[str, ...] = ()  # the uuids of the assignments involved

    def as_dict(self) -> dict[str, Any]:
        return {"sensor": self.sensor, "kind": self.kind, "message": self.message, "assignments": self.assignments}


@dataclass
class Rendering:
    sensors: list[dict]  # the whole config.sensors: own sensors in their order, then the rendered ones by name
    rendered: dict[str, dict]  # the rendered sensors, by name
    provenance: dict[str, dict[str, Any]]  # sensor name -> {"origin", "fields": {field: source}, "assignments"}
    problems: list[Problem] = field(default_factory=list)
    matched: list[AssignmentInput] = field(default_factory=list)  # the assignments whose selector matched
    unused_overrides: list[OverrideInput] = field(default_factory=list)  # on sensors not rendered here


def _candidates_shown(candidates: list[AssignmentInput], winners: set[str], outcome: str) -> list[dict]:
    return [
        {
            **{key: value for key, value in a.source().items() if key != "kind"},
            "outcome": outcome if a.uuid in winners else "lower priority",
        }
        for a in candidates
    ]


def _render_one(
    name: str,
    candidates: list[AssignmentInput],
    overrides: list[OverrideInput],
) -> tuple[dict | None, dict[str, Any], Problem | None]:
    """One sensor name from the assignments that render it: (the sensor without id, or None when held; its
    provenance; the problem that holds it)."""
    top = max(a.priority for a in candidates)
    winners = [a for a in candidates if a.priority == top]
    definitions = {a.uuid: next(s for s in a.sensors if s["name"] == name) for a in winners}
    distinct: list[Mapping[str, Any]] = []
    for definition in definitions.values():
        if definition not in distinct:
            distinct.append(definition)
    winner_ids = {a.uuid for a in winners}
    if len(distinct) > 1:
        involved = ", ".join(f"'{a.name}' ({a.template} v{a.version})" for a in winners)
        problem = Problem(
            name,
            CONFLICT,
            f"Assignments of equal priority {top} render sensor '{name}' differently: {involved}. Give one of them "
            "a higher priority, or make their templates agree; until then the device keeps the sensor as it was.",
            tuple(a.uuid for a in winners),
        )
        return None, {"origin": "held", "assignments": _candidates_shown(candidates, winner_ids, "conflict")}, problem
    chosen = winners[0]
    sensor = dict(definitions[chosen.uuid])
    fields = {key: chosen.source() for key in SHOWN_FIELDS}
    for override in sorted(overrides, key=lambda o: (o.field.count("."), o.field)):  # whole fields, then keys
        sensor = override_apply(sensor, override.field, override.value)
        fields[override.field] = override.source()
    provenance = {
        "origin": "template",
        "fields": fields,
        "assignments": _candidates_shown(candidates, winner_ids, "applied"),
    }
    try:
        sensor = sensor_validate(sensor)
    except ValidationError as exc:
        detail = "; ".join(f"{key}: {messages[0]}" for key, messages in exc.message_dict.items())
        problem = Problem(
            name,
            INVALID,
            f"Sensor '{name}' as rendered with this device's overrides is invalid ({detail}); the device keeps it as "
            "it was. Change or remove the override.",
            (chosen.uuid,),
        )
        return None, {**provenance, "origin": "held"}, problem
    return sensor, provenance, None


def _limit_hold(
    count: int,
    sensors_max: int,
    previous: Mapping[str, Mapping[str, Any]],
    matched: list[AssignmentInput],
    problems: list[Problem],
    provenance: dict[str, dict[str, Any]],
) -> dict[str, dict]:
    """Too many sensors: the rendered ones are kept as they were (a ``LIMIT`` problem)."""
    problems.append(
        Problem(
            "",
            LIMIT,
            f"Its own and rendered sensors would be {count}, more than the {sensors_max} a device may have: the "
            "device keeps its rendered sensors as they were.",
            tuple(a.uuid for a in matched),
        )
    )
    held = {name: dict(previous[name]) for name in sorted(previous)}
    for name in held:
        provenance[name] = {
            "origin": "held",
            "fields": dict.fromkeys(SHOWN_FIELDS, held_source(LIMIT)),
            "assignments": [],
        }
    return held


def device_render(
    *,
    device_uuid: uuid.UUID | str,
    own: Sequence[Mapping[str, Any]],
    previous: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, str],
    assignments: Iterable[AssignmentInput],
    overrides: Iterable[OverrideInput],
    sensors_max: int,
) -> Rendering:
    """A device's desired sensors from its own sensors, the sensors rendered for it before (``previous``, by name:
    what a held sensor stays as), its labels, every assignment (those whose selector matches apply) and its
    overrides. Deterministic: the same inputs in any order give the same result."""
    matched = sorted((a for a in assignments if a.selector.matches(labels)), key=lambda a: (a.name, a.uuid))
    by_name: dict[str, list[AssignmentInput]] = {}
    for assignment in matched:
        for sensor in assignment.sensors:
            by_name.setdefault(sensor["name"], []).append(assignment)
    overrides_by_sensor: dict[str, list[OverrideInput]] = {}
    for override in overrides:
        overrides_by_sensor.setdefault(override.sensor, []).append(override)
    own_sensors = [dict(s) for s in own]
    own_names = {s["name"] for s in own_sensors}

    rendered: dict[str, dict] = {}
    provenance: dict[str, dict[str, Any]] = {
        s["name"]: {"origin": "own", "fields": dict.fromkeys(SHOWN_FIELDS, OWN_SOURCE), "assignments": []}
        for s in own_sensors
    }
    problems: list[Problem] = []
    for name in sorted(by_name):
        candidates = by_name[name]
        if name in own_names:
            provenance[name]["assignments"] = _candidates_shown(candidates, {a.uuid for a in candidates}, "shadowed")
            problems.append(
                Problem(
                    name,
                    SHADOWED,
                    f"The device has a sensor of its own named '{name}', which wins over the templates' "
                    f"('{candidates[0].name}'). Delete the device's own sensor to take the template's.",
                    tuple(a.uuid for a in candidates),
                )
            )
            continue
        made, shown, problem = _render_one(name, candidates, overrides_by_sensor.get(name, []))
        if problem is not None:
            problems.append(problem)
            if name in previous:
                rendered[name] = dict(previous[name])
                provenance[name] = {**shown, "fields": dict.fromkeys(SHOWN_FIELDS, held_source(problem.kind))}
        elif made is not None:
            rendered[name] = {**made, "id": rendered_sensor_id(device_uuid, name)}
            provenance[name] = shown
    if len(own_sensors) + len(rendered) > sensors_max:
        rendered = _limit_hold(len(own_sensors) + len(rendered), sensors_max, previous, matched, problems, provenance)
    rendered = dict(sorted(rendered.items()))
    unused = [o for name, found in sorted(overrides_by_sensor.items()) if name not in rendered for o in found]
    return Rendering(
        sensors=[*own_sensors, *rendered.values()],
        rendered=rendered,
        provenance={name: provenance[name] for name in [*(s["name"] for s in own_sensors), *rendered]},
        problems=problems,
        matched=matched,
        unused_overrides=sorted(unused, key=lambda o: (o.sensor, o.field)),
    )


# --- differences ---------------------------------------------------------------------------------------------------


def sensors_by_name(sensors: Iterable[Mapping[str, Any]]) -> dict[str, dict]:
    return {s["name"]: dict(s) for s in sensors}


def sensors_diff(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What changes from one list of sensors to another, by name (the order of a list is not a change): the names
    added and removed, and for each sensor changed, each field's value before and after."""
    old, new = sensors_by_name(before), sensors_by_name(after)
    updated: dict[str, dict[str, dict[str, Any]]] = {}
    for name in sorted(set(old) & set(new)):
        fields = {
            key: {"before": old[name].get(key), "after": new[name].get(key)}
            for key in SENSOR_FIELDS
            if old[name].get(key) != new[name].get(key)
        }
        if fields:
            updated[name] = fields
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "updated": updated,
    }


def diff_is_empty(diff: Mapping[str, Any]) -> bool:
    return not (diff["added"] or diff["removed"] or diff["updated"])


# --- staff writes of a device that has rendered sensors ------------------------------------------------------------

SENSOR_EDIT = "sensor"  # one sensor created, changed or removed (the sensor API and admin)
DOCUMENT_EDIT = "document"  # a whole target-state document (PUT target-state)
ROLLBACK_EDIT = "rollback"  # an earlier version's content


class RenderedSensorEdit(Exception):
    """A staff write that would change or remove sensors the assignments render (``sensors``, by name)."""

    def __init__(self, sensors: tuple[str, ...]) -> None:
        super().__init__(", ".join(sensors))
        self.sensors = sensors


def staff_sensors_check(
    device_uuid: uuid.UUID | str, previous: Sequence[Mapping], proposed: Sequence[Mapping], edit: str
) -> list[dict] | None:
    """The sensors a staff write of a device's desired configuration may store, given the rendered sensors it has
    (``previous``): None when ``proposed`` may be stored as it is, else the list to store instead. Rendered sensors
    belong to the assignments that render them, so:

    - a single-sensor edit (``SENSOR_EDIT``) that changes or removes one is refused (``RenderedSensorEdit``);
    - a whole document (``DOCUMENT_EDIT``) that changes one is refused; one it leaves out is kept (a script that
      writes a device's own sensors need not know the templates), and a rendered sensor it carries that is no longer
      rendered is left out;
    - a rollback (``ROLLBACK_EDIT``) restores the device's own sensors of that version and keeps the rendered ones
      as they are now (what an assignment renders changes with the assignment, not with the device's history).
    """
    _, rendered = sensors_split(device_uuid, previous)
    carried = [s for s in proposed if is_rendered(device_uuid, s) or s.get("name") in rendered]
    if not rendered and not carried:
        return None
    own = [dict(s) for s in proposed if s not in carried]
    if edit == ROLLBACK_EDIT:
        return [*own, *rendered.values()]
    changed = tuple(sorted(s["name"] for s in carried if s["name"] in rendered and dict(s) != rendered[s["name"]]))
    if changed:
        raise RenderedSensorEdit(changed)
    kept = {s["name"] for s in carried}
    if edit == SENSOR_EDIT:
        missing = tuple(sorted(set(rendered) - kept))
        if missing:
            raise RenderedSensorEdit(missing)
        return None
    stale = [s for s in carried if s["name"] not in rendered]
    if not stale and kept == set(rendered):
        return None
    return [*own, *rendered.values()]
