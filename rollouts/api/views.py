from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from rollouts import selectors, services
from rollouts.models import Rollout
from sensorsync_project.api.input import body_fields
from sensorsync_project.api.pagination import FleetCursorPagination
from sensorsync_project.api.routers import UUID_REGEX

from .serializers import RolloutDetailSerializer, RolloutResumeSerializer, RolloutSerializer, RolloutWriteSerializer

ROLLOUT_FIELDS = {
    "name": "name",
    "kind": "kind",
    "template": "template",
    "sensors": "sensors",
    "note": "note",
    "assignment": "assignment",
    "templateVersion": "template_version",
    "stages": "stages",
    "successThreshold": "success_threshold",
    "errorThreshold": "error_threshold",
    "deadlineSeconds": "deadline_seconds",
    "selector": "selector",
}
RESUME_FIELDS = {"successThreshold": "success_threshold", "errorThreshold": "error_threshold"}


class NewestFirstPagination(FleetCursorPagination):
    ordering = "-id"


def _detail(rollout: Rollout) -> dict:
    shown = selectors.rollout_list().get(pk=rollout.pk)
    return RolloutDetailSerializer(shown, context={"progress": selectors.rollouts_progress([shown])}).data


@extend_schema_view(
    create=extend_schema(request=RolloutWriteSerializer, responses={201: RolloutDetailSerializer}),
    retrieve=extend_schema(responses=RolloutDetailSerializer),
)
class RolloutViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Staged rollouts of a template or assignment change: stages of devices admitted one after the other, each
    once the one before reached the success threshold; failures over the error threshold pause it. Progress is
    read from the read model. ``manage.py drive_rollouts`` moves them on."""

    queryset = Rollout.objects.all()
    serializer_class = RolloutSerializer
    pagination_class = NewestFirstPagination
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX

    def get_queryset(self):
        return selectors.rollout_list().prefetch_related("assignments")

    def permission_for(self, request):
        if self.action in ("pause", "resume", "abort"):
            return Rollout, "change"
        return Rollout, None

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset())) or []
        context = {**self.get_serializer_context(), "progress": selectors.rollouts_progress(page)}
        return self.get_paginated_response(RolloutSerializer(page, many=True, context=context).data)

    def retrieve(self, request, *args, **kwargs):
        rollout = self.get_object()
        context = {**self.get_serializer_context(), "progress": selectors.rollouts_progress([rollout])}
        return Response(RolloutDetailSerializer(rollout, context=context).data)

    def create(self, request):
        fields = body_fields(request.data, ROLLOUT_FIELDS, required=("name", "kind"))
        rollout = services.rollout_create(**fields, user=request.user)
        return Response(
            _detail(rollout), status=status.HTTP_201_CREATED, headers={"Location": f"/api/v1/rollouts/{rollout.uuid}"}
        )

    @extend_schema(request=None, responses=RolloutDetailSerializer)
    @action(detail=True, methods=["post"])
    def pause(self, request, uuid=None):
        """Pause it: no stage starts until it is resumed (devices already admitted keep the new version)."""
        return Response(_detail(services.rollout_pause(uuid=uuid, user=request.user)))

    @extend_schema(request=RolloutResumeSerializer, responses=RolloutDetailSerializer)
    @action(detail=True, methods=["post"])
    def resume(self, request, uuid=None):
        """Run it again, with new thresholds if given; the driver checks them again at its next pass."""
        fields = body_fields(request.data or {}, RESUME_FIELDS)
        return Response(_detail(services.rollout_resume(uuid=uuid, user=request.user, **fields)))

    @extend_schema(request=None, responses=RolloutDetailSerializer)
    @action(detail=True, methods=["post"])
    def abort(self, request, uuid=None):
        """Take the change back: every device it touched returns to what it ran before (a new target version with
        the old content), and the assignments stay on the old template version."""
        return Response(_detail(services.rollout_abort(uuid=uuid, user=request.user)))
