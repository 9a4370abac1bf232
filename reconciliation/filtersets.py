import django_filters

from sensors.choices import DeviceSensorProtocolChoices
from sensorsync_project.api.filters import StrictBooleanFilter, UTCDateTimeFilter

from .choices import DriftEpisodeCauseChoices
from .models import DriftEpisode


class DriftEpisodeFilterSet(django_filters.FilterSet):
    device = django_filters.UUIDFilter(field_name="device__uuid")
    open = StrictBooleanFilter(field_name="ended_at", lookup_expr="isnull")
    cause = django_filters.ChoiceFilter(choices=DriftEpisodeCauseChoices.choices)
    protocol = django_filters.ChoiceFilter(
        field_name="protocols", lookup_expr="has_key", choices=DeviceSensorProtocolChoices.choices
    )
    since = UTCDateTimeFilter(field_name="started_at", lookup_expr="gte")

    class Meta:
        model = DriftEpisode
        fields = ("device", "open", "cause", "protocol", "since")
