from typing import cast

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response

from devices.selectors import device_exists
from reconciliation.services.sensors import DraftedSensor, sensor_create, sensor_delete, sensor_update
from sensors import selectors
from sensors.filtersets import DeviceSensorFilterSet, FleetSensorFilterSet
from sensors.models import DeviceSensor
from sensors.selectors import ListedSensor
from sensorsync_project.api.errors import error_body
from sensorsync_project.api.pagination import FleetCursorPagination
from sensorsync_project.api.schema import IF_MATCH

from .serializers import DeviceSensorSerializer, FleetSensorSerializer, SensorWriteSerializer

NAME_REGEX = r"[A-Za-z0-9._-]{1,255}"


def _written(row: DeviceSensor | DraftedSensor, code: int = status.HTTP_200_OK) -> Response:
    """A write's answer: the row as the list shows it, and the new target ETag (for the next If-Match); for a
    device in draft mode, 202 and the sensor as the draft has it, with the draft's ETag."""
    if isinstance(row, DraftedSensor):
        body = {"draft": True, "deviceUuid": str(row.device.uuid), "name": row.name, "sensor": row.sensor}
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"ETag": row.etag})
    listed = cast(ListedSensor, row)
    listed.device_uuid = row.device.uuid
    listed.device_draft_config = None  # the device has no draft: the edit was published
    return Response(DeviceSensorSerializer(listed).data, status=code, headers={"ETag": row.device.target_state.etag})


@extend_schema_view(
    create=extend_schema(request=SensorWriteSerializer, parameters=[IF_MATCH], responses={201: DeviceSensorSerializer}),
    update=extend_schema(request=SensorWriteSerializer, parameters=[IF_MATCH]),
    partial_update=extend_schema(request=SensorWriteSerializer, parameters=[IF_MATCH]),
    destroy=extend_schema(parameters=[IF_MATCH]),
)
class DeviceSensorViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """One device's sensors. Reads come from the read model; writes go to the target configuration first."""

    queryset = DeviceSensor.objects.all()
    serializer_class = DeviceSensorSerializer
    filterset_class = DeviceSensorFilterSet
    lookup_field = "name"
    lookup_value_regex = NAME_REGEX

    def get_queryset(self):
        return selectors.sensor_list(device_uuid=self.kwargs["device_uuid"]).order_by("name")

    def list(self, request, *args, **kwargs):
        if not device_exists(uuid=self.kwargs["device_uuid"]):
            return Response(error_body("not_found", "No such device."), status=status.HTTP_404_NOT_FOUND)
        return super().list(request, *args, **kwargs)

    def create(self, request, device_uuid=None):
        row = sensor_create(
            device_uuid=device_uuid,
            data=request.data,
            user=request.user,
            if_match=request.headers.get("If-Match"),
        )
        return _written(row, status.HTTP_201_CREATED)

    def update(self, request, device_uuid=None, name=None, partial=False):
        row = sensor_update(
            device_uuid=device_uuid,
            name=name,
            data=request.data,
            partial=partial,
            user=request.user,
            if_match=request.headers.get("If-Match"),
        )
        return _written(row)

    def partial_update(self, request, device_uuid=None, name=None):
        return self.update(request, device_uuid=device_uuid, name=name, partial=True)

    def destroy(self, request, device_uuid=None, name=None):
        sensor_delete(device_uuid=device_uuid, name=name, user=request.user, if_match=request.headers.get("If-Match"))
        return Response(status=status.HTTP_204_NO_CONTENT)


class FleetSensorViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """The fleet-wide read model: what runs where, what is pending, what failed and why."""

    queryset = DeviceSensor.objects.all()
    serializer_class = FleetSensorSerializer
    filterset_class = FleetSensorFilterSet
    pagination_class = FleetCursorPagination

    def get_queryset(self):
        return selectors.sensor_list()
