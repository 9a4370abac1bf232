"""The registry of webhook event types: which events of the log an endpoint may subscribe to, and when one of them
is worth a webhook.

An entry names an event type of the log (``events.choices.EventTypeChoices``) and, where the log appends that type
for more than the transition a receiver wants, a test on the event (``fires``): ``device.config_drift`` is appended
when drift starts and again each time the set of drifting sensors changes, but a webhook goes out only when it
starts. The built-in entries are registered by ``webhooks.apps``; another feature adds its own the same way
(``webhook_event_type_register``, from ``WebhooksConfig.ready``: webhooks is the top layer, so it imports the
feature, never the other way round).
"""

from collections.abc import Callable
from dataclasses import dataclass

from events.choices import EventTypeChoices
from events.models import Event
from rollouts import choices as rollout_events


def _always(event: Event) -> bool:
    return True


@dataclass(frozen=True)
class WebhookEventType:
    name: str  # the event type of the log, and the webhook's ``type``
    description: str
    fires: Callable[[Event], bool] = _always


_registry: dict[str, WebhookEventType] = {}


def webhook_event_type_register(event_type: WebhookEventType) -> None:
    """Make ``event_type`` one an endpoint may subscribe to (registering a name again replaces its entry)."""
    _registry[event_type.name] = event_type


def webhook_event_types() -> list[WebhookEventType]:
    """Every registered type, in the order registered."""
    return list(_registry.values())


def webhook_event_type_for(event: Event) -> WebhookEventType | None:
    """The registered type of ``event`` when the event is one a webhook goes out for, else None."""
    entry = _registry.get(event.type)
    return entry if entry is not None and entry.fires(event) else None


def _drift_started(event: Event) -> bool:
    # ``reconciliation.services.projection`` says on each drift event whether it opened the drift episode.
    return event.data.get("episode_started") is True


def _drift_ended(event: Event) -> bool:
    # The in-sync event that closes an episode names it; a device converging for the first time without ever having
    # drifted (a new device reporting its empty target) ends none.
    return event.data.get("episode") is not None


BUILT_IN = (
    WebhookEventType(
        EventTypeChoices.DEVICE_CONFIG_DRIFT,
        "Drift started: the device stopped running its target exactly (once per drift episode).",
        _drift_started,
    ),
    WebhookEventType(
        EventTypeChoices.DEVICE_IN_SYNC,
        "Drift ended: the device runs its target version exactly again (once per drift episode).",
        _drift_ended,
    ),
    WebhookEventType(
        EventTypeChoices.DEVICE_RETRY_BUDGET_EXHAUSTED,
        "Retry budget exhausted: the device failed to apply one target version too many times and is no longer "
        "retried at it until staff act.",
    ),
)

# A staged rollout's steps (``rollouts``): a receiver is told of each, with the rollout's progress where it has one.
ROLLOUTS = (
    WebhookEventType(
        rollout_events.ROLLOUT_STAGE_STARTED,
        "Rollout stage started: a staged rollout admitted the devices of its next stage.",
    ),
    WebhookEventType(
        rollout_events.ROLLOUT_PAUSED,
        "Rollout paused: by staff, or by itself when failures crossed its error threshold (with the reasons).",
    ),
    WebhookEventType(rollout_events.ROLLOUT_RESUMED, "Rollout resumed by staff."),
    WebhookEventType(
        rollout_events.ROLLOUT_ABORTED,
        "Rollout aborted: its change is taken back and every device it touched returns to what it ran before.",
    ),
    WebhookEventType(rollout_events.ROLLOUT_FINISHED, "Rollout finished: every stage reached its success threshold."),
)
