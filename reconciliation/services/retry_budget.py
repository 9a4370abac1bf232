"""The retry budget of a device: after SENSORSYNC_RETRY_BUDGET failed applies of one target version, the device is
no longer retried at that version until staff act.

What the real agent does (Iotistica/iotistic ``agent/``, 1a5b2b0d; ``../shared/agent-wire/README.md``): it applies
a target (stores and starts its sensors) when a poll brings content other than what it holds, that is once per new
version and once after each start of the agent (it starts with nothing held); a 304, or the same content again,
applies nothing. It reports the version it last fetched, whether the apply worked or not, with the sensors it
actually runs, and leaves ``config`` out while that has not changed: after a failed apply its reports are identical,
so they are ``unchanged`` (one SELECT, nothing written) and are not counted. So one failed apply is a report that
brings a new result for the version it runs (another version, or another running configuration) and leaves a
sensor failed (``projection._retry_budget_changes``, in the UPDATE the reconciliation makes anyway).

When the budget runs out (``device.retry_budget_exhausted``), the failed rows say so, and the server keeps serving
the same version (same ETag): the agent has nothing new to apply and stops retrying. With
SENSORSYNC_RETRY_BUDGET_FALLBACK, the device falls back instead: a new version with the content of the last version
it fully deployed, as a rollback makes. Staff act with a new target version (any edit, PUT or rollback), which
starts a fresh budget, or a reset (``retry_budget_reset``: the count and the exhaustion are cleared).
"""

import uuid as uuid_lib

from devices.locking import device_events, device_write
from devices.models import DeviceCurrentState, DeviceTargetState, DeviceTargetStateVersion
from devices.services import target_state_store
from events.choices import EventSourceChoices, EventTypeChoices
from events.context import RequestUser, actor_label, audit_context

from ..choices import DriftEpisodeCauseChoices
from .projection import ReconcileResult, current_state_reconcile, device_reconcile
from .targets import config_change_summary

FALLBACK_ACTOR = "system:retry-budget"


def report_reconcile(*, current: DeviceCurrentState, applied_anew: bool) -> ReconcileResult:
    """Reconcile a stored report (``handlers.state_report_reconcile``); when it exhausted the device's retry budget
    and the setting asks, fall back to the last fully deployed version. The caller holds the device lock."""
    result = current_state_reconcile(current=current, actor=f"agent:{current.device.uuid}", applied_anew=applied_anew)
    if result.fallback_version is None:
        return result
    return retry_budget_fallback(current=current, version=result.fallback_version) or result


def retry_budget_fallback(*, current: DeviceCurrentState, version: int) -> ReconcileResult | None:
    """A new target version with ``version``'s content, written by the system and keeping the record of the exhausted
    budget (``retry_fallback_version`` names it); None when that content is what the device is already asked to
    run. The caller holds the device lock."""
    device = current.device
    target = device.target_state
    old = DeviceTargetStateVersion.objects.filter(device=device, version=version).first()
    if old is None or (old.config, old.apps) == (target.config, target.apps):
        return None
    change = {**config_change_summary(target.config, old.config), "rollback_to": version, "retry_exhausted": True}
    with audit_context(source=EventSourceChoices.SYSTEM, actor=FALLBACK_ACTOR):
        target = target_state_store(
            device=device, config=old.config, apps=old.apps, user=None, change=change, keep_retry_budget=True
        )
        DeviceTargetState.objects.filter(pk=target.pk).update(retry_fallback_version=target.version)
        target.retry_fallback_version = target.version
        return device_reconcile(
            device=device,
            target=target,
            current=current,
            actor=FALLBACK_ACTOR,
            cause=DriftEpisodeCauseChoices.TARGET_CHANGED,
        )


def retry_budget_reset(*, uuid: uuid_lib.UUID | str, user: RequestUser) -> DeviceTargetState:
    """Staff clear a device's retry budget: the failed applies counted and the exhaustion, if any. The agent is not
    made to apply anything (its target is unchanged); the next failed applies count from zero. The device's rows
    are re-projected (a failed row no longer says the budget ran out)."""
    with device_write(uuid=uuid) as device:
        target = device.target_state
        cleared = DeviceTargetState.RETRY_BUDGET_CLEARED
        if all(getattr(target, name) == value for name, value in cleared.items()):
            return target
        data = {
            "target_version": target.version,
            "failed_applies": target.failed_applies,
            "failed_applies_version": target.failed_applies_version,
            "exhausted_version": target.retry_exhausted_version,
            "fallback_version": target.retry_fallback_version,
        }
        DeviceTargetState.objects.filter(pk=target.pk).update(**cleared)
        for name, value in cleared.items():
            setattr(target, name, value)
        with device_events(device) as recorder:
            recorder.record(EventTypeChoices.DEVICE_RETRY_BUDGET_RESET, data, actor=actor_label(user))
        device_reconcile(
            device=device,
            target=target,
            current=device.current_state_or_none(),
            actor=actor_label(user),
            cause=DriftEpisodeCauseChoices.MANUAL,
        )
        return target
