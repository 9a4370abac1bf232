from django.apps import AppConfig


class DevicesConfig(AppConfig):
    name = "devices"

    def ready(self) -> None:
        from events.choices import EventTypeChoices
        from events.retention import snapshot_folder_register
        from events.services import DEVICE_AGGREGATE

        from .selectors import target_history_fold

        # Retention keeps each device's target history in its snapshot, for replay_events --check.
        snapshot_folder_register(
            DEVICE_AGGREGATE, event_types=[EventTypeChoices.TARGET_STATE_UPDATED], fold=target_history_fold
        )
