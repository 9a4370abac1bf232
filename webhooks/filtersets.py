import django_filters

from events.selectors import aggregate_id_normalize

from .choices import WebhookDeliveryStatusChoices
from .event_types import webhook_event_types
from .models import WebhookDelivery


def _event_type_choices() -> list[tuple[str, str]]:
    return [(entry.name, entry.name) for entry in webhook_event_types()]


class WebhookDeliveryFilterSet(django_filters.FilterSet):
    endpoint = django_filters.UUIDFilter(field_name="endpoint__uuid", help_text="The endpoint's uuid.")
    status = django_filters.ChoiceFilter(choices=WebhookDeliveryStatusChoices.choices)
    eventType = django_filters.ChoiceFilter(field_name="event_type", choices=_event_type_choices)
    device = django_filters.CharFilter(
        field_name="aggregate_id", method="_device", help_text="The uuid of the device the event is about."
    )

    class Meta:
        model = WebhookDelivery
        fields = ("endpoint", "status", "eventType", "device")

    def _device(self, queryset, name, value):
        return queryset.filter(**{name: aggregate_id_normalize(value)})
