"""The webhooks app, the top layer: it follows the event log of every app below it and imports their domains; none
imports it. At start it registers its event sink (the outbox) and the built-in webhook event types."""

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from events.services import event_sink_register

        from .event_types import BUILT_IN, ROLLOUTS, webhook_event_type_register
        from .services import webhook_deliveries_enqueue

        for event_type in (*BUILT_IN, *ROLLOUTS):
            webhook_event_type_register(event_type)
        event_sink_register("webhooks", webhook_deliveries_enqueue)
