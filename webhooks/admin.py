"""Webhooks in the admin: endpoints (every write a service call; the secret shown once, in the message after saving or
rotating) and their deliveries (read only), each showing how its latest attempt went."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from sensorsync_project.ui.admin import SERVICE_REJECTIONS, ServiceAdminMixin, ServiceRejected
from sensorsync_project.ui.html import EMPTY_VALUE_DISPLAY, ago, pretty_json

from .choices import WebhookAttemptResultChoices, WebhookDeliveryStatusChoices
from .forms import WebhookEndpointAdminForm
from .models import WebhookDelivery, WebhookEndpoint
from .selectors import webhook_endpoint_list, webhook_recent_deliveries
from .services import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_secret_rotate,
    webhook_endpoint_update,
)

# The badge classes of sensorsync.css that tell a delivery's state at a glance.
_TONES: dict[str, str] = {
    WebhookDeliveryStatusChoices.PENDING: "pending",
    WebhookDeliveryStatusChoices.DELIVERED: "deployed",
    WebhookDeliveryStatusChoices.FAILED: "failed",
    WebhookAttemptResultChoices.RETRYING: "reconciling",
}
_LABELS: dict[str, str] = {**dict(WebhookDeliveryStatusChoices.choices), **dict(WebhookAttemptResultChoices.choices)}
RECENT_DELIVERIES_SHOWN = 20


def _badge(state: str) -> str:
    return format_html('<span class="ss-badge ss-badge--{}">{}</span>', _TONES.get(state, "quiet"), _LABELS[state])


def _attempt_summary(state: str, status_code: int | None, error: str) -> str:
    detail = error or (f"HTTP {status_code}" if status_code is not None else "")
    return format_html("{} <span class='ss-quiet'>{}</span>", _badge(state), detail)


def _secret_message(endpoint: WebhookEndpoint, secret: str, what: str) -> str:
    return format_html(
        "Webhook endpoint “{}”: {} signing secret <code>{}</code> &mdash; shown only this once. Give it to the "
        "receiver: it checks the X-SensorSync-Signature header of every delivery with it (README, Webhooks).",
        endpoint.name,
        what,
        secret,
    )


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = WebhookEndpointAdminForm
    list_display = ("name", "url", "is_active", "subscribed", "last_delivery", "pending", "created_at")
    list_filter = ("is_active", "last_attempt_result")
    search_fields = ("name", "url", "uuid")
    readonly_fields = (
        "uuid",
        "last_delivery",
        "last_attempt_at",
        "pending",
        "created_at",
        "created_by",
        "updated_at",
        "recent_deliveries",
    )
    actions = ("rotate_secret",)

    def get_queryset(self, request):
        return webhook_endpoint_list()

    def get_fields(self, request, obj=None):
        editable = ("name", "url", "event_types", "is_active")
        return editable if obj is None else (*editable, *self.readonly_fields)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        fields = {name: data[name] for name in ("name", "url", "event_types", "is_active")}
        try:
            if change:
                saved = webhook_endpoint_update(uuid=obj.uuid, user=request.user, **fields)
            else:
                created = webhook_endpoint_create(**fields, user=request.user)
                saved = created.endpoint
        except SERVICE_REJECTIONS as exc:
            raise ServiceRejected(exc) from exc
        self.adopt(obj, saved)
        if not change:
            self.message_user(request, _secret_message(saved, created.secret, "its"), messages.SUCCESS)

    def delete_model(self, request, obj):
        webhook_endpoint_delete(uuid=obj.uuid, user=request.user)

    def delete_queryset(self, request, queryset):
        for endpoint in queryset:
            webhook_endpoint_delete(uuid=endpoint.uuid, user=request.user)

    def get_deleted_objects(self, objs, request):
        """A count of the deliveries that go with the endpoints, not a page line per delivery (they may be many; they
        are deleted with their endpoint, which is what the delete permission on endpoints allows)."""
        objs = list(objs)
        deliveries = WebhookDelivery.objects.filter(endpoint__in=objs).count()
        counts = {WebhookEndpoint._meta.verbose_name_plural: len(objs)}
        if deliveries:
            counts[WebhookDelivery._meta.verbose_name_plural] = deliveries
        return [str(obj) for obj in objs], counts, set(), []

    @admin.action(description="Rotate the signing secret of the selected endpoints", permissions=["change"])
    def rotate_secret(self, request, queryset):
        for endpoint in queryset:
            rotated = webhook_endpoint_secret_rotate(uuid=endpoint.uuid, user=request.user)
            self.message_user(request, _secret_message(rotated.endpoint, rotated.secret, "new"), messages.SUCCESS)

    @admin.display(description="Event types")
    def subscribed(self, obj: WebhookEndpoint):
        return ", ".join(obj.event_types)

    @admin.display(description="Last delivery", ordering="last_attempt_at")
    def last_delivery(self, obj: WebhookEndpoint):
        if not obj.last_attempt_result:
            return "none yet"
        return format_html(
            "{} {}",
            _attempt_summary(obj.last_attempt_result, obj.last_status_code, obj.last_error),
            format_html("<span class='ss-quiet'>({})</span>", ago(obj.last_attempt_at)),
        )

    @admin.display(description="Pending deliveries")
    def pending(self, obj: WebhookEndpoint):
        count = getattr(obj, "pending_deliveries", 0)
        query = {"endpoint__id__exact": str(obj.pk), "status__exact": str(WebhookDeliveryStatusChoices.PENDING)}
        url = reverse("admin:webhooks_webhookdelivery_changelist") + "?" + urlencode(query)
        return format_html('<a href="{}">{}</a>', url, count)

    @admin.display(description=f"Latest {RECENT_DELIVERIES_SHOWN} deliveries")
    def recent_deliveries(self, obj: WebhookEndpoint):
        deliveries = list(webhook_recent_deliveries(endpoint=obj, limit=RECENT_DELIVERIES_SHOWN))
        if not deliveries:
            return "none yet"
        rows = format_html_join(
            "",
            "<tr><td><a href='{}'>{}</a></td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    reverse("admin:webhooks_webhookdelivery_change", args=[d.pk]),
                    d.created_at,
                    d.event_type,
                    d.aggregate_id,
                    _badge(d.status),
                    d.attempts,
                    d.last_error or (f"HTTP {d.last_status_code}" if d.last_status_code else EMPTY_VALUE_DISPLAY),
                )
                for d in deliveries
            ),
        )
        return format_html(
            "<table class='ss-table'><thead><tr><th>Queued</th><th>Event</th><th>About</th><th>Status</th>"
            "<th>Attempts</th><th>Last answer</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Read only: deliveries are written by the outbox and the delivery worker alone."""

    list_display = (
        "created_at",
        "endpoint",
        "event_type",
        "about",
        "state",
        "attempts",
        "last_answer",
        "next_attempt_at",
    )
    list_filter = ("status", "event_type", "endpoint")
    list_select_related = ("endpoint",)
    search_fields = ("aggregate_id", "event_id", "uuid")
    search_help_text = "Search by device uuid, event id or delivery id."
    show_full_result_count = False
    fields = (
        "uuid",
        "endpoint",
        "event_type",
        "event_id",
        "about",
        "state",
        "attempts",
        "next_attempt_at",
        "created_at",
        "finished_at",
        "last_answer",
        "attempt_table",
        "payload_json",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        # The list leaves the payload out; the page of one delivery shows it.
        return queryset if request.resolver_match.url_name.endswith("_change") else queryset.defer("payload")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="About")
    def about(self, obj: WebhookDelivery):
        url = reverse("admin:devices_device_changelist") + "?" + urlencode({"q": obj.aggregate_id})
        return format_html('<a href="{}" title="The device">{}</a>', url, obj.aggregate_id)

    @admin.display(description="Status", ordering="status")
    def state(self, obj: WebhookDelivery):
        return _badge(obj.status)

    @admin.display(description="Last answer")
    def last_answer(self, obj: WebhookDelivery):
        if not obj.attempts:
            return EMPTY_VALUE_DISPLAY
        return obj.last_error or f"HTTP {obj.last_status_code}"

    @admin.display(description="Attempts")
    def attempt_table(self, obj: WebhookDelivery):
        attempts = list(obj.attempt_log.all())
        if not attempts:
            return "none yet"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (
                    a.number,
                    a.started_at,
                    a.duration_ms,
                    _badge(a.result),
                    a.error or f"HTTP {a.status_code}",
                    a.response_excerpt[:200],
                )
                for a in attempts
            ),
        )
        return format_html(
            "<table class='ss-table'><thead><tr><th>#</th><th>Started</th><th>Took</th><th>Result</th>"
            "<th>Answer</th><th>Body (start)</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="Payload (the body every attempt POSTs)")
    def payload_json(self, obj: WebhookDelivery):
        return pretty_json(obj.payload)
