import django_filters

from .choices import LogLevelChoices, LogSourceChoices
from .models import DeviceLogLine


class DeviceLogLineFilterSet(django_filters.FilterSet):
    level = django_filters.MultipleChoiceFilter(choices=LogLevelChoices.choices, help_text="Repeat for several.")
    source = django_filters.ChoiceFilter(choices=LogSourceChoices.choices)
    service = django_filters.CharFilter(field_name="service_name", help_text="A container's service name.")
    since = django_filters.IsoDateTimeFilter(field_name="received_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="received_at", lookup_expr="lt")
    q = django_filters.CharFilter(field_name="message", lookup_expr="icontains", help_text="Text in the message.")

    class Meta:
        model = DeviceLogLine
        fields = ("level", "source", "service", "since", "until", "q")
