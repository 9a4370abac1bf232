from django.db.models import F, QuerySet

from .models import DeviceSensor


def sensor_list(*, device_uuid=None) -> QuerySet[DeviceSensor]:
    """Read-model rows with the device uuid joined in (the API shows it on every row)."""
    queryset = DeviceSensor.objects.annotate(device_uuid=F("device__uuid"))
    if device_uuid is not None:
        queryset = queryset.filter(device__uuid=device_uuid)
    return queryset
