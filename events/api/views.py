from rest_framework import mixins, viewsets

from events.filtersets import EventFilterSet
from events.models import Event
from events.selectors import event_list
from sensorsync_project.api.pagination import EventCursorPagination

from .serializers import EventSerializer


class EventViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The append-only event log, newest first (read only: nothing in the product updates or deletes events)."""

    queryset = Event.objects.all()
    serializer_class = EventSerializer
    filterset_class = EventFilterSet
    pagination_class = EventCursorPagination

    def get_queryset(self):
        return event_list(device_uuid=self.kwargs.get("device_uuid"))
