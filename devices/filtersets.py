import django_filters

from sensorsync_project.api.filters import SelectorFilter, StrictBooleanFilter

from .models import Device


class DeviceFilterSet(django_filters.FilterSet):
    name = django_filters.CharFilter(lookup_expr="icontains")
    isActive = StrictBooleanFilter(field_name="is_active")
    needsDeployment = StrictBooleanFilter(field_name="target_state__needs_deployment")
    registeredBy = django_filters.UUIDFilter(
        field_name="provisioned_by__uuid", help_text="Devices registered with this provisioning key (its uuid)."
    )
    selector = SelectorFilter()
    draftMode = StrictBooleanFilter(field_name="draft_mode")
    hasDraft = StrictBooleanFilter(
        field_name="target_draft", lookup_expr="isnull", exclude=True, help_text="Devices with an undeployed draft."
    )

    class Meta:
        model = Device
        fields = ("name", "isActive", "needsDeployment", "registeredBy", "selector", "draftMode", "hasDraft")
