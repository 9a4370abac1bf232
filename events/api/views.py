from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.exceptions import NotFound

from devices.selectors import device_exists
from events.filtersets import EventFilterSet
from events.models import Event
from events.selectors import event_list
from sensorsync_project.api.pagination import EventCursorPagination

from .serializers import EventSerializer

_PAGE = EventCursorPagination


@extend_schema_view(
    list=extend_schema(
        description=(
            "The append-only event log, newest first, cursor-paginated (read only: nothing in the product updates "
            f"or deletes events). At most {_PAGE.max_page_size} events a page (`limit`, default {_PAGE.page_size}). "
            f"An event whose `data` is larger than {_PAGE.data_inline_max_bytes} bytes (a `target_state.updated` "
            "event carries the whole config) is listed with `data` null and `dataTruncated` true; `dataSize` "
            "always gives the size. Its whole data is at `GET .../events/{id}`. A page stays under 2 MB."
        )
    ),
    retrieve=extend_schema(description="One event, with its whole `data` however large (`dataTruncated` false)."),
)
class EventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The append-only event log, newest first (read only: nothing in the product updates or deletes events)."""

    queryset = Event.objects.all()
    serializer_class = EventSerializer
    filterset_class = EventFilterSet
    pagination_class = EventCursorPagination
    # Any segment, so that credentials are checked before the id is read; an id that is no event's is a 404.
    lookup_value_regex = r"[^/]+"

    def get_queryset(self):
        return event_list(
            device_uuid=self.kwargs.get("device_uuid"),
            data_inline_max_bytes=None if self.action == "retrieve" else _PAGE.data_inline_max_bytes,
        )

    def list(self, request, *args, **kwargs):
        device_uuid = self.kwargs.get("device_uuid")
        if device_uuid is not None and not device_exists(uuid=device_uuid):
            raise NotFound("No such device.")  # as the device's other endpoints answer
        return super().list(request, *args, **kwargs)
