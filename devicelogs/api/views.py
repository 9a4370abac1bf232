from rest_framework import generics

from devicelogs import selectors
from devicelogs.filtersets import DeviceLogLineFilterSet
from devicelogs.models import DeviceLogLine
from sensorsync_project.api.pagination import FleetCursorPagination

from .serializers import DeviceLogLineSerializer


class DeviceLogPagination(FleetCursorPagination):
    ordering = "-id"


class DeviceLogView(generics.ListAPIView):
    """The device's log as its agent sent it, newest first: filter by level, source, service, time and text."""

    queryset = DeviceLogLine.objects.all()
    serializer_class = DeviceLogLineSerializer
    filterset_class = DeviceLogLineFilterSet
    pagination_class = DeviceLogPagination

    def get_queryset(self):
        return selectors.device_log_lines(device_uuid=self.kwargs["uuid"])
