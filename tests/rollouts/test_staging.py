"""The rollout's decisions as pure functions: a device's standing, the verdict of a stage, the admission order."""

from datetime import timedelta

from django.utils import timezone

from rollouts.choices import RolloutDeviceStateChoices as State
from rollouts.staging import (
    ADVANCE,
    PAUSE,
    WAIT,
    DeviceFacts,
    device_outcome,
    percent_members,
    progress_of,
    stage_verdict,
)

NOW = timezone.now()
CUTOFF = NOW - timedelta(minutes=5)


def facts(**changes) -> DeviceFacts:
    values = {
        "stage": 0,
        "target_version": 7,
        "admitted_at": NOW - timedelta(minutes=1),
        "draft": False,
        "last_seen_at": NOW,
        "last_fetched_version": 6,
        "applied_version": 6,
        "deployed_version": 6,
        "retry_exhausted_version": None,
        "failed_sensor": None,
        "failed_error": None,
        **changes,
    }
    return DeviceFacts(**values)


def outcome(deadline=None, **changes):
    return device_outcome(facts(**changes), now=NOW, offline_cutoff=CUTOFF, deadline=deadline)


def test_a_devices_standing():
    assert outcome().state == State.PENDING
    assert outcome(target_version=None).state == State.PENDING  # admitted, not rendered yet
    assert outcome(last_fetched_version=7).state == State.FETCHED
    applied = outcome(last_fetched_version=7, applied_version=7)
    assert (applied.state, applied.fetched, applied.applied) == (State.APPLIED, True, True)
    assert outcome(applied_version=8, deployed_version=8).state == State.DEPLOYED  # a later version counts
    failed = outcome(applied_version=7, failed_sensor="temp", failed_error="modbus timeout")
    assert (failed.state, failed.reason, failed.applied) == (State.FAILED, "temp: modbus timeout", True)
    # A failed sensor from before the device applied the version says nothing of the version.
    assert outcome(failed_sensor="temp", failed_error="old").state == State.PENDING
    exhausted = outcome(applied_version=7, deployed_version=8, retry_exhausted_version=7)
    assert (exhausted.state, exhausted.reason) == (State.FAILED, "retry budget exhausted")  # a fallback is no success
    late = outcome(deadline=timedelta(seconds=30))
    assert (late.state, late.reason) == (State.FAILED, "not deployed within 30 s")
    assert outcome(deadline=timedelta(minutes=5)).state == State.PENDING
    # Offline: apart from failures, even past the deadline or with a failed sensor; deployed still wins.
    gone = NOW - timedelta(hours=1)
    assert outcome(last_seen_at=gone, deadline=timedelta(seconds=30)).state == State.OFFLINE
    assert outcome(last_seen_at=None, applied_version=7, failed_sensor="temp").state == State.OFFLINE
    assert outcome(last_seen_at=gone, deployed_version=7).state == State.DEPLOYED
    assert outcome(draft=True, applied_version=7, failed_sensor="temp").state == State.DRAFT


def test_the_verdict_of_a_stage():
    def progress(*states):
        stages, total = progress_of(
            [{"percent": 50}, {"percent": 100}],
            [(stage, outcome(**changes)) for stage, changes in states],
        )
        return stages, total

    deployed = {"applied_version": 7, "deployed_version": 7}
    failed = {"applied_version": 7, "failed_sensor": "temp"}
    offline = {"last_seen_at": None}
    stages, total = progress((0, deployed), (0, deployed), (0, {}), (0, offline))
    # 2 of 3 online deployed: 67%.
    assert stage_verdict(stage=stages[0], total=total, success_threshold=66, error_threshold=10) == ADVANCE
    assert stage_verdict(stage=stages[0], total=total, success_threshold=70, error_threshold=10) == WAIT
    stages, total = progress((0, deployed), (0, failed), (0, offline), (0, offline), (0, deployed), (0, deployed))
    # 1 of 4 online failed: 25%, offline devices left out.
    assert stage_verdict(stage=stages[0], total=total, success_threshold=50, error_threshold=25) == PAUSE
    assert stage_verdict(stage=stages[0], total=total, success_threshold=50, error_threshold=26) == ADVANCE
    stages, total = progress((0, offline), (0, offline))
    assert stage_verdict(stage=stages[0], total=total, success_threshold=0, error_threshold=0) == WAIT
    assert stage_verdict(stage=stages[1], total=total, success_threshold=100, error_threshold=0) == ADVANCE  # empty
    stages, total = progress((0, failed), (0, deployed))
    assert stage_verdict(stage=stages[0], total=total, success_threshold=0, error_threshold=0) == PAUSE
    assert total.reason_list == [("temp: failed", 1)]


def test_the_admission_order_is_stable_and_grows_with_the_percentage():
    devices = [(pk, f"00000000-0000-4000-8000-{pk:012d}") for pk in range(1, 201)]
    first = percent_members("rollout-a", devices, 10)
    assert len(first) == 20 and percent_members("rollout-a", list(reversed(devices)), 10) == first
    assert set(first) < set(percent_members("rollout-a", devices, 50))
    assert len(percent_members("rollout-a", devices[:3], 1)) == 1  # ceil: a stage of 1% is never empty
    assert percent_members("rollout-b", devices, 10) != first  # another rollout, another order
