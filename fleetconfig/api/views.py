import uuid as uuid_lib

from django.core.exceptions import ValidationError
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from devices.models import Device
from fleetconfig import selectors, services
from fleetconfig.filtersets import (
    AssignmentFilterSet,
    RenderJobFilterSet,
    RenderProblemFilterSet,
    SensorOverrideFilterSet,
)
from fleetconfig.models import (
    Assignment,
    DeviceConfiguration,
    RenderJob,
    RenderProblem,
    SensorOverride,
    SensorTemplate,
)
from fleetconfig.rendering import AssignmentInput
from sensorsync_project.api.input import body_fields
from sensorsync_project.api.pagination import FleetCursorPagination
from sensorsync_project.api.routers import UUID_REGEX

from .serializers import (
    AssignmentChangeSerializer,
    AssignmentDeleteSerializer,
    AssignmentDetailSerializer,
    AssignmentSerializer,
    AssignmentWriteSerializer,
    DeviceRenderingSerializer,
    PreviewSerializer,
    RenderJobRequestSerializer,
    RenderJobSerializer,
    RenderProblemSerializer,
    SensorOverrideChangeSerializer,
    SensorOverrideSerializer,
    SensorOverrideValueSerializer,
    SensorOverrideWriteSerializer,
    SensorTemplateChangeSerializer,
    SensorTemplateSerializer,
    SensorTemplateVersionSerializer,
    SensorTemplateWriteSerializer,
    TemplatePreviewRequestSerializer,
)

TEMPLATE_ETAG = OpenApiParameter(
    "If-Match",
    location=OpenApiParameter.HEADER,
    required=False,
    description="The template's ETag (its version); the write is refused with 412 if it changed since.",
)
PREVIEW_LIMIT = OpenApiParameter(
    "limit",
    int,
    required=False,
    description=f"How many changing devices to list (default {selectors.PREVIEW_SHOWN_DEFAULT}, at most "
    f"{selectors.PREVIEW_SHOWN_MAX}); the counts cover them all.",
)
TEMPLATE_FIELDS = {"name": "name", "description": "description", "sensors": "sensors", "note": "note"}
ASSIGNMENT_FIELDS = {
    "name": "name",
    "description": "description",
    "template": "template",
    "templateVersion": "template_version",
    "selector": "selector",
    "priority": "priority",
}


def _preview_limit(request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return selectors.PREVIEW_SHOWN_DEFAULT
    if not raw.isdigit() or not 0 <= int(raw) <= selectors.PREVIEW_SHOWN_MAX:
        raise ValidationError({"limit": [f"Must be a whole number from 0 to {selectors.PREVIEW_SHOWN_MAX}."]})
    return int(raw)


def _preview_response(request, devices, assignments: list[AssignmentInput]) -> Response:
    preview = selectors.change_preview(devices=devices, assignments=assignments, shown=_preview_limit(request))
    return Response(PreviewSerializer(preview).data)


class NewestFirstPagination(FleetCursorPagination):
    ordering = "-id"


@extend_schema_view(
    create=extend_schema(request=SensorTemplateWriteSerializer, responses={201: SensorTemplateSerializer}),
    update=extend_schema(
        request=SensorTemplateWriteSerializer, parameters=[TEMPLATE_ETAG], responses=SensorTemplateChangeSerializer
    ),
    partial_update=extend_schema(
        request=SensorTemplateWriteSerializer, parameters=[TEMPLATE_ETAG], responses=SensorTemplateChangeSerializer
    ),
    destroy=extend_schema(responses={204: None, 400: OpenApiResponse(description="Assignments still use it")}),
)
class SensorTemplateViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Sensor templates: named, versioned definitions of sensors. Changing a template's sensors makes a new version,
    which every assignment following it renders on its devices (``renderJob``)."""

    queryset = SensorTemplate.objects.all()
    serializer_class = SensorTemplateSerializer
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX

    def get_queryset(self):
        return selectors.template_list()

    def permission_for(self, request):
        if self.action in ("versions", "preview"):
            return SensorTemplate, "view"
        return SensorTemplate, None

    def retrieve(self, request, *args, **kwargs):
        response = super().retrieve(request, *args, **kwargs)
        response["ETag"] = f'"{response.data["version"]}"'
        return response

    def create(self, request):
        fields = body_fields(request.data, TEMPLATE_FIELDS, required=("name", "sensors"))
        template = services.sensor_template_create(**fields, user=request.user)
        shown = selectors.template_list().get(pk=template.pk)
        return Response(
            SensorTemplateSerializer(shown).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/sensor-templates/{template.uuid}", "ETag": f'"{template.version}"'},
        )

    def update(self, request, uuid=None, partial=False):
        fields = body_fields(request.data, TEMPLATE_FIELDS, required=() if partial else ("name", "sensors"))
        change = services.sensor_template_update(
            uuid=uuid, user=request.user, if_match=request.headers.get("If-Match"), **fields
        )
        shown = selectors.template_list().get(pk=change.instance.pk)
        return Response(
            SensorTemplateChangeSerializer(shown, context={"job": change.job}).data,
            headers={"ETag": f'"{shown.version}"'},
        )

    def partial_update(self, request, uuid=None):
        return self.update(request, uuid=uuid, partial=True)

    def destroy(self, request, uuid=None):
        services.sensor_template_delete(uuid=uuid, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(responses=SensorTemplateVersionSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def versions(self, request, uuid=None):
        """Every version of the template, newest first: its sensors, who made it and why."""
        if not SensorTemplate.objects.filter(uuid=uuid).exists():
            raise SensorTemplate.DoesNotExist
        page = self.paginate_queryset(selectors.template_versions(template_uuid=uuid))
        return self.get_paginated_response(SensorTemplateVersionSerializer(page, many=True).data)

    @extend_schema(request=TemplatePreviewRequestSerializer, parameters=[PREVIEW_LIMIT], responses=PreviewSerializer)
    @action(detail=True, methods=["post"], filter_backends=[])
    def preview(self, request, uuid=None):
        """What a new version with these sensors would change on each device (nothing is written)."""
        template = SensorTemplate.objects.get(uuid=uuid)
        body = body_fields(request.data, {"sensors": "sensors"}, required=("sensors",))
        sensors = services.template_sensors_validate(body["sensors"])
        assignments = selectors.assignments_with_template_version(
            selectors.assignment_inputs(), template=template, version=template.version + 1, sensors=sensors
        )
        scope = services.template_scope(template)
        devices = selectors.scope_devices(scope) if scope is not None else Device.objects.none()
        return _preview_response(request, devices, assignments)


@extend_schema_view(
    create=extend_schema(request=AssignmentWriteSerializer, responses={201: AssignmentChangeSerializer}),
    retrieve=extend_schema(responses=AssignmentDetailSerializer),
    update=extend_schema(request=AssignmentWriteSerializer, responses=AssignmentChangeSerializer),
    partial_update=extend_schema(request=AssignmentWriteSerializer, responses=AssignmentChangeSerializer),
    destroy=extend_schema(responses=AssignmentDeleteSerializer),
)
class AssignmentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Assignments: a template rendered on every device a label selector selects, at a priority. Creating,
    changing or deleting one re-renders the devices it reaches (``renderJob``)."""

    queryset = Assignment.objects.all()
    serializer_class = AssignmentSerializer
    filterset_class = AssignmentFilterSet
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX

    def get_queryset(self):
        return selectors.assignment_list()

    def permission_for(self, request):
        if self.action in ("preview_create", "preview", "preview_delete"):
            return Assignment, "view"
        return Assignment, None

    def retrieve(self, request, uuid=None):
        assignment = self.get_object()
        context = {
            "counts": selectors.assignment_counts(assignment=assignment),
            "problems": selectors.problem_list().filter(assignment=assignment)[: selectors.PREVIEW_SHOWN_DEFAULT],
        }
        return Response(AssignmentDetailSerializer(assignment, context=context).data)

    def _changed(self, change, code=status.HTTP_200_OK) -> Response:
        shown = selectors.assignment_list().get(pk=change.instance.pk)
        return Response(AssignmentChangeSerializer(shown, context={"job": change.job}).data, status=code)

    def create(self, request):
        fields = body_fields(request.data, ASSIGNMENT_FIELDS, required=("name", "template", "selector"))
        change = services.assignment_create(user=request.user, **fields)
        response = self._changed(change, status.HTTP_201_CREATED)
        response["Location"] = f"/api/v1/assignments/{change.instance.uuid}"
        return response

    def update(self, request, uuid=None, partial=False):
        fields = body_fields(
            request.data, ASSIGNMENT_FIELDS, required=() if partial else ("name", "template", "selector")
        )
        if not partial:  # PUT replaces: what it leaves out takes the default a new assignment would have
            fields = {"description": "", "template_version": None, "priority": 0} | fields
        return self._changed(services.assignment_update(uuid=uuid, user=request.user, **fields))

    def partial_update(self, request, uuid=None):
        return self.update(request, uuid=uuid, partial=True)

    def destroy(self, request, uuid=None):
        change = services.assignment_delete(uuid=uuid, user=request.user)
        return Response(AssignmentDeleteSerializer({}, context={"job": change.job}).data)

    @extend_schema(
        operation_id="v1_assignments_preview_new",
        request=AssignmentWriteSerializer,
        parameters=[PREVIEW_LIMIT],
        responses=PreviewSerializer,
    )
    @action(detail=False, methods=["post"], url_path="preview", filter_backends=[])
    def preview_create(self, request):
        """What creating this assignment would change on each device (nothing is written)."""
        fields = body_fields(request.data, ASSIGNMENT_FIELDS, required=("name", "template", "selector"))
        proposed = services.assignment_fields_validate(**fields)
        assignments = selectors.assignments_with(selectors.assignment_inputs(), add=proposed.as_input(uuid="new"))
        return _preview_response(request, selectors.scope_devices(services.assignment_scope(proposed)), assignments)

    @extend_schema(
        operation_id="v1_assignments_preview_change",
        request=AssignmentWriteSerializer,
        parameters=[PREVIEW_LIMIT],
        responses=PreviewSerializer,
    )
    @action(detail=True, methods=["post"], filter_backends=[])
    def preview(self, request, uuid=None):
        """What this change of the assignment (the fields sent, as a PATCH) would change on each device."""
        current = Assignment.objects.select_related("template").get(uuid=uuid)
        fields = body_fields(request.data, ASSIGNMENT_FIELDS)
        proposed = services.assignment_fields_validate(current=current, **fields)
        assignments = selectors.assignments_with(
            selectors.assignment_inputs(), replace_uuid=str(current.uuid), add=proposed.as_input(uuid=str(current.uuid))
        )
        devices = selectors.scope_devices(services.assignment_scope(current, proposed))
        return _preview_response(request, devices, assignments)

    @extend_schema(request=None, parameters=[PREVIEW_LIMIT], responses=PreviewSerializer)
    @action(detail=True, methods=["post"], url_path="preview-delete", filter_backends=[])
    def preview_delete(self, request, uuid=None):
        """What deleting the assignment would change on each device: what it rendered goes."""
        current = Assignment.objects.get(uuid=uuid)
        assignments = selectors.assignments_with(selectors.assignment_inputs(), replace_uuid=str(current.uuid))
        return _preview_response(request, selectors.scope_devices(services.assignment_scope(current)), assignments)


OVERRIDE_FIELDS = {"device": "device_uuid", "sensor": "sensor_name", "field": "field", "value": "value"}


@extend_schema_view(
    create=extend_schema(request=SensorOverrideWriteSerializer, responses={201: SensorOverrideChangeSerializer}),
    update=extend_schema(request=SensorOverrideValueSerializer, responses=SensorOverrideChangeSerializer),
    partial_update=extend_schema(request=SensorOverrideValueSerializer, responses=SensorOverrideChangeSerializer),
    destroy=extend_schema(responses={204: None}),
)
class SensorOverrideViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Per-device overrides of single fields of rendered sensors. Each write re-renders its device at once."""

    queryset = SensorOverride.objects.all()
    serializer_class = SensorOverrideSerializer
    filterset_class = SensorOverrideFilterSet
    pagination_class = FleetCursorPagination
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX

    def get_queryset(self):
        return selectors.override_list()

    def _changed(self, change, code=status.HTTP_200_OK) -> Response:
        shown = selectors.override_list().get(pk=change.override.pk)
        return Response(SensorOverrideChangeSerializer(shown, context={"change": change}).data, status=code)

    def create(self, request):
        fields = body_fields(request.data, OVERRIDE_FIELDS, required=tuple(OVERRIDE_FIELDS))
        fields["device_uuid"] = _device_uuid(fields["device_uuid"])
        change = services.sensor_override_set(user=request.user, **fields)
        response = self._changed(change, status.HTTP_201_CREATED)
        response["Location"] = f"/api/v1/sensor-overrides/{change.override.uuid}"
        return response

    def update(self, request, uuid=None, partial=False):
        body = body_fields(request.data, {"value": "value"}, required=("value",))
        return self._changed(services.sensor_override_update(uuid=uuid, value=body["value"], user=request.user))

    def partial_update(self, request, uuid=None):
        return self.update(request, uuid=uuid, partial=True)

    def destroy(self, request, uuid=None):
        services.sensor_override_delete(uuid=uuid, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _device_uuid(value) -> str:
    try:
        return str(uuid_lib.UUID(str(value)))
    except ValueError:
        raise ValidationError({"device": ["Must be a device uuid."]}) from None


class DeviceRenderingView(APIView):
    """A device's rendering: its labels, the assignments that match them, each sensor with where every field came
    from (the device itself, a template version through an assignment, an override), its problems (conflicts
    between equal priorities, ...) and its overrides."""

    queryset = DeviceConfiguration.objects.all()

    @extend_schema(responses=DeviceRenderingSerializer)
    def get(self, request, uuid):
        found = selectors.device_rendering(device_uuid=uuid)
        rendering = found.rendering
        by_name = {s["name"]: s for s in rendering.sensors}
        rendered_names = set(rendering.rendered)
        data = {
            "device": found.device.uuid,
            "name": found.device.name,
            "labels": found.labels,
            "draft": found.state.draft,
            "upToDate": found.up_to_date,
            "pending": found.pending,
            "assignments": [
                {"uuid": a.uuid, "name": a.name, "priority": a.priority, "template": a.template, "version": a.version}
                for a in rendering.matched
            ],
            "sensors": [
                {"name": name, "sensor": by_name[name], **shown} for name, shown in rendering.provenance.items()
            ],
            "problems": [p.as_dict() for p in rendering.problems],
            "overrides": [
                {
                    "uuid": o.uuid,
                    "sensor": o.sensor_name,
                    "field": o.field,
                    "value": o.value,
                    "applied": o.sensor_name in rendered_names,
                }
                for o in found.overrides
            ],
        }
        return Response(DeviceRenderingSerializer(data).data)


@extend_schema_view(create=extend_schema(request=RenderJobRequestSerializer, responses={201: RenderJobSerializer}))
class RenderJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Re-renders: each change's, with its progress; and staff's own requests for one (``POST``: every device,
    a selector's or some devices'), run at once when small, else by ``manage.py render_fleet``."""

    queryset = RenderJob.objects.all()
    serializer_class = RenderJobSerializer
    filterset_class = RenderJobFilterSet
    pagination_class = NewestFirstPagination
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX

    def get_queryset(self):
        return selectors.render_job_list()

    def permission_for(self, request):
        return RenderJob, "change" if self.action == "retry" else None

    def create(self, request):
        job = services.render_request(scope=request.data, reason="requested by staff", user=request.user)
        job.refresh_from_db()  # a small job has run by now
        return Response(RenderJobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=RenderJobSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request, uuid=None):
        """Queue a failed job again: it resumes after the last device it finished."""
        job = services.render_job_requeue(job_uuid=uuid, user=request.user)
        return Response(RenderJobSerializer(job).data)


class RenderProblemViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    """What the last render of each device found wrong: conflicts between assignments of equal priority, own
    sensors shadowing a template's, overrides that make a sensor invalid, refused writes."""

    queryset = RenderProblem.objects.all()
    serializer_class = RenderProblemSerializer
    filterset_class = RenderProblemFilterSet
    pagination_class = FleetCursorPagination

    def get_queryset(self):
        return selectors.problem_list()
