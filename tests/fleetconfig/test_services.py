"""The fleet configuration's services against a real database: templates and their versions, assignments, overrides,
re-rendering through the target write path (history, events, drafts), render jobs, and what staff edits of
rendered sensors get."""

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from devices.models import Device, DeviceTargetState, DeviceTargetStateVersion
from devices.services import device_labels_update
from events.choices import EventTypeChoices
from events.models import Event
from fleetconfig import services
from fleetconfig.choices import RenderJobStatusChoices as JobStatus
from fleetconfig.choices import RenderProblemKindChoices as Kind
from fleetconfig.models import RenderJob, RenderProblem, SensorTemplateVersion
from fleetconfig.rendering import rendered_sensor_id
from fleetconfig.selectors import device_rendering, render_inputs
from reconciliation.services.sensors import sensor_create, sensor_delete, sensor_update
from reconciliation.services.targets import target_state_rollback, target_state_update
from sensorsync_project.exceptions import PreconditionFailed
from tests.factories import SensorPayloadFactory

from .conftest import desired_sensors, labelled_device, make_template, target_version, template_sensor

pytestmark = pytest.mark.django_db


def assign(template, selector: str, *, name: str = "plant-3", priority: int = 0, **fields):
    return services.assignment_create(
        user=None, name=name, template=str(template.uuid), selector=selector, priority=priority, **fields
    )


# --------------------------------------------------------------------------------------------------------------
# templates
# --------------------------------------------------------------------------------------------------------------


def test_a_template_is_versioned_and_an_identical_change_makes_no_version(superuser):
    template = make_template("boiler-temp", template_sensor("t1"), user=superuser)
    assert template.version == 1
    assert SensorTemplateVersion.objects.get(template=template).sensors == [template_sensor("t1")]

    same = services.sensor_template_update(uuid=template.uuid, user=superuser, sensors=[template_sensor("t1")])
    assert same.instance.version == 1 and same.job is None

    changed = services.sensor_template_update(
        uuid=template.uuid,
        user=superuser,
        sensors=[template_sensor("t1", pollInterval=1000)],
        note="faster",
        if_match='"1"',
    )
    assert changed.instance.version == 2
    assert changed.job is None  # no assignment follows it yet
    assert list(template.versions.values_list("version", "note")) == [(2, "faster"), (1, "")]
    events = Event.objects.filter(aggregate_type="sensor_template", aggregate_id=str(template.uuid)).order_by(
        "sequence"
    )
    assert [(e.type, e.sequence) for e in events] == [
        (EventTypeChoices.SENSOR_TEMPLATE_CREATED, 1),
        (EventTypeChoices.SENSOR_TEMPLATE_UPDATED, 2),
    ]
    assert events[1].data["sensors"][0]["pollInterval"] == 1000 and events[1].metadata["actor"] == superuser.username

    with pytest.raises(PreconditionFailed):
        services.sensor_template_update(
            uuid=template.uuid, user=superuser, sensors=[template_sensor("x")], if_match='"1"'
        )


@pytest.mark.parametrize(
    ("sensors", "field"),
    [
        ([], "sensors"),
        ("nope", "sensors"),
        ([template_sensor("t1"), template_sensor("t1")], "sensors[1].name"),
        ([{**template_sensor("t1"), "id": "6f1c0000-0000-4000-8000-000000000000"}], "sensors[0].id"),
        ([template_sensor("t1", pollInterval=5)], "sensors[0].pollInterval"),
        ([{"name": "t1", "protocol": "modbus"}], "sensors[0].connection"),
    ],
)
def test_a_template_refuses_what_is_no_valid_sensor_list(sensors, field):
    with pytest.raises(ValidationError) as refused:
        services.sensor_template_create(name="bad", sensors=sensors, user=None)
    assert field in refused.value.message_dict
    assert not SensorTemplateVersion.objects.exists()


def test_a_template_name_is_unique_and_a_used_template_is_not_deleted():
    template = make_template("boiler-temp")
    with pytest.raises(ValidationError) as refused:
        make_template("boiler-temp")
    assert "already exists" in refused.value.message_dict["name"][0]
    assignment = assign(template, "plant=3").instance
    with pytest.raises(ValidationError) as refused:
        services.sensor_template_delete(uuid=template.uuid, user=None)
    assert "plant-3" in refused.value.message_dict["template"][0]
    services.assignment_delete(uuid=assignment.uuid, user=None)
    services.sensor_template_delete(uuid=template.uuid, user=None)
    assert not SensorTemplateVersion.objects.exists()


# --------------------------------------------------------------------------------------------------------------
# assignments render through the write path
# --------------------------------------------------------------------------------------------------------------


def test_an_assignment_renders_on_the_devices_its_selector_selects_through_the_write_path(committed, superuser):
    boiler = labelled_device({"plant": "3", "role": "boiler"})
    sensor_create(device_uuid=boiler.uuid, data=SensorPayloadFactory(name="own-1"), user=superuser)
    chiller = labelled_device({"plant": "3", "role": "chiller"})
    template = make_template("boiler-temp", template_sensor("supply-temp"), template_sensor("return-temp"))

    with committed():
        change = assign(template, "plant=3,role=boiler")

    job = RenderJob.objects.get(pk=change.job.pk)
    assert (job.status, job.total, job.processed, job.changed, job.unchanged) == (JobStatus.DONE, 1, 1, 1, 0)
    sensors = desired_sensors(boiler)
    assert list(sensors) == ["own-1", "return-temp", "supply-temp"]
    assert sensors["supply-temp"]["id"] == rendered_sensor_id(boiler.uuid, "supply-temp")
    assert target_version(boiler) == 3 and target_version(chiller) == 1
    history = DeviceTargetStateVersion.objects.get(device=boiler, version=3)
    assert history.change == {"added": ["return-temp", "supply-temp"]}
    updated = Event.objects.filter(aggregate_id=str(boiler.uuid), type=EventTypeChoices.TARGET_STATE_UPDATED).first()
    assert updated.data["version"] == 3 and updated.correlation_id == job.correlation_id
    # The read model shows them pending, as for any staff edit.
    assert set(boiler.sensors.filter(deployment_status="pending").values_list("name", flat=True)) >= {"supply-temp"}

    # Rendering again changes nothing: no device gets a new version when its rendered config did not change.
    with committed():
        again = services.render_request(scope={"all": True}, reason="test", user=None)
    again.refresh_from_db()
    assert (again.processed, again.changed, again.unchanged) == (2, 0, 2)
    assert target_version(boiler) == 3 and target_version(chiller) == 1


def test_a_new_template_version_reaches_the_assignments_following_it_and_not_those_pinned(committed):
    latest_device = labelled_device({"plant": "3"})
    pinned_device = labelled_device({"plant": "4"})
    template = make_template("boiler-temp", template_sensor("t1", pollInterval=5000))
    with committed():
        assign(template, "plant=3", name="follows")
        assign(template, "plant=4", name="pinned", template_version=1)
        change = services.sensor_template_update(
            uuid=template.uuid, user=None, sensors=[template_sensor("t1", pollInterval=1000)]
        )
    assert change.job.scope == {"selectors": ["plant=3"]}
    assert desired_sensors(latest_device)["t1"]["pollInterval"] == 1000
    assert desired_sensors(pinned_device)["t1"]["pollInterval"] == 5000


def test_changing_and_deleting_an_assignment_moves_exactly_what_it_rendered(committed, superuser):
    three = labelled_device({"plant": "3"})
    four = labelled_device({"plant": "4"})
    sensor_create(device_uuid=three.uuid, data=SensorPayloadFactory(name="own-1"), user=superuser)
    own_before = desired_sensors(three)["own-1"]
    template = make_template("boiler-temp", template_sensor("t1"))
    with committed():
        assignment = assign(template, "plant=3").instance
    assert set(desired_sensors(three)) == {"own-1", "t1"}

    with committed():
        change = services.assignment_update(uuid=assignment.uuid, user=None, selector="plant = 4")
    assert change.job.scope == {"selectors": ["plant=3", "plant=4"]}
    assert desired_sensors(three) == {"own-1": own_before}
    assert set(desired_sensors(four)) == {"t1"}

    renamed = services.assignment_update(uuid=assignment.uuid, user=None, name="plant-4")
    assert renamed.job is None  # a new name renders nothing differently

    with committed():
        services.assignment_delete(uuid=assignment.uuid, user=None)
    assert desired_sensors(four) == {}
    assert [e.type for e in Event.objects.filter(aggregate_type="assignment").order_by("id")] == [
        EventTypeChoices.ASSIGNMENT_CREATED,
        EventTypeChoices.ASSIGNMENT_UPDATED,
        EventTypeChoices.ASSIGNMENT_UPDATED,
        EventTypeChoices.ASSIGNMENT_DELETED,
    ]


def test_an_assignment_refuses_bad_fields_all_at_once():
    template = make_template()
    with pytest.raises(ValidationError) as refused:
        services.assignment_create(
            user=None, name="bad name", template="nope", selector="plant in (", priority=1.5, template_version=3
        )
    assert set(refused.value.message_dict) == {"name", "template", "selector", "priority"}
    assert "position" in refused.value.message_dict["selector"][0]
    with pytest.raises(ValidationError) as refused:
        services.assignment_create(user=None, name="a", template=str(template.uuid), selector="", template_version=2)
    assert "1 to 1" in refused.value.message_dict["templateVersion"][0]


def test_label_changes_re_render_the_devices_once_they_commit(committed):
    device = labelled_device({})
    template = make_template("boiler-temp", template_sensor("t1"))
    assign(template, "role=boiler")
    with committed():
        device_labels_update(device_uuid=device.uuid, set={"role": "boiler"}, remove=[], user=None)
    assert set(desired_sensors(device)) == {"t1"}
    job = RenderJob.objects.get(reason="labels changed")
    assert job.scope == {"devices": [device.pk]} and job.status == JobStatus.DONE
    with committed():
        device_labels_update(device_uuid=device.uuid, set={}, remove=["role"], user=None)
    assert desired_sensors(device) == {}


# --------------------------------------------------------------------------------------------------------------
# precedence and conflicts, as staff see them
# --------------------------------------------------------------------------------------------------------------


def test_a_conflict_is_stored_on_the_device_and_both_assignments_until_a_priority_resolves_it(committed):
    device = labelled_device({"plant": "3", "role": "boiler"})
    slow = make_template("slow", template_sensor("t1", pollInterval=5000))
    fast = make_template("fast", template_sensor("t1", pollInterval=1000))
    with committed():
        by_plant = assign(slow, "plant=3", name="by-plant").instance
    version = target_version(device)
    with committed():
        by_role = assign(fast, "role=boiler", name="by-role").instance

    assert target_version(device) == version  # the device keeps the sensor as it was: no silent pick
    assert desired_sensors(device)["t1"]["pollInterval"] == 5000
    problems = RenderProblem.objects.filter(device=device)
    assert {(p.kind, p.assignment_id) for p in problems} == {(Kind.CONFLICT, by_plant.pk), (Kind.CONFLICT, by_role.pk)}
    assert "by-plant" in problems[0].message and "by-role" in problems[0].message
    assert RenderJob.objects.latest("id").with_problems == 1

    with committed():
        services.assignment_update(uuid=by_role.uuid, user=None, priority=10)
    assert desired_sensors(device)["t1"]["pollInterval"] == 1000
    assert not RenderProblem.objects.filter(device=device).exists()
    shown = device_rendering(device_uuid=device.uuid)
    assert shown.rendering.provenance["t1"]["fields"]["pollInterval"]["assignment"] == "by-role"
    assert shown.up_to_date


def test_an_own_sensor_shadows_the_templates_until_it_is_deleted(committed, superuser):
    device = labelled_device({"plant": "3"})
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="t1", pollInterval=250), user=superuser)
    template = make_template("boiler-temp", template_sensor("t1"))
    with committed():
        assign(template, "plant=3")
    assert desired_sensors(device)["t1"]["pollInterval"] == 250
    assert RenderProblem.objects.get(device=device).kind == Kind.SHADOWED

    with committed():
        sensor_delete(device_uuid=device.uuid, name="t1", user=superuser)
    assert desired_sensors(device)["t1"]["id"] == rendered_sensor_id(device.uuid, "t1")
    assert not RenderProblem.objects.filter(device=device).exists()


# --------------------------------------------------------------------------------------------------------------
# staff edits of rendered sensors
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture
def rendered_device(committed, superuser):
    device = labelled_device({"plant": "3"})
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="own-1"), user=superuser)
    with committed():
        assign(make_template("boiler-temp", template_sensor("t1")), "plant=3")
    device.refresh_from_db()
    return device


def test_staff_cannot_edit_or_delete_a_rendered_sensor_on_the_device_and_are_told_about_overrides(
    rendered_device, superuser
):
    version = target_version(rendered_device)
    for attempt in (
        lambda: sensor_update(
            device_uuid=rendered_device.uuid, name="t1", data={"pollInterval": 200}, partial=True, user=superuser
        ),
        lambda: sensor_delete(device_uuid=rendered_device.uuid, name="t1", user=superuser),
    ):
        with pytest.raises(ValidationError) as refused:
            attempt()
        message = refused.value.message_dict["name"][0]
        assert "assignment 'plant-3' from template 'boiler-temp' v1" in message
        assert "override" in message and "/api/v1/sensor-overrides" in message
    with pytest.raises(ValidationError):  # its name is taken
        sensor_create(device_uuid=rendered_device.uuid, data=SensorPayloadFactory(name="t1"), user=superuser)
    assert target_version(rendered_device) == version
    # The device's own sensors stay the staff's to edit.
    sensor_update(
        device_uuid=rendered_device.uuid, name="own-1", data={"pollInterval": 200}, partial=True, user=superuser
    )
    assert desired_sensors(rendered_device)["own-1"]["pollInterval"] == 200


def test_a_whole_document_keeps_the_rendered_sensors_it_leaves_out_and_may_not_change_them(rendered_device, superuser):
    version = target_version(rendered_device)
    own = desired_sensors(rendered_device)["own-1"]
    # A script that writes only the device's own sensors (simulate_fleet does) keeps what the templates render.
    target_state_update(uuid=rendered_device.uuid, user=superuser, config={"sensors": [own]})
    assert target_version(rendered_device) == version
    target_state_update(uuid=rendered_device.uuid, user=superuser, config={"sensors": [{**own, "pollInterval": 300}]})
    assert target_version(rendered_device) == version + 1
    assert set(desired_sensors(rendered_device)) == {"own-1", "t1"}

    rendered = desired_sensors(rendered_device)["t1"]
    with pytest.raises(ValidationError) as refused:
        target_state_update(
            uuid=rendered_device.uuid, user=superuser, config={"sensors": [own, {**rendered, "enabled": False}]}
        )
    assert "config.sensors" in refused.value.message_dict


def test_a_rollback_restores_the_own_sensors_and_keeps_the_rendered_ones(rendered_device, superuser):
    before_render = target_version(rendered_device) - 1  # own-1 only
    sensor_delete(device_uuid=rendered_device.uuid, name="own-1", user=superuser)
    target_state_rollback(uuid=rendered_device.uuid, version=before_render, user=superuser)
    assert set(desired_sensors(rendered_device)) == {"own-1", "t1"}


def test_a_device_in_draft_mode_collects_the_rendered_change_in_its_draft(committed):
    from reconciliation.services.drafts import draft_deploy

    device = labelled_device({"plant": "3"})
    Device.objects.filter(pk=device.pk).update(draft_mode=True)
    with committed():
        assign(make_template("boiler-temp", template_sensor("t1")), "plant=3")
    assert target_version(device) == 1 and desired_sensors(device) == {}
    device.refresh_from_db()
    assert [s["name"] for s in device.target_draft.config["sensors"]] == ["t1"]
    assert device_rendering(device_uuid=device.uuid).up_to_date

    with committed():  # rendering again writes no second draft revision
        services.render_request(scope={"all": True}, reason="test", user=None)
    device.refresh_from_db()
    assert device.target_draft.revision == 1

    draft_deploy(device_uuid=device.uuid, user=None)
    assert set(desired_sensors(device)) == {"t1"}


# --------------------------------------------------------------------------------------------------------------
# overrides
# --------------------------------------------------------------------------------------------------------------


def test_an_override_changes_one_field_on_one_device_at_once_and_goes_away_again(rendered_device, superuser):
    version = target_version(rendered_device)
    change = services.sensor_override_set(
        device_uuid=rendered_device.uuid, sensor_name="t1", field="connection.host", value="10.9.9.9", user=superuser
    )
    assert change.rendered and change.applied
    assert desired_sensors(rendered_device)["t1"]["connection"] == {"host": "10.9.9.9", "port": 502, "unitId": 1}
    assert target_version(rendered_device) == version + 1
    event = Event.objects.filter(
        aggregate_id=str(rendered_device.uuid), type=EventTypeChoices.SENSOR_OVERRIDE_SET
    ).get()
    assert event.data["field"] == "connection.host" and event.metadata["actor"] == superuser.username

    same = services.sensor_override_set(
        device_uuid=rendered_device.uuid, sensor_name="t1", field="connection.host", value="10.9.9.9", user=superuser
    )
    assert not same.rendered and target_version(rendered_device) == version + 1

    services.sensor_override_update(uuid=change.override.uuid, value="10.9.9.8", user=superuser)
    assert desired_sensors(rendered_device)["t1"]["connection"]["host"] == "10.9.9.8"

    services.sensor_override_delete(uuid=change.override.uuid, user=superuser)
    assert desired_sensors(rendered_device)["t1"]["connection"]["host"] == "10.0.0.5"
    assert target_version(rendered_device) == version + 3


def test_an_override_that_makes_the_sensor_invalid_is_refused_and_nothing_is_written(rendered_device):
    version = target_version(rendered_device)
    with pytest.raises(ValidationError) as refused:
        services.sensor_override_set(
            device_uuid=rendered_device.uuid, sensor_name="t1", field="pollInterval", value=5, user=None
        )
    assert "value" in refused.value.message_dict
    with pytest.raises(ValidationError) as refused:
        services.sensor_override_set(
            device_uuid=rendered_device.uuid, sensor_name="bad name", field="name", value="x", user=None
        )
    assert set(refused.value.message_dict) == {"sensor", "field"}
    assert target_version(rendered_device) == version
    assert not rendered_device.sensor_overrides.exists()


def test_an_override_of_a_sensor_not_rendered_here_waits_for_one(rendered_device, committed):
    change = services.sensor_override_set(
        device_uuid=rendered_device.uuid, sensor_name="t2", field="enabled", value=False, user=None
    )
    assert not change.applied and not change.rendered
    template = make_template("second", template_sensor("t2"))
    with committed():
        assign(template, "plant=3", name="second")
    assert desired_sensors(rendered_device)["t2"]["enabled"] is False


# --------------------------------------------------------------------------------------------------------------
# jobs
# --------------------------------------------------------------------------------------------------------------


@override_settings(SENSORSYNC_RENDER_INLINE_MAX_DEVICES=2, SENSORSYNC_RENDER_BATCH_SIZE=2)
def test_a_big_job_waits_for_the_worker_and_runs_in_batches_that_can_stop_and_resume(committed):
    devices = [labelled_device({"plant": "3"}) for _ in range(5)]
    with committed():
        job = assign(make_template("boiler-temp", template_sensor("t1")), "plant=3").job
    job.refresh_from_db()
    assert (job.status, job.total, job.processed) == (JobStatus.QUEUED, 5, 0)
    assert all(desired_sensors(d) == {} for d in devices)
    assert services.render_job_next() == job.pk

    seen = []
    stopped = services.render_job_run(
        job_id=job.pk, progress=lambda j: seen.append(j.processed), should_stop=lambda: True
    )
    assert (stopped.status, stopped.processed, stopped.last_device_id) == (JobStatus.QUEUED, 2, devices[1].pk)
    assert seen == [2]

    done = services.render_job_run(job_id=job.pk, progress=lambda j: seen.append(j.processed))
    assert (done.status, done.processed, done.changed) == (JobStatus.DONE, 5, 5)
    assert seen == [2, 4, 5]
    assert all(set(desired_sensors(d)) == {"t1"} for d in devices)
    assert services.render_job_next() is None
    # A finished job is not taken again.
    assert services.render_job_run(job_id=job.pk).processed == 5


def test_a_job_another_worker_holds_is_left_alone_unless_it_went_quiet(committed):
    from datetime import timedelta

    from django.utils import timezone

    labelled_device({"plant": "3"})
    job = services.render_request(scope={"selector": "plant=3"}, reason="test", user=None)  # not committed: queued
    RenderJob.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING, heartbeat_at=timezone.now())
    assert services.render_job_run(job_id=job.pk).status == JobStatus.RUNNING
    assert services.render_job_next() is None
    RenderJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))
    assert services.render_job_next() == job.pk
    assert services.render_job_run(job_id=job.pk).status == JobStatus.DONE


def test_a_device_changed_since_it_was_read_is_read_and_rendered_again(rendered_device, superuser):
    from fleetconfig.services import _device_render_write

    services.sensor_template_update(
        uuid=services.SensorTemplate.objects.get().uuid, user=None, sensors=[template_sensor("t1", enabled=False)]
    )
    stale = render_inputs([rendered_device.pk])
    sensor_create(device_uuid=rendered_device.uuid, data=SensorPayloadFactory(name="own-2"), user=superuser)

    written, problems = _device_render_write(rendered_device.pk, stale, None)

    assert written and problems == []
    sensors = desired_sensors(rendered_device)
    assert set(sensors) == {"own-1", "own-2", "t1"} and sensors["t1"]["enabled"] is False


def test_a_refused_write_is_counted_and_shown_as_the_devices_problem(rendered_device, committed):
    with override_settings(SENSORSYNC_MAX_SENSORS_PER_DEVICE=2), committed():
        job = assign(make_template("second", template_sensor("t2")), "plant=3", name="second").job
    job.refresh_from_db()
    assert (job.failed, job.with_problems) == (0, 1)  # held by the pure render: the limit is a problem, not a failure
    assert set(RenderProblem.objects.filter(device=rendered_device).values_list("kind", flat=True)) == {Kind.LIMIT}

    # A configuration written around the services (an own sensor that is no valid sensor): the write path refuses
    # the rendered configuration, and the device says why.
    DeviceTargetState.objects.filter(device=rendered_device).update(
        config={
            "sensors": [
                {"id": "6f1c0000-0000-4000-8000-000000000001", "name": "broken", "protocol": "zigbee", "connection": {}}
            ]
        }
    )
    with committed():
        job = services.render_request(scope={"all": True}, reason="repair", user=None)
    job.refresh_from_db()
    assert (job.status, job.failed, job.changed) == (JobStatus.DONE, 1, 0)
    assert str(rendered_device.uuid) in job.errors[0] and "protocol" in job.errors[0]
    problem = RenderProblem.objects.get(device=rendered_device)
    assert problem.kind == Kind.WRITE_FAILED and "protocol" in problem.message

    with pytest.raises(ValidationError):
        services.render_request(scope={"devices": ["not-a-uuid"]}, reason="x", user=None)
    with pytest.raises(ValidationError):
        services.render_request(scope=[], reason="x", user=None)
    with pytest.raises(ValidationError):
        services.render_job_requeue(job_uuid=job.uuid, user=None)


def test_an_empty_selector_renders_on_every_device(committed):
    devices = [labelled_device({}), labelled_device({"plant": "3"})]
    with committed():
        job = assign(make_template("everywhere", template_sensor("t1")), "", name="fleet-default").job
    job.refresh_from_db()
    assert (job.total, job.changed) == (2, 2)
    assert all(set(desired_sensors(d)) == {"t1"} for d in devices)
