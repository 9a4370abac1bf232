import django_filters

from .models import Device


class DeviceFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    isActive = django_filters.BooleanFilter(field_name="is_active")
    needsDeployment = django_filters.BooleanFilter(field_name="target_state__needs_deployment")

    class Meta:
        model = Device
        fields = ["name", "isActive", "needsDeployment"]
