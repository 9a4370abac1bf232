"""The decisions of a rollout, as pure functions (plain data in and out): which devices each stage admits, where an
admitted device stands, and whether a stage advances, waits or pauses the rollout."""

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .choices import RolloutDeviceStateChoices as State

PERCENT = "percent"
SELECTOR = "selector"
# The last stage of a rollout narrowed to a labelled group: every other device its assignments select. The change
# reaches them too (a template's new version is the fleet's), so it goes to them as a stage, counted and held to
# the thresholds, not all at once when the group is done.
REST = "rest"
STAGES_MAX = 20

ADVANCE = "advance"
WAIT = "wait"
PAUSE = "pause"


def device_order_key(rollout_uuid: str, device_uuid: str) -> str:
    """Where a device stands in a rollout's admission order: a hash of the rollout and the device, so the order is
    the same at every pass (and after a restart) and unrelated to names, ids or another rollout's order."""
    return hashlib.sha256(f"{rollout_uuid}/{device_uuid}".encode()).hexdigest()


def percent_members(rollout_uuid: str, population: Sequence[tuple[int, str]], percent: int) -> list[int]:
    """The ids of the first ``ceil(percent% x N)`` devices of ``population`` ((id, uuid) pairs) in admission order."""
    ordered = sorted(population, key=lambda pair: device_order_key(rollout_uuid, pair[1]))
    return [pk for pk, _ in ordered[: math.ceil(len(ordered) * percent / 100)]]


def stage_label(stage: Mapping[str, Any]) -> str:
    if PERCENT in stage:
        return f"{stage[PERCENT]}%"
    if REST in stage:
        return "the rest of the fleet"
    return stage[SELECTOR] or "every device"


@dataclass(frozen=True)
class DeviceFacts:
    """What the read model says of an admitted device (``selectors.rollout_device_facts``)."""

    stage: int
    target_version: int | None
    admitted_at: datetime
    draft: bool
    last_seen_at: datetime | None
    last_fetched_version: int | None
    applied_version: int | None
    deployed_version: int | None
    retry_exhausted_version: int | None
    failed_sensor: str | None
    failed_error: str | None


@dataclass(frozen=True)
class Outcome:
    state: str
    reason: str = ""  # why it failed
    fetched: bool = False  # the agent fetched the version (or a later one)
    applied: bool = False  # the agent reports running the version (or a later one), deployed or not


def device_outcome(
    facts: DeviceFacts, *, now: datetime, offline_cutoff: datetime, deadline: timedelta | None
) -> Outcome:
    """Where one admitted device stands. Deployed wins; an offline device is counted apart, never as failed; a
    failed sensor at the version, an exhausted retry budget, or the deadline passed is a failure."""
    version = facts.target_version
    if version is None:
        return Outcome(State.PENDING)
    if facts.draft:
        return Outcome(State.DRAFT)
    applied = facts.applied_version is not None and facts.applied_version >= version
    fetched = applied or (facts.last_fetched_version is not None and facts.last_fetched_version >= version)
    exhausted = facts.retry_exhausted_version is not None and facts.retry_exhausted_version >= version
    if facts.deployed_version is not None and facts.deployed_version >= version and not exhausted:
        return Outcome(State.DEPLOYED, "", True, True)
    if facts.last_seen_at is None or facts.last_seen_at < offline_cutoff:
        return Outcome(State.OFFLINE, "", fetched, applied)
    if exhausted:
        return Outcome(State.FAILED, "retry budget exhausted", fetched, applied)
    if applied and facts.failed_sensor:
        return Outcome(State.FAILED, f"{facts.failed_sensor}: {facts.failed_error or 'failed'}", fetched, applied)
    if deadline is not None and now - facts.admitted_at > deadline:
        return Outcome(State.FAILED, f"not deployed within {int(deadline.total_seconds())} s", fetched, applied)
    if applied:
        return Outcome(State.APPLIED, "", fetched, applied)
    return Outcome(State.FETCHED if fetched else State.PENDING, "", fetched, applied)


# The counts of a stage's progress that follow from the state alone (fetched and applied are the device's facts:
# a device that failed after applying the version counts as applied, and as failed).
_REACHED = {
    "deployed": (State.DEPLOYED,),
    "failed": (State.FAILED,),
    "offline": (State.OFFLINE,),
    "draft": (State.DRAFT,),
}
REASONS_SHOWN = 10


@dataclass
class StageProgress:
    stage: int
    label: str
    targeted: int = 0
    fetched: int = 0
    applied: int = 0
    deployed: int = 0
    failed: int = 0
    offline: int = 0
    draft: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    @property
    def counted(self) -> int:
        """The denominator of the thresholds: offline devices and those in draft mode are left out."""
        return self.targeted - self.offline - self.draft

    @property
    def reason_list(self) -> list[tuple[str, int]]:
        """The reasons for failure, most frequent first (what the pages show)."""
        return self.reasons.most_common(REASONS_SHOWN)

    def add(self, outcome: Outcome) -> None:
        self.targeted += 1
        self.fetched += outcome.fetched
        self.applied += outcome.applied
        for name, states in _REACHED.items():
            if outcome.state in states:
                setattr(self, name, getattr(self, name) + 1)
        if outcome.reason:
            self.reasons[outcome.reason] += 1

    def merge(self, other: "StageProgress") -> None:
        for name in ("targeted", "fetched", "applied", *_REACHED):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "title": self.label,
            "targeted": self.targeted,
            "fetched": self.fetched,
            "applied": self.applied,
            "deployed": self.deployed,
            "failed": self.failed,
            "offline": self.offline,
            "draft": self.draft,
            "reasons": [{"reason": r, "devices": n} for r, n in self.reasons.most_common(REASONS_SHOWN)],
        }


def progress_of(
    stages: Sequence[Mapping[str, Any]], outcomes: Iterable[tuple[int, Outcome]]
) -> tuple[list[StageProgress], StageProgress]:
    """Per-stage progress and the whole rollout's from (stage, outcome) of every admitted device."""
    per_stage = [StageProgress(index, stage_label(stage)) for index, stage in enumerate(stages)]
    for stage, outcome in outcomes:
        if 0 <= stage < len(per_stage):
            per_stage[stage].add(outcome)
    total = StageProgress(-1, "all")
    for each in per_stage:
        total.merge(each)
    return per_stage, total


def error_rate_crossed(total: StageProgress, error_threshold: int) -> bool:
    """Failures over the threshold: failed / (admitted, online, not in draft mode) at or above it (any failure at
    a threshold of 0)."""
    return total.failed > 0 and total.failed * 100 >= error_threshold * total.counted


def stage_verdict(*, stage: StageProgress, total: StageProgress, success_threshold: int, error_threshold: int) -> str:
    """PAUSE when the failures of the whole rollout cross the error threshold; ADVANCE when the stage's online
    devices deployed reach the success threshold (or it has no device); else WAIT. A stage whose devices are all
    offline waits for them."""
    if error_rate_crossed(total, error_threshold):
        return PAUSE
    if stage.targeted == 0:
        return ADVANCE
    if stage.counted <= 0:
        return WAIT
    return ADVANCE if stage.deployed * 100 >= success_threshold * stage.counted else WAIT


def pause_detail(total: StageProgress, error_threshold: int) -> str:
    reasons = "; ".join(f"{reason} ({n})" for reason, n in total.reasons.most_common(3))
    return (
        f"{total.failed} of {total.counted} online devices failed (error threshold {error_threshold}%)"
        + (f": {reasons}" if reasons else "")
        + "."
    )
