"""A rollout through its services: stages admit devices in a stable order, the rest keep the old version, the
thresholds advance and pause it, a deadline and offline devices count as the docs say, abort takes it back."""

from collections import Counter
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone

from devices.labels import Selector
from devices.models import Device, DeviceTargetDraft, DeviceTargetState
from devices.services import devices_draft_mode_set
from events.models import Event
from fleetconfig import services as fleet
from fleetconfig.models import Assignment, AssignmentHold
from fleetconfig.selectors import render_inputs
from rollouts import services
from rollouts.models import Rollout, RolloutDevice
from rollouts.selectors import rollout_progress
from rollouts.staging import percent_members
from tests.fleetconfig.conftest import template_sensor

from .conftest import converge, fail, poll_of

pytestmark = pytest.mark.django_db


def admitted(rollout) -> set[int]:
    return set(RolloutDevice.objects.filter(rollout=rollout).values_list("device_id", flat=True))


def test_stages_admit_devices_in_a_stable_order_and_the_rest_keep_the_old_version(fleet_of, start, drive):
    template, devices = fleet_of({"site=a": 10, "site=b": 10})
    before = {d.pk: DeviceTargetState.objects.get(device=d).version for d in devices}
    rollout = start(template)

    # Created: the template has v2, but nobody renders it yet.
    assert template.versions.count() == 2
    assert {poll_of(d) for d in devices} == {1000}
    assert {d.pk: DeviceTargetState.objects.get(device=d).version for d in devices} == before

    [step] = drive()
    assert (step.outcome, step.admitted) == ("admitted", 2)  # ceil(10% of 20)
    first = admitted(rollout)
    assert {d.pk for d in devices if poll_of(d) == 2000} == first
    assert all(DeviceTargetState.objects.get(device_id=pk).version == before[pk] + 1 for pk in first)

    # Not deployed yet: the driver waits, admitting nothing more.
    assert drive()[0].outcome == "waiting"
    converge([d for d in devices if d.pk in first])
    [step] = drive()
    assert (step.outcome, step.admitted) == ("admitted", 8)  # stage 2: 50%, the first two included
    second = admitted(rollout)
    assert first < second and len(second) == 10

    converge(devices)  # the ten not admitted have nothing new: they still run v1's sensors
    [step] = drive()
    assert (step.outcome, step.admitted) == ("admitted", 10)  # stage 3: every device
    converge(devices)
    [step] = drive()
    rollout.refresh_from_db()
    assert (step.outcome, rollout.status) == ("finished", "finished")
    assert {poll_of(d) for d in devices} == {2000}
    assert not AssignmentHold.objects.exists()
    types = list(Event.objects.filter(aggregate_id=str(rollout.uuid)).order_by("id").values_list("type", flat=True))
    assert types == ["rollout.created", *["rollout.stage_started"] * 3, "rollout.finished"]

    # The order is a hash of (rollout, device): the same again for the same rollout, whatever the device ids.

    pairs = [(d.pk, str(d.uuid)) for d in devices]
    assert set(percent_members(str(rollout.uuid), pairs, 10)) == first
    assert set(percent_members(str(rollout.uuid), list(reversed(pairs)), 10)) == first


def test_failures_over_the_error_threshold_pause_it_with_the_reasons(fleet_of, start, drive):
    template, devices = fleet_of({"site=a": 10, "site=b": 10})
    rollout = start(template, stages=[{"selector": "site=a"}, {"percent": 100}], error_threshold=20)
    drive()
    group = [d for d in devices if d.pk in admitted(rollout)]
    assert len(group) == 10
    fail(group[:3])
    converge(group[3:])
    [step] = drive()
    rollout.refresh_from_db()
    assert (step.outcome, rollout.status, rollout.pause_reason) == ("paused", "paused", "threshold")
    assert "3 of 10 online devices failed" in rollout.pause_detail and "temp" in rollout.pause_detail
    progress = rollout_progress(rollout)
    stage = progress.stages[0].as_dict()
    assert (stage["targeted"], stage["applied"], stage["deployed"], stage["failed"]) == (10, 10, 7, 3)
    assert stage["reasons"] == [{"reason": "temp: Reported without this sensor.", "devices": 3}] or (
        stage["reasons"][0]["devices"] == 3 and stage["reasons"][0]["reason"].startswith("temp: ")
    )
    # Paused: a pass admits nothing; the other group still runs the old version.
    assert drive() == []
    assert {poll_of(d) for d in devices if d not in group} == {1000}
    event = Event.objects.filter(type="rollout.paused").get()
    assert event.data["reason"] == "threshold" and event.data["progress"]["failed"] == 3

    # Resumed as it is, the failures still cross the threshold: it pauses again.
    services.rollout_resume(uuid=rollout.uuid, user=None)
    assert drive()[0].outcome == "paused"
    # Resumed with a higher error threshold (and a lower success one), it goes on.
    services.rollout_resume(uuid=rollout.uuid, user=None, error_threshold=50, success_threshold=70)
    assert drive()[0].outcome == "admitted"
    assert {poll_of(d) for d in devices} == {2000}


def test_abort_brings_every_touched_device_back_and_keeps_the_assignment_on_the_old_sensors(
    fleet_of, start, drive, django_capture_on_commit_callbacks
):
    template, devices = fleet_of({"site=a": 10, "site=b": 10})
    before = {d.pk: DeviceTargetState.objects.get(device=d) for d in devices}
    rollout = start(template, stages=[{"percent": 50}, {"percent": 100}])
    drive()
    touched = admitted(rollout)
    assert len(touched) == 10
    fail([d for d in devices if d.pk in touched])

    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_abort(uuid=rollout.uuid, user=None)
    rollout.refresh_from_db()
    assert rollout.status == "aborted"
    for device in devices:
        target = DeviceTargetState.objects.get(device=device)
        old = before[device.pk]
        assert target.config["sensors"] == old.config["sensors"]  # the content it had before
        # A touched device gets a new version with the old content; the others were never changed.
        assert target.version == (old.version + 2 if device.pk in touched else old.version)
    template.refresh_from_db()
    assert template.version == 3  # v3 = v1's sensors: a later re-render does not bring v2 back
    assert template.versions.get(version=3).sensors == template.versions.get(version=1).sensors
    assert not AssignmentHold.objects.exists()
    assert Event.objects.filter(type="rollout.aborted", data__devicesTouched=10).exists()
    with pytest.raises(ValidationError):
        services.rollout_abort(uuid=rollout.uuid, user=None)
    for command in ("rebuild_read_model", "replay_events"):
        call_command(command, "--check")


def test_offline_devices_are_counted_apart_and_the_deadline_fails_the_others(fleet_of, start, drive):
    template, devices = fleet_of({"site=a": 10})
    rollout = start(template, stages=[{"percent": 100}], deadline_seconds=60, error_threshold=50)
    drive()
    long_ago = timezone.now() - timedelta(hours=1)
    Device.objects.filter(pk__in=[d.pk for d in devices[:4]]).update(last_seen_at=long_ago)
    converge(devices[4:7])
    progress = rollout_progress(rollout).total
    assert (progress.targeted, progress.offline, progress.deployed, progress.failed) == (10, 4, 3, 0)
    assert drive()[0].outcome == "waiting"  # 3 of 6 online deployed: under 100%

    # After the deadline the three online devices not deployed are failed; the offline four are not.
    RolloutDevice.objects.filter(rollout=rollout).update(admitted_at=timezone.now() - timedelta(seconds=61))
    progress = rollout_progress(rollout).total
    assert (progress.offline, progress.failed) == (4, 3)
    assert progress.reasons == {"not deployed within 60 s": 3}
    assert drive()[0].outcome == "paused"  # 3 of 6 = 50%


def test_an_assignment_change_rolls_out_and_aborts_to_its_old_pin(fleet_of, drive, django_capture_on_commit_callbacks):

    template, devices = fleet_of({"site=a": 4})
    assignment = Assignment.objects.get()
    with django_capture_on_commit_callbacks(execute=True):
        fleet.sensor_template_update(
            uuid=template.uuid, user=None, sensors=[template_sensor("temp", pollInterval=3000)]
        )
        fleet.assignment_update(uuid=assignment.uuid, user=None, template_version=1)
    assert {poll_of(d) for d in devices} == {1000}
    with django_capture_on_commit_callbacks(execute=True):
        rollout = services.rollout_create(
            user=None,
            name="pin-2",
            kind="assignment",
            assignment=str(assignment.uuid),
            template_version=2,
            stages=[{"percent": 50}, {"percent": 100}],
        )
    assert {poll_of(d) for d in devices} == {1000}
    drive()
    assert sorted(poll_of(d) for d in devices) == [1000, 1000, 3000, 3000]
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_abort(uuid=rollout.uuid, user=None)
    assignment.refresh_from_db()
    assert assignment.template_version == 1
    assert {poll_of(d) for d in devices} == {1000}


def test_bad_settings_are_refused_naming_the_field_and_nothing_is_written(fleet_of):

    template, _ = fleet_of({"site=a": 2})
    cases = [
        ({"stages": [{"percent": 50}, {"percent": 10}]}, "stages[1].percent"),
        ({"stages": [{"selector": "site in ("}]}, "stages[0].selector"),
        ({"stages": []}, "stages"),
        ({"error_threshold": 101}, "errorThreshold"),
        ({"deadline_seconds": 0}, "deadlineSeconds"),
        ({"selector": "=x"}, "selector"),
        ({"kind": "everything"}, "kind"),
        ({"sensors": [template_sensor("temp", pollInterval=1000)]}, "sensors"),  # the latest version's: no change
        ({"template": "not-a-uuid"}, "template"),
    ]
    for changes, key in cases:
        arguments = {
            "user": None,
            "name": "r",
            "kind": "template",
            "template": str(template.uuid),
            "sensors": [template_sensor("temp", pollInterval=2000)],
            **changes,
        }
        with pytest.raises(ValidationError) as caught:
            services.rollout_create(**arguments)
        assert key in caught.value.message_dict, (changes, caught.value.message_dict)
    assert not Rollout.objects.exists() and template.versions.count() == 1 and not AssignmentHold.objects.exists()


def test_a_second_change_of_a_held_template_is_refused(fleet_of, start):

    template, _ = fleet_of({"site=a": 2})
    start(template)
    with pytest.raises(ValidationError) as caught:
        fleet.sensor_template_update(
            uuid=template.uuid, user=None, sensors=[template_sensor("temp", pollInterval=9000)]
        )
    assert "going out in stages" in str(caught.value)


def test_a_device_in_draft_mode_gets_the_change_in_its_draft_and_is_counted_apart(fleet_of, start, drive):

    template, devices = fleet_of({"site=a": 4, "site=d": 1})
    devices_draft_mode_set(selector=Selector.parse("site=d"), enabled=True, user=None)
    drafting = devices[-1]
    before = DeviceTargetState.objects.get(device=drafting).version
    rollout = start(template, stages=[{"percent": 100}])
    drive()
    # Its published target is untouched; its draft has the new version's sensors.
    assert DeviceTargetState.objects.get(device=drafting).version == before
    draft = DeviceTargetDraft.objects.get(device=drafting)
    assert next(s for s in draft.config["sensors"] if s["name"] == "temp")["pollInterval"] == 2000
    converge(devices[:4])
    total = rollout_progress(rollout).total
    assert (total.targeted, total.draft, total.deployed, total.failed) == (5, 1, 4, 0)
    assert drive()[0].outcome == "finished"  # 4 of 4 counted deployed


def test_rendering_with_held_assignments_reads_a_constant_number_of_queries(
    fleet_of, start, drive, django_assert_num_queries
):
    template, devices = fleet_of({"site=a": 30})
    start(template, stages=[{"percent": 10}, {"percent": 100}])
    drive()
    ids = [d.pk for d in devices]
    # Desired states, labels, overrides, the assignments (holds joined), their versions' sensors, the releases.
    for batch in (ids[:5], ids):
        with django_assert_num_queries(6):
            inputs = render_inputs(batch)
        rendered_polls = {inputs.render(pk).rendered["temp"]["pollInterval"] for pk in batch}
        assert rendered_polls <= {1000, 2000}
    inputs = render_inputs(ids)
    polls = Counter(inputs.render(pk).rendered["temp"]["pollInterval"] for pk in ids)
    assert polls == {1000: 27, 2000: 3}


def test_a_rollout_narrowed_to_a_group_reaches_the_rest_of_the_fleet_as_a_last_stage(fleet_of, start, drive):
    """The template's new version is the fleet's: after the group, the other devices take it as a stage of their
    own, counted and held to the thresholds, never all at once when the group is done."""
    template, devices = fleet_of({"site=a": 4, "site=b": 6})
    group = {d.pk for d in devices[:4]}
    rollout = start(template, selector="site=a", stages=[{"percent": 50}, {"percent": 100}])
    assert rollout.stages == [{"percent": 50}, {"percent": 100}, {"rest": True}]

    assert drive()[0].admitted == 2
    converge(devices)
    assert drive()[0].admitted == 2  # the rest of the group
    assert admitted(rollout) == group
    assert {d.pk for d in devices if poll_of(d) == 2000} == group  # site=b still on the old version
    converge(devices)
    [step] = drive()
    assert (step.outcome, step.admitted) == ("admitted", 6)  # the rest of the fleet, as the last stage
    rollout.refresh_from_db()
    assert rollout.status == "running"
    assert [stage.label for stage in rollout_progress(rollout).stages] == ["50%", "100%", "the rest of the fleet"]

    fail(devices[4:])  # the rest fails: the thresholds hold there too
    [step] = drive()
    rollout.refresh_from_db()
    assert (step.outcome, rollout.status) == ("paused", "paused")


def test_the_rest_stage_is_accepted_only_last():
    assert services.stages_validate([{"percent": 10}, {"rest": True}]) == [{"percent": 10}, {"rest": True}]
    with pytest.raises(ValidationError, match="stages"):
        services.stages_validate([{"rest": True}, {"percent": 10}])
