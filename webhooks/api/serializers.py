from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webhooks.choices import WebhookAttemptResultChoices
from webhooks.event_types import webhook_event_types
from webhooks.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint


class WebhookEndpointSerializer(serializers.ModelSerializer):
    eventTypes = serializers.ListField(source="event_types", child=serializers.CharField(), read_only=True)
    isActive = serializers.BooleanField(source="is_active", read_only=True)
    pendingDeliveries = serializers.IntegerField(
        source="pending_deliveries", read_only=True, default=0, help_text="Deliveries waiting for an attempt."
    )
    lastAttemptAt = serializers.DateTimeField(source="last_attempt_at", read_only=True, allow_null=True)
    lastAttemptResult = serializers.ChoiceField(
        source="last_attempt_result",
        choices=[("", "none yet"), *WebhookAttemptResultChoices.choices],
        read_only=True,
        help_text="What the latest attempt of any of its deliveries came to: delivered, retrying or failed ('' none).",
    )
    lastStatusCode = serializers.IntegerField(source="last_status_code", read_only=True, allow_null=True)
    lastError = serializers.CharField(source="last_error", read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    createdBy = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)
    deliveriesUrl = serializers.SerializerMethodField(help_text="Its deliveries (a filterable list).")

    class Meta:
        model = WebhookEndpoint
        fields: tuple[str, ...] = (
            "uuid",
            "name",
            "url",
            "eventTypes",
            "isActive",
            "pendingDeliveries",
            "lastAttemptAt",
            "lastAttemptResult",
            "lastStatusCode",
            "lastError",
            "createdAt",
            "createdBy",
            "updatedAt",
            "deliveriesUrl",
        )
        read_only_fields = fields

    def get_deliveriesUrl(self, endpoint: WebhookEndpoint) -> str:
        return f"/api/v1/webhook-deliveries?endpoint={endpoint.uuid}"


class WebhookEndpointSecretSerializer(WebhookEndpointSerializer):
    # The secret comes in the context, {"secret": ...}. (A docstring would show in the schema.)
    secret = serializers.SerializerMethodField(
        help_text="The signing secret: shown this once (on creation and rotation), never again."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = (*WebhookEndpointSerializer.Meta.fields, "secret")
        read_only_fields = fields

    def get_secret(self, endpoint: WebhookEndpoint) -> str:
        return self.context["secret"]


class WebhookEndpointWriteSerializer(serializers.Serializer):
    """Request body of endpoint create / update (validated by the service; declared here for the schema)."""

    name = serializers.CharField(max_length=255)
    url = serializers.CharField(max_length=2048, help_text="http:// or https://; redirects are not followed.")
    # The registry is complete once the apps are ready, before any URL (and so this module) is imported.
    eventTypes = serializers.ListField(
        child=serializers.ChoiceField(choices=[entry.name for entry in webhook_event_types()]), min_length=1
    )
    isActive = serializers.BooleanField(required=False)


class WebhookEventTypeSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()


class WebhookDeliverySerializer(serializers.ModelSerializer):
    endpoint = serializers.UUIDField(source="endpoint.uuid", read_only=True)
    endpointName = serializers.CharField(source="endpoint.name", read_only=True)
    eventId = serializers.UUIDField(source="event_id", read_only=True)
    eventType = serializers.CharField(source="event_type", read_only=True)
    aggregateId = serializers.CharField(source="aggregate_id", read_only=True)
    nextAttemptAt = serializers.DateTimeField(source="next_attempt_at", read_only=True, allow_null=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    finishedAt = serializers.DateTimeField(source="finished_at", read_only=True, allow_null=True)
    lastStatusCode = serializers.IntegerField(source="last_status_code", read_only=True, allow_null=True)
    lastError = serializers.CharField(source="last_error", read_only=True)

    class Meta:
        model = WebhookDelivery
        fields: tuple[str, ...] = (
            "uuid",
            "endpoint",
            "endpointName",
            "eventId",
            "eventType",
            "aggregateId",
            "status",
            "attempts",
            "nextAttemptAt",
            "createdAt",
            "finishedAt",
            "lastStatusCode",
            "lastError",
        )
        read_only_fields = fields


class WebhookDeliveryAttemptSerializer(serializers.ModelSerializer):
    startedAt = serializers.DateTimeField(source="started_at")
    durationMs = serializers.IntegerField(source="duration_ms")
    statusCode = serializers.IntegerField(source="status_code", allow_null=True)
    responseExcerpt = serializers.CharField(source="response_excerpt")

    class Meta:
        model = WebhookDeliveryAttempt
        fields = ("number", "startedAt", "durationMs", "statusCode", "error", "responseExcerpt", "result")
        read_only_fields = fields


class WebhookDeliveryDetailSerializer(WebhookDeliverySerializer):
    payload = serializers.JSONField(read_only=True, help_text="The body every attempt POSTs (as JSON).")
    attemptLog = serializers.SerializerMethodField(help_text="Every attempt, oldest first.")

    class Meta(WebhookDeliverySerializer.Meta):
        fields = (*WebhookDeliverySerializer.Meta.fields, "payload", "attemptLog")
        read_only_fields = fields

    @extend_schema_field(WebhookDeliveryAttemptSerializer(many=True))
    def get_attemptLog(self, delivery: WebhookDelivery) -> list[dict]:
        return list(WebhookDeliveryAttemptSerializer(delivery.attempt_log.all(), many=True).data)
