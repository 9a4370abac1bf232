"""The event log in the admin: read-only for everyone, superusers included (events are never changed)."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from sensorsync_project.ui.html import pretty_json

from .choices import EventSourceChoices, EventTypeChoices
from .models import Event

# Event types whose colour tells the story of the loop at a glance (the badge classes of sensorsync.css).
TYPE_TONES: dict[str, str] = {
    EventTypeChoices.SENSOR_DEPLOYED: "deployed",
    EventTypeChoices.DEVICE_IN_SYNC: "in_sync",
    EventTypeChoices.SENSOR_FAILED: "failed",
    EventTypeChoices.DEVICE_RECONCILE_FAILED: "failed",
    EventTypeChoices.DEVICE_RETRY_BUDGET_EXHAUSTED: "failed",
    EventTypeChoices.DEVICE_CONFIG_DRIFT: "drifting",
    EventTypeChoices.TARGET_STATE_UPDATED: "reconciling",
    EventTypeChoices.CURRENT_STATE_REPORTED: "quiet",
}


class SourceFilter(admin.SimpleListFilter):
    title = "source"
    parameter_name = "source"

    def lookups(self, request, model_admin):
        return EventSourceChoices.choices

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(metadata__source=self.value())
        return queryset


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("event_type", "aggregate", "sequence", "created_at", "actor", "source")
    list_filter = ("type", SourceFilter)
    search_fields = ("aggregate_id", "correlation_id")
    search_help_text = "Search by aggregate id (a device uuid) or correlation id."
    date_hierarchy = "created_at"
    ordering = ("-id",)
    # The log only grows: counting all of it on every page would get slower forever.
    show_full_result_count = False
    fields = (
        "event_id",
        "type",
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "created_at",
        "correlation_id",
        "actor",
        "source",
        "request_id",
        "client_ip",
        "data_json",
    )
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="Type", ordering="type")
    def event_type(self, obj: Event) -> str:
        tone = TYPE_TONES.get(obj.type)
        if tone is None:
            return obj.type
        return format_html('<span class="ss-badge ss-badge--{}">{}</span>', tone, obj.type)

    @admin.display(description="Aggregate")
    def aggregate(self, obj: Event) -> str:
        label = f"{obj.aggregate_type}:{obj.aggregate_id}"
        if obj.aggregate_type != "device":
            return label
        # The device list searched by uuid: a link without a query per row (the device may be deleted, too).
        url = reverse("admin:devices_device_changelist") + "?" + urlencode({"q": obj.aggregate_id})
        return format_html('<a href="{}" title="The device">{}</a>', url, label)

    @admin.display(description="Actor")
    def actor(self, obj: Event):
        return obj.metadata.get("actor")

    @admin.display(description="Source")
    def source(self, obj: Event):
        return obj.metadata.get("source")

    @admin.display(description="Request id")
    def request_id(self, obj: Event):
        return obj.metadata.get("request_id")

    @admin.display(description="Client IP")
    def client_ip(self, obj: Event):
        return obj.metadata.get("client_ip")

    @admin.display(description="Data")
    def data_json(self, obj: Event):
        return pretty_json(obj.data)
