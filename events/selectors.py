from django.db.models import QuerySet

from .models import Event
from .services import DEVICE_AGGREGATE


def event_list(*, device_uuid=None) -> QuerySet[Event]:
    queryset = Event.objects.all()
    if device_uuid is not None:
        queryset = queryset.filter(aggregate_type=DEVICE_AGGREGATE, aggregate_id=str(device_uuid))
    return queryset
