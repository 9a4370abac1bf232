"""Devices in the admin. Every write is a call to ``devices.services``; the page never saves a model itself."""

import contextlib
import json

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import display_for_value
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Count, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from sensors.models import DeviceSensor
from sensorsync_project.exceptions import PreconditionFailed, SensorNotFound

from .forms import DeviceAdminForm
from .models import Device, DeviceTargetStateVersion
from .services import DeviceWithKey, device_create, device_delete, device_key_rotate, device_update

TARGET_HISTORY_SHOWN = 20
EMPTY_VALUE_DISPLAY = "-"
EDITABLE_FIELDS = ("name", "description", "is_active")
READ_ONLY_FIELDSETS = (
    ("Identity", {"fields": ("uuid", "created_at", "updated_at")}),
    (
        "Agent",
        {
            "fields": (
                "last_seen_at",
                "os_version",
                "agent_version",
                "ip_address",
                "uptime",
                "last_fetched_version",
                "last_fetched_at",
            )
        },
    ),
    (
        "Target state (desired)",
        {
            "fields": (
                "target_version",
                "needs_deployment",
                "target_updated_at",
                "target_updated_by",
                "target_last_deployed_at",
                "target_config",
                "add_sensor",
            ),
            "description": "Changed by adding, changing or removing sensors; every change is a new version.",
        },
    ),
    ("Current state (reported)", {"fields": ("reported_version", "reported_at", "current_config", "sensor_health")}),
    ("Target history", {"fields": ("target_history",), "classes": ("collapse",)}),
)


class ServiceRejected(Exception):
    """Raised from ``save_model`` when the service refused the write, carrying the service's error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


# What a service may refuse with, as opposed to a bug (which must stay a 500 with a traceback).
SERVICE_REJECTIONS = (ValidationError, PreconditionFailed, SensorNotFound)


class ServiceAdminMixin:
    """For admins whose ``save_model`` calls a service: a refusal is shown on the form, not as a server error.

    The service validates at write time, after the form did, so its ``ValidationError`` cannot simply be added
    to the form from ``save_model``. Instead the refusal aborts the request's transaction (nothing is written),
    and the same POST is validated once more with the refusal bound to the form class, whose ``clean`` puts each
    message on the field it names (``devices.forms.ServiceModelForm``). The admin then renders it like any
    invalid form.
    """

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ServiceRejected as rejected:
            request.service_rejection = rejected.error
            return super().changeform_view(request, object_id, form_url, extra_context)

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        rejection = getattr(request, "service_rejection", None)
        if rejection is None:
            return form
        return type(form.__name__, (form,), {"service_rejection": rejection})

    @staticmethod
    def adopt(obj, saved) -> None:
        """Make the admin's in-memory object the row the service wrote (for the log entry and the redirect)."""
        obj.pk = saved.pk
        obj.refresh_from_db()
        obj._state.adding = False


def shown_value(value) -> str:
    """A value as the admin's lists show it (read-only methods get no formatting of their own)."""
    return display_for_value(value, EMPTY_VALUE_DISPLAY)


def pretty_json(value) -> str:
    if value is None:
        return EMPTY_VALUE_DISPLAY
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False, cls=DjangoJSONEncoder))


class DeviceSensorInline(admin.TabularInline):
    """The device's sensors as the read model shows them; edited on the sensor's own page."""

    model = DeviceSensor
    fields = (
        "name",
        "protocol",
        "enabled",
        "deployment_status",
        "running",
        "config_version",
        "synced_to_config",
        "deployment_error",
        "updated_at",
    )
    readonly_fields = fields
    ordering = ("name",)
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Device)
class DeviceAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = DeviceAdminForm
    list_display = (
        "name",
        "uuid",
        "is_active",
        "target_version",
        "reported_version",
        "needs_deployment",
        "last_seen_at",
        "sensor_count",
    )
    list_filter = ("is_active", "target_state__needs_deployment")
    list_select_related = ("target_state", "current_state")
    search_fields = ("name", "uuid")
    search_help_text = "Search by name or uuid."
    ordering = ("name", "id")
    actions = ("rotate_api_key",)
    inlines = (DeviceSensorInline,)

    # --- pages ---

    def get_queryset(self, request):
        sensor_count = (
            DeviceSensor.objects.filter(device=OuterRef("pk"))
            .order_by()
            .values("device")
            .annotate(count=Count("pk"))
            .values("count")
        )
        return (
            super()
            .get_queryset(request)
            .select_related("target_state", "current_state")
            .annotate(sensor_count=Coalesce(Subquery(sensor_count), Value(0)))
        )

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            description = "The device's API key is generated when you save, and shown only once."
            return [(None, {"fields": EDITABLE_FIELDS, "description": description})]
        return [(None, {"fields": EDITABLE_FIELDS}), *READ_ONLY_FIELDSETS]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return tuple(field for _, options in READ_ONLY_FIELDSETS for field in options["fields"])

    def get_inlines(self, request, obj):
        return self.inlines if obj is not None else ()

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        # The service deletes a device with its read-model rows, which are a projection of the device, not
        # separate objects: the device's delete permission is what governs. (A sensor row that is only running
        # cannot be deleted on its own page, which would otherwise block deleting its device.)
        perms_needed.discard(DeviceSensor._meta.verbose_name)
        return deleted, model_count, perms_needed, protected

    # --- writes, all through the services ---

    def save_model(self, request, obj, form, change):
        values = {field: form.cleaned_data[field] for field in EDITABLE_FIELDS}
        created = None
        try:
            if change:
                saved = device_update(uuid=obj.uuid, user=request.user, **values)
            else:
                created = device_create(**values, user=request.user)
                saved = created.device
        except SERVICE_REJECTIONS as exc:
            raise ServiceRejected(exc) from exc
        self.adopt(obj, saved)
        if created is not None:
            self.message_key(request, created)

    def delete_model(self, request, obj):
        # Already deleted by someone else meanwhile: that is the outcome asked for.
        with contextlib.suppress(Device.DoesNotExist):
            device_delete(uuid=obj.uuid, user=request.user)

    def delete_queryset(self, request, queryset):
        # Django's "delete selected" action calls this: one service call per device, never a bulk DELETE.
        for device in queryset:
            self.delete_model(request, device)

    def message_key(self, request, created: DeviceWithKey) -> None:
        """The only time a key is shown: it is not stored anywhere but as a digest, so it cannot be shown again."""
        self.message_user(
            request,
            format_html(
                "New API key of “{}” ({}): <code>{}</code> &mdash; shown only this once (only its digest is "
                "kept): configure the device's agent with it now.",
                created.device.name,
                created.device.uuid,
                created.api_key,
            ),
            messages.SUCCESS,
        )

    @admin.action(description="Rotate the API key of the selected devices", permissions=["change"])
    def rotate_api_key(self, request, queryset):
        """Asks for confirmation first: the device's agent is locked out until it is given the new key."""
        if request.POST.get("post") != "yes":
            return TemplateResponse(
                request,
                "admin/devices/device/rotate_key_confirmation.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Rotate API keys",
                    "opts": self.opts,
                    "queryset": queryset,
                    "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                    "media": self.media,
                },
            )
        for uuid in queryset.values_list("uuid", flat=True):
            self.message_key(request, device_key_rotate(uuid=uuid, user=request.user))
        return None

    # --- columns and read-only fields ---

    @admin.display(description="Target version", ordering="target_state__version")
    def target_version(self, obj: Device):
        target = getattr(obj, "target_state", None)
        return target.version if target else None

    @admin.display(description="Reported version", ordering="current_state__version")
    def reported_version(self, obj: Device):
        current = obj.current_state_or_none()
        return current.version if current else None

    @admin.display(description="Needs deployment", boolean=True, ordering="target_state__needs_deployment")
    def needs_deployment(self, obj: Device):
        target = getattr(obj, "target_state", None)
        return target.needs_deployment if target else None

    @admin.display(description="Sensors", ordering="sensor_count")
    def sensor_count(self, obj: Device):
        return obj.sensor_count

    @admin.display(description="Target updated at")
    def target_updated_at(self, obj: Device):
        return shown_value(obj.target_state.updated_at)

    @admin.display(description="Target updated by")
    def target_updated_by(self, obj: Device):
        return obj.target_state.updated_by

    @admin.display(description="Last deployed at")
    def target_last_deployed_at(self, obj: Device):
        return shown_value(obj.target_state.last_deployed_at)

    @admin.display(description="Config")
    def target_config(self, obj: Device):
        return pretty_json(obj.target_state.config)

    @admin.display(description="Sensors")
    def add_sensor(self, obj: Device):
        url = reverse("admin:sensors_devicesensor_add") + "?" + urlencode({"device": obj.pk})
        return format_html('<a class="addlink" href="{}">Add a sensor to this device</a>', url)

    @admin.display(description="Reported at")
    def reported_at(self, obj: Device):
        current = obj.current_state_or_none()
        return shown_value(current.reported_at if current else None)

    @admin.display(description="Config")
    def current_config(self, obj: Device):
        current = obj.current_state_or_none()
        return pretty_json(current.config) if current else "Never reported."

    @admin.display(description="Sensor health")
    def sensor_health(self, obj: Device):
        current = obj.current_state_or_none()
        return pretty_json(current.sensor_health) if current else None

    @admin.display(description=f"Last {TARGET_HISTORY_SHOWN} versions")
    def target_history(self, obj: Device):
        versions = DeviceTargetStateVersion.objects.filter(device=obj).select_related("created_by")[
            :TARGET_HISTORY_SHOWN
        ]
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    version.version,
                    shown_value(version.created_at),
                    version.created_by or "-",
                    version.source,
                    json.dumps(version.change, ensure_ascii=False),
                )
                for version in versions
            ),
        )
        return format_html(
            "<table><thead><tr><th>Version</th><th>Created at</th><th>By</th><th>Source</th><th>Change</th>"
            "</tr></thead><tbody>{}</tbody></table>",
            rows,
        )
