from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from devices import provisioning, selectors, services
from devices.filtersets import DeviceFilterSet
from devices.labels import Selector, SelectorError, labels_validate
from devices.models import Device, DeviceTargetState, ProvisioningKey
from reconciliation.services import drafts, retry_budget, targets
from sensorsync_project.api.input import body_fields
from sensorsync_project.api.routers import UUID_REGEX
from sensorsync_project.api.schema import IF_MATCH

from .serializers import (
    BulkResultSerializer,
    DeployResultSerializer,
    DeviceKeySerializer,
    DeviceSerializer,
    DeviceWriteSerializer,
    DraftModeWriteSerializer,
    LabelsChangeSerializer,
    ProvisioningKeyCreatedSerializer,
    ProvisioningKeyDetailSerializer,
    ProvisioningKeySerializer,
    ProvisioningKeyWriteSerializer,
    RollbackSerializer,
    TargetStateSerializer,
    TargetStateVersionSerializer,
    TargetStateWriteSerializer,
)

DEVICE_FIELDS = {
    "name": "name",
    "description": "description",
    "isActive": "is_active",
    "draftMode": "draft_mode",
    "labels": "labels",
}
LABELS_CHANGE_FIELDS = {"set": "set", "remove": "remove"}


def _labels_apart(fields: dict) -> tuple[dict, dict | None]:
    """The device's own fields, and the labels sent (checked first, so that nothing is written if they are bad)."""
    labels = fields.pop("labels", None)
    if labels is not None:
        labels_validate(labels)
    return fields, labels


def _change_response(uuid) -> Response:
    """A device write's answer: the device as it is now, with the ETag its next target write is checked
    against."""
    return Response(DeviceSerializer(selectors.device_shown_get(uuid=uuid)).data)


@extend_schema_view(
    create=extend_schema(request=DeviceWriteSerializer, responses={201: DeviceKeySerializer}),
    update=extend_schema(request=DeviceWriteSerializer, responses=DeviceSerializer),
    partial_update=extend_schema(request=DeviceWriteSerializer, responses=DeviceSerializer),
)
class DeviceViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    queryset = Device.objects.all()
    serializer_class = DeviceSerializer
    filterset_class = DeviceFilterSet
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX

    def get_queryset(self):
        return selectors.device_list_shown()

    def permission_for(self, request):
        if self.action in ("rotate_key", "labels"):
            return Device, "change"
        if self.action in ("target_state", "target_state_versions"):
            return DeviceTargetState, None
        if self.action in ("target_state_rollback", "retry_budget_reset", "deploy", "deploy_cancel"):
            return DeviceTargetState, "change"
        return Device, None

    def create(self, request):
        fields, labels = _labels_apart(body_fields(request.data, DEVICE_FIELDS, required=("name",)))
        draft_mode = fields.pop("draft_mode", None)
        with transaction.atomic():
            created = services.device_create(**fields, user=request.user)
            if draft_mode is not None:
                services.device_update(uuid=created.device.uuid, draft_mode=draft_mode, user=request.user)
            if labels:
                services.device_labels_set(device_uuid=created.device.uuid, labels=labels, user=request.user)
        device = selectors.device_shown_get(uuid=created.device.uuid)
        return Response(
            DeviceKeySerializer(device, context={"api_key": created.api_key}).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/devices/{device.uuid}"},
        )

    def update(self, request, uuid=None, partial=False):
        fields = body_fields(request.data, DEVICE_FIELDS, required=() if partial else ("name",))
        if not partial:
            # PUT replaces: what it leaves out takes the default a new device would have; labels and draft mode,
            # which clients that predate them do not send, stay as they are.
            fields = {"description": "", "is_active": True} | fields
        fields, labels = _labels_apart(fields)
        with transaction.atomic():
            services.device_update(uuid=uuid, user=request.user, **fields)
            if labels is not None:
                services.device_labels_set(device_uuid=uuid, labels=labels, user=request.user)
        return _change_response(uuid)

    def partial_update(self, request, uuid=None):
        return self.update(request, uuid=uuid, partial=True)

    def destroy(self, request, uuid=None):
        services.device_delete(uuid=uuid, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=DeviceKeySerializer)
    @action(detail=True, methods=["post"], url_path="rotate-key")
    def rotate_key(self, request, uuid=None):
        rotated = services.device_key_rotate(uuid=uuid, user=request.user)
        device = selectors.device_shown_get(uuid=rotated.device.uuid)
        return Response(DeviceKeySerializer(device, context={"api_key": rotated.api_key}).data)

    @extend_schema(request=None, responses=DeviceSerializer)
    @action(detail=True, methods=["post"], url_path="retry-budget/reset")
    def retry_budget_reset(self, request, uuid=None):
        """Clear the device's retry budget (the failed applies counted, and an exhaustion): staff acted. The agent is
        sent nothing new; publish a new target version to have it apply again."""
        retry_budget.retry_budget_reset(uuid=uuid, user=request.user)
        return Response(DeviceSerializer(selectors.device_get(uuid=uuid)).data)

    @extend_schema(
        methods=["GET"],
        responses={200: TargetStateSerializer, 404: OpenApiResponse(description="No such device")},
    )
    @extend_schema(
        methods=["PUT"],
        request=TargetStateWriteSerializer,
        parameters=[IF_MATCH],
        responses={200: TargetStateSerializer, 412: OpenApiResponse(description="If-Match did not match")},
    )
    @action(detail=True, methods=["get", "put"], url_path="target-state")
    def target_state(self, request, uuid=None):
        if request.method == "PUT":
            body = body_fields(request.data, {"config": "config", "apps": "apps"}, required=("config",))
            targets.target_state_update(uuid=uuid, user=request.user, if_match=request.headers.get("If-Match"), **body)
        return self._target_state_response(uuid)

    @staticmethod
    def _target_state_response(uuid) -> Response:
        """The published target with the draft, if any; the ETag is what the next write is checked against."""
        target = DeviceTargetState.objects.select_related(
            "device", "updated_by", "device__target_draft", "device__target_draft__updated_by"
        ).get(device__uuid=uuid)
        draft = target.device.target_draft_or_none()
        etag = draft.etag if draft is not None else target.etag
        return Response(TargetStateSerializer(target).data, headers={"ETag": etag})

    @extend_schema(
        request=LabelsChangeSerializer,
        responses={200: {"type": "object", "additionalProperties": {"type": "string"}}},
    )
    @action(detail=True, methods=["post"])
    def labels(self, request, uuid=None):
        """Set some labels (added or replaced) and remove others; answers with all the device's labels."""
        body = body_fields(request.data, LABELS_CHANGE_FIELDS)
        labels = services.device_labels_update(
            device_uuid=uuid, set=body.get("set", {}), remove=body.get("remove", []), user=request.user
        )
        return Response(labels)

    @extend_schema(
        request=None,
        parameters=[IF_MATCH],
        responses={
            200: TargetStateSerializer,
            409: OpenApiResponse(description="No draft to deploy, or the published target changed under it"),
            412: OpenApiResponse(description="If-Match did not match the draft's ETag"),
        },
    )
    @action(detail=True, methods=["post"])
    def deploy(self, request, uuid=None):
        """Publish the device's draft as a new target version, which the agent gets on its next poll."""
        drafts.draft_deploy(device_uuid=uuid, user=request.user, if_match=request.headers.get("If-Match"))
        return self._target_state_response(uuid)

    @extend_schema(
        request=None,
        parameters=[IF_MATCH],
        responses={200: TargetStateSerializer, 409: OpenApiResponse(description="No draft to discard")},
    )
    @action(detail=True, methods=["post"], url_path="deploy/cancel")
    def deploy_cancel(self, request, uuid=None):
        """Discard the device's draft; the published target stays as it is."""
        drafts.draft_discard(device_uuid=uuid, user=request.user, if_match=request.headers.get("If-Match"))
        return self._target_state_response(uuid)

    @extend_schema(responses=TargetStateVersionSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="target-state/versions", filter_backends=[])
    def target_state_versions(self, request, uuid=None):
        """Every target version this device ever had, newest first: who set it, when, and what changed."""
        if not selectors.device_exists(uuid=uuid):
            raise Device.DoesNotExist
        page = self.paginate_queryset(selectors.target_versions(device_uuid=uuid))
        return self.get_paginated_response(TargetStateVersionSerializer(page, many=True).data)

    @extend_schema(
        request=RollbackSerializer,
        parameters=[IF_MATCH],
        responses={200: TargetStateSerializer, 400: OpenApiResponse(description="Unknown version")},
    )
    @action(detail=True, methods=["post"], url_path="target-state/rollback")
    def target_state_rollback(self, request, uuid=None):
        """Deploy an earlier version's content again, as a new version."""
        body = body_fields(request.data, {"version": "version"}, required=("version",))
        targets.target_state_rollback(
            uuid=uuid, version=body["version"], user=request.user, if_match=request.headers.get("If-Match")
        )
        return self._target_state_response(uuid)


PROVISIONING_KEY_FIELDS = {
    "name": "name",
    "expiresAt": "expires_at",
    "maxDevices": "max_devices",
    "defaultLabels": "default_labels",
}


def _expiry_parse(value):
    if value is None or value == "":
        return None
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValidationError({"expiresAt": ["Must be an ISO 8601 time with a time zone, or null."]})
    return parsed


@extend_schema_view(
    create=extend_schema(request=ProvisioningKeyWriteSerializer, responses={201: ProvisioningKeyCreatedSerializer}),
    retrieve=extend_schema(responses=ProvisioningKeyDetailSerializer),
)
class ProvisioningKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Fleet-level keys with which devices register themselves. Revoked, never deleted: the devices keep saying
    which key registered them."""

    queryset = ProvisioningKey.objects.all()
    serializer_class = ProvisioningKeySerializer
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX

    def get_queryset(self):
        return selectors.provisioning_key_list()

    def get_serializer_class(self):
        return ProvisioningKeyDetailSerializer if self.action == "retrieve" else ProvisioningKeySerializer

    def permission_for(self, request):
        return ProvisioningKey, "change" if self.action == "revoke" else None

    def create(self, request):
        fields = body_fields(request.data, PROVISIONING_KEY_FIELDS, required=("name",))
        fields["expires_at"] = _expiry_parse(fields.get("expires_at"))
        created = provisioning.provisioning_key_create(**fields, user=request.user)
        key = selectors.provisioning_key_list().get(pk=created.key.pk)
        return Response(
            ProvisioningKeyCreatedSerializer(key, context={"secret": created.secret}).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/provisioning-keys/{key.uuid}"},
        )

    @extend_schema(request=None, responses=ProvisioningKeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, uuid=None):
        """No device registers with this key from now on; the devices it registered keep working."""
        key = provisioning.provisioning_key_revoke(uuid=uuid, user=request.user)
        return Response(ProvisioningKeySerializer(selectors.provisioning_key_list().get(pk=key.pk)).data)


SELECTOR_PARAMETER = OpenApiParameter(
    "selector",
    required=True,
    description="A label selector (plant=3,role!=spare); required, and an empty one selects every device.",
)


def selector_param(request) -> Selector:
    """The ``selector`` a fleet-wide write applies to: required, so that no write reaches the whole fleet by a
    parameter left out (``?selector=`` is every device, said so)."""
    if "selector" not in request.query_params:
        raise ValidationError({"selector": ["Required: the label selector of the devices to change (empty: all)."]})
    try:
        return Selector.parse(request.query_params["selector"])
    except SelectorError as exc:
        raise ValidationError({"selector": [str(exc)]}) from exc


class LabelsBulkView(APIView):
    """Set and remove labels on every device the selector selects, in batches."""

    queryset = Device.objects.all()

    def permission_for(self, request):
        return Device, "change"

    @extend_schema(parameters=[SELECTOR_PARAMETER], request=LabelsChangeSerializer, responses=BulkResultSerializer)
    def post(self, request):
        selector = selector_param(request)
        body = body_fields(request.data, LABELS_CHANGE_FIELDS)
        result = services.devices_labels_update(
            selector=selector, set=body.get("set", {}), remove=body.get("remove", []), user=request.user
        )
        return Response({"selector": str(selector), "matched": result.matched, "changed": result.changed})


class DraftModeBulkView(APIView):
    """Put every device the selector selects in draft mode (or take it out: refused while one has a draft)."""

    queryset = Device.objects.all()

    def permission_for(self, request):
        return Device, "change"

    @extend_schema(
        parameters=[SELECTOR_PARAMETER],
        request=DraftModeWriteSerializer,
        responses={200: BulkResultSerializer, 409: OpenApiResponse(description="A selected device has a draft")},
    )
    def post(self, request):
        selector = selector_param(request)
        body = body_fields(request.data, {"enabled": "enabled"}, required=("enabled",))
        result = services.devices_draft_mode_set(selector=selector, enabled=body["enabled"], user=request.user)
        return Response({"selector": str(selector), "matched": result.matched, "changed": result.changed})


class DeployBulkView(APIView):
    """Deploy (or, at ``deploy/cancel``, discard) the draft of every device the selector selects that has one,
    each device in a unit of work of its own."""

    queryset = DeviceTargetState.objects.all()
    cancel = False

    def permission_for(self, request):
        return DeviceTargetState, "change"

    @extend_schema(parameters=[SELECTOR_PARAMETER], request=None, responses=DeployResultSerializer)
    def post(self, request):
        selector = selector_param(request)
        act = drafts.drafts_discard if self.cancel else drafts.drafts_deploy
        result = act(selector=selector, user=request.user)
        return Response(
            {"selector": str(selector), "matched": result.matched, "done": result.done, "refused": result.refused}
        )
