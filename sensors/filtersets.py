import django_filters

from sensorsync_project.api.filters import SelectorFilter, StrictBooleanFilter

from .choices import DeviceSensorDeploymentStatusChoices, DeviceSensorHealthStatusChoices, DeviceSensorProtocolChoices
from .models import DeviceSensor

# The health a filter can ask for: the model's "" (no health reported) is spelled "unknown" on the query string,
# where an empty value means "no filter".
HEALTH_UNKNOWN = "unknown"
HEALTH_STATUS_FILTER_CHOICES = [
    (value or HEALTH_UNKNOWN, label) for value, label in DeviceSensorHealthStatusChoices.choices
]


class DeviceSensorFilterSet(django_filters.FilterSet):
    protocol = django_filters.ChoiceFilter(choices=DeviceSensorProtocolChoices.choices)
    enabled = StrictBooleanFilter()
    deploymentStatus = django_filters.ChoiceFilter(
        field_name="deployment_status", choices=DeviceSensorDeploymentStatusChoices.choices
    )
    running = StrictBooleanFilter()
    syncedToConfig = StrictBooleanFilter(field_name="synced_to_config")
    healthStatus = django_filters.ChoiceFilter(
        field_name="health_status",
        choices=HEALTH_STATUS_FILTER_CHOICES,
        method="filter_health_status",
        help_text="The adapter's health: online, offline, disabled, or unknown (no health reported).",
    )
    selector = SelectorFilter(device_field="device_id")

    class Meta:
        model = DeviceSensor
        fields: tuple[str, ...] = (
            "protocol",
            "enabled",
            "deploymentStatus",
            "running",
            "syncedToConfig",
            "healthStatus",
            "selector",
        )

    def filter_health_status(self, queryset, name, value):
        return queryset.filter(**{name: "" if value == HEALTH_UNKNOWN else value})


class FleetSensorFilterSet(DeviceSensorFilterSet):
    device = django_filters.UUIDFilter(field_name="device__uuid")

    class Meta(DeviceSensorFilterSet.Meta):
        fields = (*DeviceSensorFilterSet.Meta.fields, "device")
