import django_filters

from .choices import DeviceSensorDeploymentStatusChoices, DeviceSensorProtocolChoices
from .models import DeviceSensor


class DeviceSensorFilterSet(django_filters.FilterSet):
    protocol = django_filters.ChoiceFilter(choices=DeviceSensorProtocolChoices.choices)
    enabled = django_filters.BooleanFilter()
    deploymentStatus = django_filters.ChoiceFilter(
        field_name="deployment_status", choices=DeviceSensorDeploymentStatusChoices.choices
    )
    running = django_filters.BooleanFilter()
    syncedToConfig = django_filters.BooleanFilter(field_name="synced_to_config")

    class Meta:
        model = DeviceSensor
        fields = ["protocol", "enabled", "deploymentStatus", "running", "syncedToConfig"]


class FleetSensorFilterSet(DeviceSensorFilterSet):
    device = django_filters.UUIDFilter(field_name="device__uuid")

    class Meta(DeviceSensorFilterSet.Meta):
        fields = [*DeviceSensorFilterSet.Meta.fields, "device"]
