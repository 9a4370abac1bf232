import django_filters

from sensorsync_project.api.filters import UTCDateTimeFilter

from .choices import EventTypeChoices
from .models import Event
from .selectors import aggregate_id_normalize


class EventFilterSet(django_filters.FilterSet):
    type = django_filters.MultipleChoiceFilter(choices=EventTypeChoices.choices)
    aggregateType = django_filters.CharFilter(field_name="aggregate_type")
    aggregateId = django_filters.CharFilter(field_name="aggregate_id", method="_aggregate_id")
    correlationId = django_filters.UUIDFilter(field_name="correlation_id")
    since = UTCDateTimeFilter(field_name="created_at", lookup_expr="gte")
    until = UTCDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Event
        fields = ("type", "aggregateType", "aggregateId", "correlationId", "since", "until")

    def _aggregate_id(self, queryset, name, value):
        return queryset.filter(**{name: aggregate_id_normalize(value)})
