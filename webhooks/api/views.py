from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from sensorsync_project.api.input import body_fields
from sensorsync_project.api.pagination import FleetCursorPagination
from sensorsync_project.api.routers import UUID_REGEX
from webhooks import selectors, services
from webhooks.event_types import webhook_event_types
from webhooks.filtersets import WebhookDeliveryFilterSet
from webhooks.models import WebhookDelivery, WebhookEndpoint

from .serializers import (
    WebhookDeliveryDetailSerializer,
    WebhookDeliverySerializer,
    WebhookEndpointSecretSerializer,
    WebhookEndpointSerializer,
    WebhookEndpointWriteSerializer,
    WebhookEventTypeSerializer,
)

ENDPOINT_FIELDS = {"name": "name", "url": "url", "eventTypes": "event_types", "isActive": "is_active"}


@extend_schema_view(
    create=extend_schema(request=WebhookEndpointWriteSerializer, responses={201: WebhookEndpointSecretSerializer}),
    update=extend_schema(request=WebhookEndpointWriteSerializer, responses=WebhookEndpointSerializer),
    partial_update=extend_schema(request=WebhookEndpointWriteSerializer, responses=WebhookEndpointSerializer),
)
class WebhookEndpointViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Receivers of webhooks: where to POST which events. The signing secret is shown on creation and rotation
    only."""

    queryset = WebhookEndpoint.objects.all()
    serializer_class = WebhookEndpointSerializer
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX

    def get_queryset(self):
        return selectors.webhook_endpoint_list()

    def permission_for(self, request):
        return WebhookEndpoint, "change" if self.action == "rotate_secret" else None

    def create(self, request):
        fields = body_fields(request.data, ENDPOINT_FIELDS, required=("name", "url", "eventTypes"))
        created = services.webhook_endpoint_create(**fields, user=request.user)
        endpoint = selectors.webhook_endpoint_get(uuid=created.endpoint.uuid)
        return Response(
            WebhookEndpointSecretSerializer(endpoint, context={"secret": created.secret}).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": f"/api/v1/webhook-endpoints/{endpoint.uuid}"},
        )

    def update(self, request, uuid=None, partial=False):
        required = () if partial else ("name", "url", "eventTypes")
        fields = body_fields(request.data, ENDPOINT_FIELDS, required=required)
        if not partial:  # PUT replaces: what it leaves out takes the default a new endpoint would have
            fields = {"is_active": True} | fields
        services.webhook_endpoint_update(uuid=uuid, user=request.user, **fields)
        return Response(WebhookEndpointSerializer(selectors.webhook_endpoint_get(uuid=uuid)).data)

    def partial_update(self, request, uuid=None):
        return self.update(request, uuid=uuid, partial=True)

    def destroy(self, request, uuid=None):
        services.webhook_endpoint_delete(uuid=uuid, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=WebhookEndpointSecretSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, uuid=None):
        """A new signing secret, shown this once; the old one stops signing at once."""
        rotated = services.webhook_endpoint_secret_rotate(uuid=uuid, user=request.user)
        endpoint = selectors.webhook_endpoint_get(uuid=rotated.endpoint.uuid)
        return Response(WebhookEndpointSecretSerializer(endpoint, context={"secret": rotated.secret}).data)

    @extend_schema(responses=WebhookEventTypeSerializer(many=True))
    @action(detail=False, methods=["get"], url_path="event-types", pagination_class=None)
    def event_types(self, request):
        """The event types an endpoint may subscribe to, and when each goes out."""
        entries = [{"name": entry.name, "description": entry.description} for entry in webhook_event_types()]
        return Response(WebhookEventTypeSerializer(entries, many=True).data)


class WebhookDeliveryPagination(FleetCursorPagination):
    """Newest first; deliveries only grow (until retention deletes the finished ones)."""

    ordering = "-id"


@extend_schema_view(retrieve=extend_schema(responses=WebhookDeliveryDetailSerializer))
class WebhookDeliveryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """What was queued for each endpoint and what came of it: status, attempts, the receiver's answers."""

    queryset = WebhookDelivery.objects.all()
    serializer_class = WebhookDeliverySerializer
    filterset_class = WebhookDeliveryFilterSet
    pagination_class = WebhookDeliveryPagination
    lookup_field = "uuid"
    lookup_value_regex = UUID_REGEX

    def get_queryset(self):
        return selectors.webhook_delivery_list()

    def retrieve(self, request, uuid=None):
        return Response(WebhookDeliveryDetailSerializer(selectors.webhook_delivery_get(uuid=uuid)).data)
