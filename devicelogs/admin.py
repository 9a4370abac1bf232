"""A device's log in the admin: read only, newest first, searchable by device uuid or text; the device page links
here ("Logs")."""

import uuid as uuid_lib

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from .choices import LogLevelChoices
from .models import DeviceLogLine

# The badge classes of sensorsync.css, one per level.
_TONES = {
    LogLevelChoices.DEBUG: "quiet",
    LogLevelChoices.INFO: "in_sync",
    LogLevelChoices.WARN: "pending",
    LogLevelChoices.ERROR: "failed",
}


@admin.register(DeviceLogLine)
class DeviceLogLineAdmin(admin.ModelAdmin):
    list_display = ("logged_at", "level_badge", "device_link", "origin", "message_text")
    list_filter = ("level", "source")
    list_select_related = ("device",)
    search_fields = ("message",)
    search_help_text = "A device uuid shows that device's log; any other text is searched in the messages."
    ordering = ("-id",)
    list_per_page = 200
    # The log only grows: counting all of it on every page would get slower forever.
    show_full_result_count = False
    fields = (
        "device",
        "logged_at",
        "received_at",
        "level",
        "source",
        "source_name",
        "service_name",
        "is_stderr",
        "message",
    )
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        try:
            device_uuid = uuid_lib.UUID(term)
        except ValueError:
            return super().get_search_results(request, queryset, search_term)
        return queryset.filter(device__uuid=device_uuid), False

    @admin.display(description="Level", ordering="level")
    def level_badge(self, obj: DeviceLogLine) -> str:
        return format_html(
            '<span class="ss-badge ss-badge--{}">{}</span>', _TONES.get(obj.level, "quiet"), obj.get_level_display()
        )

    @admin.display(description="Device")
    def device_link(self, obj: DeviceLogLine) -> str:
        url = reverse("admin:devices_device_change", args=[obj.device_id])
        return format_html('<a href="{}">{}</a>', url, obj.device.name)

    @admin.display(description="From")
    def origin(self, obj: DeviceLogLine) -> str:
        parts = [obj.get_source_display(), obj.service_name or obj.source_name]
        return " / ".join(part for part in parts if part)

    @admin.display(description="Message")
    def message_text(self, obj: DeviceLogLine) -> str:
        # Stderr lines stand out; the whole message is on the line's own page.
        style = "color: var(--error-fg)" if obj.is_stderr else ""
        return format_html('<span style="{}; white-space: pre-wrap">{}</span>', style, obj.message[:500])
