"""Sensors in the admin. The list is the read model; the form edits the desired sensor and saves it through
``reconciliation.services.sensors``, which writes the target configuration first and re-projects the rows from
it."""

import contextlib

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe
from django.utils.text import Truncator

from reconciliation.services.sensors import DraftedSensor, sensor_create, sensor_delete, sensor_update
from sensorsync_project.exceptions import SensorNotFound
from sensorsync_project.ui.admin import (
    SERVICE_REJECTIONS,
    SensorSelectorListFilter,
    ServiceAdminMixin,
    ServiceRejected,
)
from sensorsync_project.ui.html import (
    ago,
    error_parts,
    health_badge,
    pretty_json,
    shown_value,
    status_badge,
    unreported_note,
    version_chip,
)

from .choices import DeviceSensorDeploymentStatusChoices as Status
from .choices import DeviceSensorHealthStatusChoices as Health
from .filtersets import HEALTH_UNKNOWN
from .forms import DESIRED_FIELDS, DeviceSensorAdminForm
from .models import DeviceSensor
from .selectors import sensor_draft
from .validation import sensors_differences

STATUS_FIELDS = (
    "status",
    "running",
    "version",
    "synced_to_config",
    "error",
    "deployment_attempts",
    "last_deployed_at",
    "status_changed_at",
)
HEALTH_FIELDS = (
    "health",
    "connected",
    "communication_quality",
    "health_error",
    "health_error_count",
    "health_last_seen",
    "health_changed_at",
)
AUDIT_FIELDS = ("created_by", "created_at", "updated_by", "updated_at")
# Staff who may only view a desired sensor see its JSON fields read-only: shown bounded, as every JSON on the page.
VIEW_ONLY_JSON_FIELDS = {
    "connection": "desired_connection",
    "data_points": "desired_data_points",
    "metadata": "desired_metadata",
}
NOT_DESIRED = (
    "This sensor was removed from the device's target configuration, but the agent still reports it running. "
    "It has no desired configuration to edit or delete; the row goes away once the agent stops running it. "
    "To run it again, add a sensor of the same name."
)


def shown_sensor(row: DeviceSensor) -> dict:
    """The configuration the row shows (the running one, or the desired one until it runs), in wire names."""
    return {
        "id": str(row.sensor_id),
        "name": row.name,
        "protocol": row.protocol,
        "enabled": row.enabled,
        "pollInterval": row.poll_interval,
        "connection": row.connection,
        "dataPoints": row.data_points,
        "metadata": row.metadata,
    }


class HealthFilter(admin.SimpleListFilter):
    """The adapter's health, "unknown" (no health reported) included, which a field filter cannot select (its
    value is the empty string)."""

    title = "health"
    parameter_name = "health"

    def lookups(self, request, model_admin):
        return [(value or HEALTH_UNKNOWN, label) for value, label in Health.choices]

    def queryset(self, request, queryset):
        value = self.value()
        if value == HEALTH_UNKNOWN:
            return queryset.filter(health_status="")
        if value and value in Health.values:
            return queryset.filter(health_status=value)
        return queryset


@admin.register(DeviceSensor)
class DeviceSensorAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = DeviceSensorAdminForm
    list_display = (
        "name",
        "device_link",
        "protocol",
        "status",
        "health",
        "version",
        "error",
        "status_since",
        "draft",
    )
    list_filter = (
        SensorSelectorListFilter,
        "protocol",
        "deployment_status",
        HealthFilter,
        "running",
        "enabled",
        "synced_to_config",
    )
    list_select_related = ("device", "device__target_state")
    search_fields = ("name", "device__name", "device__uuid")
    search_help_text = "Search by sensor name, device name or device uuid."
    autocomplete_fields = ("device",)

    # --- pages ---

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .select_related("device", "device__target_state", "device__target_draft")
            .defer("device__target_draft__apps")
        )

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": ("device", *DESIRED_FIELDS)})]
        status = ("Status", {"fields": STATUS_FIELDS})
        health = (
            "Adapter health",
            {
                "fields": HEALTH_FIELDS,
                "description": "What the agent's adapter says of the sensor, apart from its deployment: a sensor "
                "can run as desired and still not reach its device.",
            },
        )
        audit = ("Audit", {"fields": AUDIT_FIELDS, "classes": ("collapse",)})
        if obj.desired is None:
            return [
                ("Not in the target configuration", {"fields": ("device", "name"), "description": NOT_DESIRED}),
                status,
                health,
                ("Running configuration", {"fields": ("sensor_id", "shown_config", "unreported")}),
                audit,
            ]
        desired = DESIRED_FIELDS
        if not self.has_change_permission(request, obj):
            desired = tuple(VIEW_ONLY_JSON_FIELDS.get(field, field) for field in DESIRED_FIELDS)
        return [
            (
                "Desired configuration",
                {
                    "fields": ("device", *desired, "target_version"),
                    "description": "What the device's target configuration asks for. Saving writes a new target "
                    "version, which the agent applies on its next poll.",
                },
            ),
            status,
            health,
            ("What the row shows", {"fields": ("sensor_id", "shown_config", "unreported", "differences")}),
            audit,
        ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (
            "device",
            "sensor_id",
            *STATUS_FIELDS,
            *HEALTH_FIELDS,
            "shown_config",
            "unreported",
            "differences",
            *AUDIT_FIELDS,
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        # ``device`` is the only field of the row on the form; the desired sensor's fields are declared on the
        # form and kept out of the ModelForm's model validation (Django skips declared fields that Meta.fields
        # leaves out): the service validates them, against the target configuration.
        kwargs["fields"] = ["device"]
        return super().get_form(request, obj, change, **kwargs)

    def has_change_permission(self, request, obj=None):
        # A row that is only running has no desired sensor to change; its page is read-only and says why.
        return super().has_change_permission(request, obj) and (obj is None or obj.desired is not None)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and (obj is None or obj.desired is not None)

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        running_only = [row for row in objs if row.desired is None]
        if running_only and super().has_delete_permission(request):
            # The user may delete sensors; these rows just have nothing to delete: say so instead of "no permission".
            perms_needed.discard(str(self.opts.verbose_name))
            protected = [*protected, *(f"{row.device} / {row.name}: {NOT_DESIRED}" for row in running_only)]
        return deleted, model_count, perms_needed, protected

    # --- writes, all through the services ---

    def save_model(self, request, obj, form, change):
        try:
            if change:
                row = sensor_update(
                    device_uuid=obj.device.uuid,
                    name=obj.name,
                    data=form.sensor_data(),
                    partial=False,
                    user=request.user,
                    if_match=form.if_match(),
                )
            else:
                row = sensor_create(device_uuid=obj.device.uuid, data=form.sensor_data(), user=request.user)
        except SERVICE_REJECTIONS as exc:
            raise ServiceRejected(exc) from exc
        if isinstance(row, DraftedSensor):
            # Saved in the device's draft: no row changed (a new sensor has none yet); the device page shows it.
            request.drafted_sensor = row
            return
        # A rename can make it another row (the old name's row stays while the agent still runs it).
        self.adopt(obj, row)

    def _drafted_response(self, request):
        drafted: DraftedSensor = request.drafted_sensor
        self.message_user(
            request,
            f"Saved “{drafted.name}” in the draft of {drafted.device.name}: the agent gets it once the draft is "
            "deployed (from the device's page).",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:devices_device_change", args=[drafted.device.pk]) + "#draft")

    def log_addition(self, request, obj, message):
        if hasattr(request, "drafted_sensor"):
            return None  # no row was added: the draft's own event records the edit
        return super().log_addition(request, obj, message)

    def response_add(self, request, obj, post_url_continue=None):
        if hasattr(request, "drafted_sensor"):
            return self._drafted_response(request)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request, obj):
        if hasattr(request, "drafted_sensor"):
            return self._drafted_response(request)
        if "_continue" in request.POST and str(obj.pk) != request.resolver_match.kwargs.get("object_id"):
            # Renamed into another row: continue on that row's page, not on the old one (which may be gone).
            super().response_change(request, obj)  # its success message
            return HttpResponseRedirect(reverse("admin:sensors_devicesensor_change", args=[obj.pk]))
        return super().response_change(request, obj)

    def delete_model(self, request, obj):
        # Already removed from the target by someone else meanwhile: that is the outcome asked for.
        with contextlib.suppress(SensorNotFound):
            sensor_delete(device_uuid=obj.device.uuid, name=obj.name, user=request.user)

    def delete_queryset(self, request, queryset):
        # Django's "delete selected" action calls this: one service call per sensor, never a bulk DELETE.
        for row in queryset.select_related("device"):
            self.delete_model(request, row)

    # --- columns and read-only fields ---

    @admin.display(description="Device", ordering="device__name")
    def device_link(self, obj: DeviceSensor):
        url = reverse("admin:devices_device_change", args=[obj.device_id])
        return format_html('<a href="{}" title="{}">{}</a>', url, obj.device.uuid, obj.device.name)

    @admin.display(description="Status", ordering="deployment_status")
    def status(self, obj: DeviceSensor):
        """The badge, and whether it runs where the status alone does not say (a failed sensor that still runs
        another configuration; a sensor deployed as disabled)."""
        badge = status_badge(obj.deployment_status, health=obj.health_status)
        note = ""
        if obj.deployment_status == Status.FAILED and obj.running:
            note = "still running"
        elif not obj.enabled:
            note = "disabled"
        if not note:
            return badge
        return format_html('{} <span class="ss-quiet">{}</span>', badge, note)

    @admin.display(description="Health", ordering="health_status")
    def health(self, obj: DeviceSensor):
        """The adapter's health as a badge (blank when the agent reported none), with when it last changed."""
        badge = health_badge(obj.health_status)
        if not badge:
            return ""
        if obj.health_changed_at is None:
            return badge
        return format_html(
            '{} <span class="ss-quiet" title="{}">{}</span>',
            badge,
            shown_value(obj.health_changed_at),
            ago(obj.health_changed_at),
        )

    @admin.display(description="Version", ordering="config_version")
    def version(self, obj: DeviceSensor):
        """The version the row shows next to the device's target version (or that it left the target)."""
        target = obj.device.target_state.version
        if obj.desired is None:
            shown = format_html(
                '{} <span class="ss-quiet" title="{}">removed from target v{}</span>',
                version_chip(obj.config_version, None),
                NOT_DESIRED,
                target,
            )
        else:
            shown = format_html(
                '{} <span class="ss-quiet">/ v{}</span>', version_chip(obj.config_version, target), target
            )
        note = unreported_note(obj.unreported_fields)
        return format_html("{}<br>{}", shown, note) if note else shown

    @admin.display(description="Error", ordering="deployment_error")
    def error(self, obj: DeviceSensor):
        """The deployment error, and the adapter's own error where it says something else (a failed sensor that
        runs another configuration and cannot connect; a deployed sensor that is offline)."""
        shown, adapter = error_parts(
            deployment_error=obj.deployment_error, health_status=obj.health_status, health_error=obj.health_error
        )
        if not shown and not adapter:
            return "-"
        attempts = obj.deployment_attempts
        deployment = ""
        if shown:
            deployment = format_html(
                '<span class="ss-error" title="{}">{}</span>{}',
                obj.deployment_error,
                Truncator(shown).chars(80),
                format_html(' <span class="ss-quiet">({} attempts)</span>', attempts) if attempts > 1 else "",
            )
        if not adapter:
            return deployment
        return format_html(
            '{}{}<span class="ss-adapter-error" title="{}"><span class="ss-quiet">adapter:</span> {}</span>',
            deployment,
            mark_safe("<br>") if deployment else "",
            adapter,
            Truncator(adapter).chars(80),
        )

    @admin.display(description="Draft")
    def draft(self, obj: DeviceSensor):
        """What the device's undeployed draft does to this sensor, if anything."""
        draft = obj.device.target_draft_or_none()
        shown = sensor_draft(name=obj.name, desired=obj.desired, draft_config=draft.config if draft else None)
        if shown is None:
            return ""
        return format_html('<span class="ss-badge ss-badge--draft-{0}">draft: {0}</span>', shown["change"])

    @admin.display(description="Since", ordering="status_changed_at")
    def status_since(self, obj: DeviceSensor):
        return format_html('<span title="{}">{}</span>', shown_value(obj.status_changed_at), ago(obj.status_changed_at))

    @admin.display(description="Fields the agent did not report")
    def unreported(self, obj: DeviceSensor):
        if not obj.unreported_fields:
            return "None: the agent reported every field."
        return format_html(
            '{} <span class="ss-quiet">(the row shows the desired values there; they never count as a '
            "difference)</span>",
            ", ".join(obj.unreported_fields),
        )

    @admin.display(description="Configuration shown")
    def shown_config(self, obj: DeviceSensor):
        return pretty_json(shown_sensor(obj))

    @admin.display(description="Connection")
    def desired_connection(self, obj: DeviceSensor):
        return pretty_json(obj.desired.get("connection"))

    @admin.display(description="Data points")
    def desired_data_points(self, obj: DeviceSensor):
        return pretty_json(obj.desired.get("dataPoints"))

    @admin.display(description="Metadata")
    def desired_metadata(self, obj: DeviceSensor):
        return pretty_json(obj.desired.get("metadata"))

    @admin.display(description="Differs from desired in")
    def differences(self, obj: DeviceSensor) -> str:
        if obj.desired is None:
            return "-"
        return ", ".join(sensors_differences(obj.desired, shown_sensor(obj))) or "Nothing"
