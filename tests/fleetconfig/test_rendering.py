"""Rendering and precedence as pure functions (``fleetconfig.rendering``): no database. Examples of each rule, then
property tests (hypothesis, derandomized): rendering is deterministic, overrides always win, and removing an
assignment removes exactly what it rendered."""

import random
import uuid

import pytest
from django.core.exceptions import ValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.labels import Selector
from fleetconfig.rendering import (
    CONFLICT,
    INVALID,
    LIMIT,
    SHADOWED,
    AssignmentInput,
    OverrideInput,
    device_render,
    diff_is_empty,
    is_rendered,
    override_apply,
    override_field_problem,
    override_value_validate,
    rendered_sensor_id,
    sensors_diff,
    sensors_split,
)

DEVICE = "0b0f2f4e-9a43-4c55-9d0b-2f3e7a9c1d44"
OTHER_DEVICE = "4c1d6c2e-5b0a-4b7e-8f39-1a2b3c4d5e6f"


def sensor(name: str, **fields) -> dict:
    return {
        "name": name,
        "protocol": "modbus",
        "enabled": True,
        "pollInterval": 5000,
        "connection": {"host": "10.0.0.5", "port": 502},
        "dataPoints": [],
        "metadata": {},
        **fields,
    }


def assignment(name: str, *sensors: dict, priority: int = 0, selector: str = "", version: int = 1) -> AssignmentInput:
    return AssignmentInput(
        uuid=str(uuid.uuid5(uuid.NAMESPACE_OID, name)),
        name=name,
        priority=priority,
        selector=Selector.parse(selector),
        template_uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        template=f"tpl-{name}",
        version=version,
        sensors=tuple(sensors),
    )


def override(sensor_name: str, field: str, value) -> OverrideInput:
    return OverrideInput(str(uuid.uuid5(uuid.NAMESPACE_X500, f"{sensor_name}.{field}")), sensor_name, field, value)


def render(*, own=(), previous=None, labels=None, assignments=(), overrides=(), sensors_max=2000):
    return device_render(
        device_uuid=DEVICE,
        own=list(own),
        previous=previous or {},
        labels=labels or {},
        assignments=list(assignments),
        overrides=list(overrides),
        sensors_max=sensors_max,
    )


# --------------------------------------------------------------------------------------------------------------
# ids: how a rendered sensor is told from the device's own
# --------------------------------------------------------------------------------------------------------------


def test_a_rendered_sensor_id_is_stable_per_device_and_name_and_no_own_id_is_one():
    first = rendered_sensor_id(DEVICE, "t1")
    assert first == rendered_sensor_id(DEVICE.upper(), "t1") == str(uuid.UUID(first))
    assert first != rendered_sensor_id(DEVICE, "t2")
    assert first != rendered_sensor_id(OTHER_DEVICE, "t1")
    assert is_rendered(DEVICE, {"name": "t1", "id": first})
    assert not is_rendered(OTHER_DEVICE, {"name": "t1", "id": first})
    assert not is_rendered(DEVICE, {"name": "t1", "id": str(uuid.uuid4())})
    assert not is_rendered(DEVICE, {"name": "t2", "id": first})

    own = {**sensor("own"), "id": str(uuid.uuid4())}
    rendered = {**sensor("t1"), "id": first}
    assert sensors_split(DEVICE, [own, rendered]) == ([own], {"t1": rendered})


# --------------------------------------------------------------------------------------------------------------
# precedence
# --------------------------------------------------------------------------------------------------------------


def test_matching_assignments_render_their_sensors_after_the_own_ones_with_provenance():
    own = {**sensor("own-1"), "id": str(uuid.uuid4())}
    boilers = assignment("boilers", sensor("t1"), sensor("t2", protocol="can"), selector="role=boiler", version=3)
    chillers = assignment("chillers", sensor("c1"), selector="role=chiller")

    result = render(own=[own], labels={"role": "boiler"}, assignments=[chillers, boilers])

    assert [s["name"] for s in result.sensors] == ["own-1", "t1", "t2"]
    assert result.sensors[0] == own
    assert result.rendered["t1"] == {"id": rendered_sensor_id(DEVICE, "t1"), **sensor("t1")}
    assert result.matched == [boilers]
    assert result.problems == []
    assert result.provenance["own-1"]["origin"] == "own"
    assert result.provenance["own-1"]["fields"]["pollInterval"] == {"kind": "own"}
    source = result.provenance["t2"]["fields"]["protocol"]
    assert source == {
        "kind": "template",
        "template": "tpl-boilers",
        "templateUuid": boilers.template_uuid,
        "version": 3,
        "assignment": "boilers",
        "assignmentUuid": boilers.uuid,
        "priority": 0,
    }


def test_the_higher_priority_wins_the_whole_sensor_and_the_lower_one_is_listed():
    low = assignment("fleet-default", sensor("t1", pollInterval=5000), priority=0)
    high = assignment("plant-3", sensor("t1", pollInterval=1000), priority=10)

    result = render(assignments=[low, high])

    assert result.rendered["t1"]["pollInterval"] == 1000
    assert result.provenance["t1"]["fields"]["pollInterval"]["assignment"] == "plant-3"
    outcomes = {a["assignment"]: a["outcome"] for a in result.provenance["t1"]["assignments"]}
    assert outcomes == {"plant-3": "applied", "fleet-default": "lower priority"}
    assert result.problems == []


def test_equal_priorities_that_disagree_are_a_conflict_and_the_device_keeps_the_sensor_as_it_was():
    a = assignment("a", sensor("t1", pollInterval=1000), sensor("t2"))
    b = assignment("b", sensor("t1", pollInterval=2000))
    before = {"t1": {"id": rendered_sensor_id(DEVICE, "t1"), **sensor("t1", pollInterval=500)}}

    result = render(previous=before, assignments=[a, b])

    assert [p.kind for p in result.problems] == [CONFLICT]
    problem = result.problems[0]
    assert problem.sensor == "t1" and set(problem.assignments) == {a.uuid, b.uuid}
    assert "'a'" in problem.message and "'b'" in problem.message and "equal priority 0" in problem.message
    assert result.rendered["t1"] == before["t1"]  # held, not a silent pick
    assert result.provenance["t1"]["fields"]["pollInterval"] == {"kind": "held", "reason": CONFLICT}
    assert result.rendered["t2"]["pollInterval"] == 5000  # the rest renders

    never_had_it = render(assignments=[a, b])
    assert "t1" not in never_had_it.rendered and "t2" in never_had_it.rendered


def test_equal_priorities_that_agree_are_no_conflict():
    result = render(assignments=[assignment("a", sensor("t1")), assignment("b", sensor("t1"))])
    assert result.problems == []
    assert result.provenance["t1"]["fields"]["name"]["assignment"] == "a"  # the first by name, every time


def test_an_own_sensor_of_the_same_name_wins_and_says_so():
    own = {**sensor("t1", pollInterval=100), "id": str(uuid.uuid4())}
    result = render(own=[own], assignments=[assignment("a", sensor("t1"))])
    assert result.sensors == [own]
    assert [p.kind for p in result.problems] == [SHADOWED]
    assert result.provenance["t1"]["origin"] == "own"
    assert result.provenance["t1"]["assignments"][0]["outcome"] == "shadowed"


def test_overrides_replace_single_fields_and_keys_and_say_where_each_came_from():
    a = assignment("a", sensor("t1", connection={"host": "10.0.0.5", "port": 502}))
    overrides = [override("t1", "pollInterval", 250), override("t1", "connection.host", "10.9.9.9")]

    result = render(assignments=[a], overrides=overrides)

    assert result.rendered["t1"]["pollInterval"] == 250
    assert result.rendered["t1"]["connection"] == {"host": "10.9.9.9", "port": 502}
    fields = result.provenance["t1"]["fields"]
    assert fields["pollInterval"] == {"kind": "override", "override": overrides[0].uuid}
    assert fields["connection.host"] == {"kind": "override", "override": overrides[1].uuid}
    assert fields["connection"]["kind"] == "template"
    assert result.unused_overrides == []


def test_an_override_of_a_sensor_not_rendered_here_is_unused():
    unused = override("elsewhere", "pollInterval", 250)
    result = render(assignments=[assignment("a", sensor("t1"))], overrides=[unused])
    assert result.unused_overrides == [unused]
    assert result.rendered["t1"]["pollInterval"] == 5000


def test_an_override_that_makes_the_sensor_invalid_holds_it():
    a = assignment("a", sensor("t1"))
    before = {"t1": {"id": rendered_sensor_id(DEVICE, "t1"), **sensor("t1")}}
    result = render(previous=before, assignments=[a], overrides=[override("t1", "connection", ["not", "an", "object"])])
    assert [p.kind for p in result.problems] == [INVALID]
    assert "connection" in result.problems[0].message
    assert result.rendered["t1"] == before["t1"]


def test_more_sensors_than_a_device_may_have_holds_the_rendered_ones():
    before = {"t1": {"id": rendered_sensor_id(DEVICE, "t1"), **sensor("t1")}}
    own = [{**sensor("own"), "id": str(uuid.uuid4())}]
    result = render(own=own, previous=before, assignments=[assignment("a", sensor("t1"), sensor("t2"))], sensors_max=2)
    assert [p.kind for p in result.problems] == [LIMIT]
    assert result.sensors == [*own, before["t1"]]


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ("pollInterval", None),
        ("connection.host", None),
        ("metadata.site", None),
        ("name", "Must be one of"),
        ("protocol", "Must be one of"),
        ("dataPoints.x", "Only the keys of"),
        ("connection.", "The key after"),
        ("", "Must be a sensor field"),
        (7, "Must be a sensor field"),
    ],
)
def test_which_fields_an_override_may_set(field, problem):
    found = override_field_problem(field)
    assert (found is None) if problem is None else (problem in found)


def test_an_override_value_is_checked_as_the_field_would_be():
    override_value_validate("pollInterval", 1000)
    override_value_validate("connection.host", {"any": "json"})
    with pytest.raises(ValidationError) as refused:
        override_value_validate("pollInterval", 5)
    assert "value" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        override_value_validate("enabled", "yes")
    assert refused.value.message_dict["value"] == ["Must be a boolean."]
    with pytest.raises(ValidationError) as refused:
        override_value_validate("name", "x")
    assert "field" in refused.value.message_dict
    assert override_apply({"connection": "odd"}, "connection.host", "h") == {"connection": {"host": "h"}}


def test_a_diff_is_by_name_and_field_and_ignores_order():
    one, two = sensor("t1"), sensor("t2")
    assert diff_is_empty(sensors_diff([one, two], [two, one]))
    diff = sensors_diff([one, two], [sensor("t1", pollInterval=100), sensor("t3")])
    assert diff == {
        "added": ["t3"],
        "removed": ["t2"],
        "updated": {"t1": {"pollInterval": {"before": 5000, "after": 100}}},
    }


# --------------------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------------------

KEYS = ("plant", "role", "zone")
VALUES = ("1", "2", "3")
NAMES = ("t1", "t2", "t3", "t4")
SELECTORS = ("", "plant=1", "plant!=1", "role in (1,2)", "role notin (2,3)", "zone", "!zone", "plant=1,role=2")

labels_st = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)
sensor_st = st.builds(
    lambda name, protocol, poll, host, enabled: sensor(
        name, protocol=protocol, pollInterval=poll, connection={"host": host}, enabled=enabled
    ),
    st.sampled_from(NAMES),
    st.sampled_from(["modbus", "can", "opcua", "mqtt"]),
    st.sampled_from([1000, 2000, 5000]),
    st.sampled_from(["10.0.0.1", "10.0.0.2"]),
    st.booleans(),
)
template_st = st.lists(sensor_st, min_size=1, max_size=3, unique_by=lambda s: s["name"])


@st.composite
def assignments_st(draw, min_size=0):
    count = draw(st.integers(min_size, 4))
    return [
        assignment(
            f"a{index}",
            *draw(template_st),
            priority=draw(st.integers(0, 2)),
            selector=draw(st.sampled_from(SELECTORS)),
            version=draw(st.integers(1, 3)),
        )
        for index in range(count)
    ]


override_st = st.one_of(
    st.builds(lambda n, v: override(n, "pollInterval", v), st.sampled_from(NAMES), st.sampled_from([100, 250, 9000])),
    st.builds(lambda n, v: override(n, "enabled", v), st.sampled_from(NAMES), st.booleans()),
    st.builds(lambda n, v: override(n, "connection.host", v), st.sampled_from(NAMES), st.sampled_from(["h1", "h2"])),
    st.builds(lambda n, v: override(n, "metadata.site", v), st.sampled_from(NAMES), st.sampled_from(["x", "y"])),
)
overrides_st = st.lists(override_st, max_size=4, unique_by=lambda o: (o.sensor, o.field))
own_st = st.lists(
    st.builds(lambda s, i: {**s, "id": str(uuid.UUID(int=i))}, sensor_st, st.integers(1, 2**64)),
    max_size=2,
    unique_by=lambda s: s["name"],
)
PROPERTY = settings(derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(own=own_st, labels=labels_st, assignments=assignments_st(), overrides=overrides_st, seed=st.integers(0, 99))
def test_rendering_is_deterministic_whatever_the_order_of_its_inputs(own, labels, assignments, overrides, seed):
    first = render(own=own, labels=labels, assignments=assignments, overrides=overrides)
    shuffled_assignments, shuffled_overrides = list(assignments), list(overrides)
    random.Random(seed).shuffle(shuffled_assignments)
    random.Random(seed + 1).shuffle(shuffled_overrides)
    again = render(own=own, labels=labels, assignments=shuffled_assignments, overrides=shuffled_overrides)

    assert again.sensors == first.sensors
    assert again.provenance == first.provenance
    assert again.problems == first.problems
    # Rendering what it rendered gives the same again: a re-render of an unchanged device changes nothing.
    _, previous = sensors_split(DEVICE, first.sensors)
    settled = render(own=own, previous=previous, labels=labels, assignments=assignments, overrides=overrides)
    assert settled.sensors == first.sensors


@PROPERTY
@given(labels=labels_st, assignments=assignments_st(), overrides=overrides_st)
def test_overrides_always_win(labels, assignments, overrides):
    result = render(labels=labels, assignments=assignments, overrides=overrides)
    held = {p.sensor for p in result.problems}
    for o in overrides:
        if o.sensor not in result.rendered or o.sensor in held:
            continue
        rendered = result.rendered[o.sensor]
        base, _, key = o.field.partition(".")
        assert (rendered[base][key] if key else rendered[base]) == o.value
        assert result.provenance[o.sensor]["fields"][o.field] == {"kind": "override", "override": o.uuid}


@PROPERTY
@given(own=own_st, labels=labels_st, assignments=assignments_st(min_size=1), overrides=overrides_st, pick=st.integers())
def test_removing_an_assignment_removes_exactly_what_it_rendered(own, labels, assignments, overrides, pick):
    removed = assignments[pick % len(assignments)]
    others = [a for a in assignments if a is not removed]
    with_it = render(own=own, labels=labels, assignments=assignments, overrides=overrides)
    _, previous = sensors_split(DEVICE, with_it.sensors)  # what the device has while the assignment exists

    without = render(own=own, previous=previous, labels=labels, assignments=others, overrides=overrides)

    its_names = {s["name"] for s in removed.sensors} if removed.selector.matches(labels) else set()
    others_names = {s["name"] for a in others if a.selector.matches(labels) for s in a.sensors}
    # The device's own sensors never move.
    assert without.sensors[: len(own)] == own
    # What only it rendered is gone; what it did not render is untouched.
    for name in its_names - others_names:
        assert name not in without.rendered
    for name in set(with_it.rendered) - its_names:
        assert without.rendered.get(name) == with_it.rendered[name]
    # And nothing of it lingers: unless a conflict holds a sensor, the result is as if it never existed.
    if not without.problems:
        never = render(own=own, labels=labels, assignments=others, overrides=overrides)
        assert without.sensors == never.sensors
