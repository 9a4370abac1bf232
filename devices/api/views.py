from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from devices import provisioning, selectors, services
from devices.filtersets import DeviceFilterSet
from devices.models import Device, DeviceTargetState, ProvisioningKey
from reconciliation.services import retry_budget, targets
from sensorsync_project.api.input import body_fields
from sensorsync_project.api.routers import UUID_REGEX
from sensorsync_project.api.schema import IF_MATCH

from .serializers import (
    DeviceKeySerializer,
    DeviceSerializer,
    DeviceWriteSerializer,
    ProvisioningKeyCreatedSerializer,
    ProvisioningKeyDetailSerializer,
    ProvisioningKeySerializer,
    ProvisioningKeyWriteSerializer,
    RollbackSerializer,
    TargetStateSerializer,
    TargetStateVersionSerializer,
    TargetStateWriteSerializer,
)

DEVICE_FIELDS = {"name": "name", "description": "description", "isActive": "is_active"}


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
        return selectors.device_list()

    def permission_for(self, request):
        if self.action == "rotate_key":
            return Device, "change"
        if self.action in ("target_state", "target_state_versions"):
            return DeviceTargetState, None
        if self.action in ("target_state_rollback", "retry_budget_reset"):
            return DeviceTargetState, "change"
        return Device, None

    def create(self, request):
        fields = body_fields(request.data, DEVICE_FIELDS, required=("name",))
        created = services.device_create(**fields, user=request.user)
        device = selectors.device_get(uuid=created.device.uuid)
        return Response(
            DeviceKeySerializer(device, context={"api_key": created.api_key}).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/devices/{device.uuid}"},
        )

    def update(self, request, uuid=None, partial=False):
        fields = body_fields(request.data, DEVICE_FIELDS, required=() if partial else ("name",))
        if not partial:  # PUT replaces: what it leaves out takes the default a new device would have
            fields = {"description": "", "is_active": True} | fields
        services.device_update(uuid=uuid, user=request.user, **fields)
        return Response(DeviceSerializer(selectors.device_get(uuid=uuid)).data)

    def partial_update(self, request, uuid=None):
        return self.update(request, uuid=uuid, partial=True)

    def destroy(self, request, uuid=None):
        services.device_delete(uuid=uuid, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=DeviceKeySerializer)
    @action(detail=True, methods=["post"], url_path="rotate-key")
    def rotate_key(self, request, uuid=None):
        rotated = services.device_key_rotate(uuid=uuid, user=request.user)
        device = selectors.device_get(uuid=rotated.device.uuid)
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
        target = DeviceTargetState.objects.select_related("device", "updated_by").get(device__uuid=uuid)
        return Response(TargetStateSerializer(target).data, headers={"ETag": target.etag})

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


PROVISIONING_KEY_FIELDS = {"name": "name", "expiresAt": "expires_at", "maxDevices": "max_devices"}


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
