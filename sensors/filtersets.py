import django_filters

from sensorsync_project.api.filters import StrictBooleanFilter

from .choices import DeviceSensorDeploymentStatusChoices, DeviceSensorProtocolChoices
from .models import DeviceSensor


class DeviceSensorFilterSet(django_filters.FilterSet):
    protocol = django_filters.ChoiceFilter(choices=DeviceSensorProtocolChoices.choices)
    enabled = StrictBooleanFilter()
    deploymentStatus = django_filters.ChoiceFilter(
        field_name="deployment_status", choices=DeviceSensorDeploymentStatusChoices.choices
    )
    running = StrictBooleanFilter()
    syncedToConfig = StrictBooleanFilter(field_name="synced_to_config")

    class Meta:
        model = DeviceSensor
        fields = ["protocol", "enabled", "deploymentStatus", "running", "syncedToConfig"]


class FleetSensorFilterSet(DeviceSensorFilterSet):
    device = django_filters.UUIDFilter(field_name="device__uuid")

    class Meta(DeviceSensorFilterSet.Meta):
        fields = [*DeviceSensorFilterSet.Meta.fields, "device"]
