"""The device and provisioning-key pages of the admin. Every write is a call to a service (``devices.services``,
``devices.provisioning``, ``reconciliation.services``); the pages never save a model themselves. The device page's
read-only panels are in ``panels``."""

import contextlib
from typing import TYPE_CHECKING, TypedDict

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_permission_codename
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from devicelogs.selectors import device_log_recent_problems
from reconciliation.selectors import device_state_q, offline_cutoff
from reconciliation.services.projection import ReconcileResult, device_reconcile_now
from reconciliation.services.retry_budget import retry_budget_reset
from reconciliation.services.targets import config_change_summary, target_state_rollback
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.models import DeviceSensor
from sensorsync_project.exceptions import PreconditionFailed
from sensorsync_project.ui.admin import SERVICE_REJECTIONS, SelectorListFilter, ServiceAdminMixin, ServiceRejected
from sensorsync_project.ui.html import EMPTY_VALUE_DISPLAY, ago, json_text, pretty_json, shown_value, version_chip

from ..forms import DeviceAdminForm, ProvisioningKeyAdminForm
from ..models import Device, DeviceTargetState, DeviceTargetStateVersion, ProvisioningKey
from ..provisioning import provisioning_key_create, provisioning_key_revoke
from ..selectors import provisioning_key_devices
from ..services import DeviceWithKey, device_create, device_delete, device_key_rotate, device_update
from . import panels
from .fleet import DeviceFleetAdminMixin, DraftFilter

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _SensorCounts(TypedDict):
    """What the device list annotates each device with (``DeviceAdmin.get_queryset``)."""

    sensor_count: int
    drifting_count: int


EDITABLE_FIELDS = ("name", "description", "is_active", "draft_mode")
READ_ONLY_FIELDSETS = (
    (
        "Target history",
        {
            "fields": ("target_history",),
            "description": "Rolling back writes a new version with the old content; versions are never reused.",
        },
    ),
    (
        "Target state (desired)",
        {
            "fields": (
                "target_version",
                "converged",
                "target_updated_at",
                "target_updated_by",
                "target_last_deployed_at",
            ),
            "description": "Changed by adding, changing or removing sensors; every change is a new version.",
        },
    ),
    ("Current state (reported)", {"fields": ("reported_version", "reported_at")}),
    (
        "Agent",
        {
            "fields": (
                "last_seen_at",
                "registered_by",
                "device_type",
                "mac_address",
                "os_version",
                "agent_version",
                "ip_address",
                "last_fetched_version",
                "last_fetched_at",
            )
        },
    ),
    (
        "Facts",
        {
            "fields": (
                "facts_reported",
                "uptime_shown",
                "is_online",
                "cpu",
                "memory",
                "storage",
                "temperature",
                "network_interfaces",
                "top_processes",
            ),
            "description": "The machine as its agent last described it (metrics arrive every few minutes and "
            "replace the previous ones whole).",
            "classes": ("ss-facts",),
        },
    ),
    ("Identity", {"fields": ("uuid", "created_at", "updated_at")}),
    ("Target configuration (JSON)", {"fields": ("target_config",), "classes": ("collapse",)}),
    (
        "Reported configuration and sensor health (JSON)",
        {"fields": ("current_config", "sensor_health"), "classes": ("collapse",)},
    ),
)
DEVICE_STATE_LABELS = {
    "in_sync": "In sync",
    "drifting": "Drifting",
    "never_reported": "Never reported",
    "offline": "Offline",
}


def state_badge(state: str, label: str | None = None) -> str:
    """A device's fleet state (in_sync, drifting, never_reported, offline) as a coloured badge."""
    return format_html(
        '<span class="ss-badge ss-badge--{}">{}</span>', state, label or DEVICE_STATE_LABELS[state].lower()
    )


class DriftFilter(admin.SimpleListFilter):
    """In sync / drifting / never reported, and offline (not seen for ``SENSORSYNC_OFFLINE_AFTER_SECONDS``, or
    never): the fleet page's counts link here. Offline overlaps the other three."""

    title = "drift"
    parameter_name = "drift"

    def lookups(self, request, model_admin):
        return list(DEVICE_STATE_LABELS.items())

    def queryset(self, request, queryset):
        state = self.value()
        if state in DEVICE_STATE_LABELS:
            return queryset.filter(device_state_q(state))
        return queryset


class RetryBudgetFilter(admin.SimpleListFilter):
    """Devices whose retry budget ran out (not retried until staff act), or that have failed applies counted."""

    title = "retry budget"
    parameter_name = "retry"

    def lookups(self, request, model_admin):
        return [("exhausted", "Exhausted"), ("counting", "Failed applies counted")]

    def queryset(self, request, queryset):
        if self.value() == "exhausted":
            return queryset.filter(target_state__retry_exhausted_at__isnull=False)
        if self.value() == "counting":
            return queryset.filter(target_state__failed_applies__gt=0, target_state__retry_exhausted_at__isnull=True)
        return queryset


def has_model_permission(request, model, verb: str) -> bool:
    """``user.has_perm("<app>.<verb>_<model>")``: the permission the API asks of the same write."""
    opts = model._meta
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename(verb, opts)}")


@admin.register(Device)
class DeviceAdmin(DeviceFleetAdminMixin, ServiceAdminMixin, admin.ModelAdmin):
    form = DeviceAdminForm
    list_display = (
        "name",
        "drift",
        "target",
        "fetched_version",
        "reported_version",
        "sensor_count",
        "last_seen",
        "labels_shown",
        "draft_shown",
    )
    list_filter = (
        SelectorListFilter,
        DriftFilter,
        DraftFilter,
        RetryBudgetFilter,
        "is_active",
        ("provisioned_by", admin.RelatedOnlyFieldListFilter),
    )
    list_select_related = ("target_state", "current_state")
    search_fields = ("name", "uuid")
    search_help_text = "Search by name or uuid."
    ordering = ("name", "id")
    actions = (
        "reconcile_now",
        "rotate_api_key",
        "reset_retry_budget",
        "labels_change",
        "deploy_drafts",
        "discard_drafts",
        "draft_mode_on",
        "draft_mode_off",
    )

    # --- permissions: the API's, for the same writes ---

    def has_reconcile_permission(self, request, obj=None) -> bool:
        """Reconciling rewrites the sensor rows: the API asks ``sensors.change_devicesensor``."""
        return has_model_permission(request, DeviceSensor, "change")

    def has_rollback_permission(self, request, obj=None) -> bool:
        """A rollback writes a new target version: the API asks ``devices.change_devicetargetstate``."""
        return has_model_permission(request, DeviceTargetState, "change")

    def has_reset_retry_budget_permission(self, request, obj=None) -> bool:
        """A reset changes the target's retry budget: the API asks ``devices.change_devicetargetstate``."""
        return has_model_permission(request, DeviceTargetState, "change")

    # --- pages ---

    def get_queryset(self, request):
        rows = DeviceSensor.objects.filter(device=OuterRef("pk")).order_by().values("device")
        sensor_count = rows.annotate(count=Count("pk")).values("count")
        drifting_count = rows.exclude(deployment_status=Status.DEPLOYED).annotate(count=Count("pk")).values("count")
        return (
            super()
            .get_queryset(request)
            .select_related("target_state", "target_state__updated_by", "current_state", "provisioned_by")
            .annotate(
                sensor_count=Coalesce(Subquery(sensor_count), Value(0)),
                drifting_count=Coalesce(Subquery(drifting_count), Value(0)),
            )
        )

    def get_object(self, request, object_id, from_field=None):
        device = super().get_object(request, object_id, from_field)
        if device is not None:
            # Read-only fields are given no request: what the user may do from them travels on the object.
            device.can_roll_back = self.has_rollback_permission(request, device)
        return device

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            description = "The device's API key is generated when you save, and shown only once."
            return [(None, {"fields": EDITABLE_FIELDS, "description": description})]
        return [(None, {"fields": EDITABLE_FIELDS}), *READ_ONLY_FIELDSETS]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return tuple(field for _, options in READ_ONLY_FIELDSETS for field in options["fields"])

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/reconcile/", wrap(self.reconcile_view), name="{}_{}_reconcile".format(*info)),
            path(
                "<path:object_id>/rollback/<int:version>/",
                wrap(self.rollback_view),
                name="{}_{}_rollback".format(*info),
            ),
            path("<path:object_id>/rotate-key/", wrap(self.rotate_key_view), name="{}_{}_rotate_key".format(*info)),
            path(
                "<path:object_id>/retry-budget/reset/",
                wrap(self.retry_budget_reset_view),
                name="{}_{}_retry_budget_reset".format(*info),
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk is not None:
            context.update(
                convergence=panels.convergence(obj),
                sensors=panels.sensor_rows(obj),
                add_sensor_url=reverse("admin:sensors_devicesensor_add") + "?" + urlencode({"device": obj.pk}),
                sensors_url=reverse("admin:sensors_devicesensor_changelist") + "?" + urlencode({"q": obj.uuid}),
                events_url=reverse("admin:events_event_changelist") + "?" + urlencode({"q": obj.uuid}),
                logs_url=reverse("admin:devicelogs_devicelogline_changelist") + "?" + urlencode({"q": obj.uuid}),
                log_problems=device_log_recent_problems(device_id=obj.pk),
                can_add_sensor=request.user.has_perm("sensors.add_devicesensor"),
                can_reconcile=self.has_reconcile_permission(request, obj),
                can_reset_retry_budget=self.has_reset_retry_budget_permission(request, obj),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        # The service deletes a device with its read-model rows, which are a projection of the device, not
        # separate objects: the device's delete permission is what governs. (A sensor row that is only running
        # cannot be deleted on its own page, which would otherwise block deleting its device.)
        perms_needed.discard(str(DeviceSensor._meta.verbose_name))
        return deleted, model_count, perms_needed, protected

    # --- writes, all through the services ---

    def save_model(self, request, obj, form, change):
        values = {field: form.cleaned_data[field] for field in EDITABLE_FIELDS}
        created = None
        try:
            if change:
                saved = device_update(uuid=obj.uuid, user=request.user, **values)
            else:
                draft_mode = values.pop("draft_mode")
                created = device_create(**values, user=request.user)
                saved = created.device
                if draft_mode:
                    saved = device_update(uuid=saved.uuid, draft_mode=True, user=request.user)
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

    def message_reconciled(self, request, device: Device, result: ReconcileResult) -> None:
        changed = result.inserted + result.updated + result.removed
        rows = "the sensor rows were already up to date" if not changed else f"{changed} sensor row(s) changed"
        if result.in_sync:
            self.message_user(
                request,
                f"Reconciled “{device.name}”: in sync at target version {result.target_version}; {rows}.",
                messages.SUCCESS,
            )
            return
        drifting = ", ".join(result.drifting) or "none"
        reported = "never" if result.reported_version is None else f"v{result.reported_version}"
        self.message_user(
            request,
            f"Reconciled “{device.name}”: not in sync (target v{result.target_version}, reported {reported}; "
            f"not deployed: {drifting}); {rows}.",
            messages.WARNING,
        )

    @admin.action(description="Reconcile the selected devices now", permissions=["reconcile"])
    def reconcile_now(self, request, queryset):
        """Re-run reconciliation from each device's stored target and report; safe to repeat (a projection)."""
        for device in queryset:
            with contextlib.suppress(Device.DoesNotExist):
                self.message_reconciled(request, device, device_reconcile_now(uuid=device.uuid, user=request.user))

    @admin.action(description="Rotate the API key of the selected devices", permissions=["change"])
    def rotate_api_key(self, request, queryset):
        """Asks for confirmation first: the device's agent is locked out until it is given the new key."""
        if request.POST.get("post") != "yes":
            return self.rotate_key_confirmation(request, queryset)
        for uuid in queryset.values_list("uuid", flat=True):
            self.message_key(request, device_key_rotate(uuid=uuid, user=request.user))
        return None

    @admin.action(description="Reset the retry budget of the selected devices", permissions=["reset_retry_budget"])
    def reset_retry_budget(self, request, queryset):
        """Staff acted: the failed applies counted and any exhaustion are cleared (the agent is sent nothing new)."""
        for device in queryset:
            with contextlib.suppress(Device.DoesNotExist):
                retry_budget_reset(uuid=device.uuid, user=request.user)
        self.message_user(
            request,
            f"Reset the retry budget of {len(queryset)} device(s). A new target version makes their agents apply "
            "again; until then they run what they run.",
        )

    def rotate_key_confirmation(self, request, devices, title="Rotate API keys"):
        return TemplateResponse(
            request,
            "admin/devices/device/rotate_key_confirmation.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "opts": self.opts,
                "queryset": devices,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media,
            },
        )

    # --- the device page's own actions (POST with the CSRF token; the pages that change state ask first) ---

    def _device_for(self, request, object_id, *, allowed) -> Device:
        """The device of a page action, if ``allowed(request, device)`` (one of the ``has_*_permission``)."""
        device = self.get_object(request, unquote(object_id))
        if device is None:
            raise Http404("No such device.")
        if not allowed(request, device):
            raise PermissionDenied
        return device

    def _change_url(self, device: Device) -> str:
        return reverse("admin:devices_device_change", args=[device.pk])

    def reconcile_view(self, request, object_id):
        """The "Reconcile now" button: re-projects the rows from what is stored; nothing else changes."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        device = self._device_for(request, object_id, allowed=self.has_reconcile_permission)
        try:
            result = device_reconcile_now(uuid=device.uuid, user=request.user)
        except Device.DoesNotExist:
            raise Http404("The device was deleted meanwhile.") from None
        self.message_reconciled(request, device, result)
        return HttpResponseRedirect(self._change_url(device))

    def retry_budget_reset_view(self, request, object_id):
        """The "Reset retry budget" button of a device whose budget is counting or ran out."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        device = self._device_for(request, object_id, allowed=self.has_reset_retry_budget_permission)
        try:
            retry_budget_reset(uuid=device.uuid, user=request.user)
        except Device.DoesNotExist:
            raise Http404("The device was deleted meanwhile.") from None
        self.message_user(
            request,
            f"Reset the retry budget of “{device.name}”: its failed applies count from zero again. Publish a new "
            "target version (or roll back) to have its agent apply again.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(self._change_url(device))

    def rotate_key_view(self, request, object_id):
        device = self._device_for(request, object_id, allowed=self.has_change_permission)
        if request.method != "POST" or request.POST.get("post") != "yes":
            return self.rotate_key_confirmation(request, [device], title=f"Rotate the API key of {device.name}")
        self.message_key(request, device_key_rotate(uuid=device.uuid, user=request.user))
        return HttpResponseRedirect(self._change_url(device))

    def rollback_view(self, request, object_id, version):
        """Roll the target back to an earlier version's content (a new version): a confirmation page, then POST.

        The page carries the target version it was rendered from: if someone changes the target meanwhile, the
        rollback is refused (``If-Match``) and the page shown again with the new picture.
        """
        device = self._device_for(request, object_id, allowed=self.has_rollback_permission)
        old = (
            DeviceTargetStateVersion.objects.filter(device=device, version=version).select_related("created_by").first()
        )
        if old is None:
            raise Http404(f"This device has no target version {version}.")
        target = device.target_state
        if request.method == "POST" and request.POST.get("post") == "yes":
            shown = request.POST.get("target_version", "")
            try:
                new = target_state_rollback(
                    uuid=device.uuid, version=version, user=request.user, if_match=f'"{shown}"' if shown else None
                )
            except PreconditionFailed as exc:
                self.message_user(
                    request,
                    f"The target changed since the confirmation was shown (it is now version "
                    f"{exc.current_etag.strip(chr(34))}). Check the changes below and confirm again.",
                    messages.ERROR,
                )
                return HttpResponseRedirect(request.path)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
                return HttpResponseRedirect(self._change_url(device))
            if new.version == target.version:
                self.message_user(
                    request,
                    f"Version {version} has the same content as the current target (v{target.version}): "
                    "nothing to roll back.",
                    messages.INFO,
                )
            else:
                self.message_user(
                    request,
                    f"Rolled “{device.name}” back to the content of version {version}: the target is now version "
                    f"{new.version}; the agent applies it on its next poll.",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(self._change_url(device))

        change = config_change_summary(target.config, old.config)
        return TemplateResponse(
            request,
            "admin/devices/device/rollback_confirmation.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Roll back {device.name} to target version {version}",
                "opts": self.opts,
                "original": device,
                "device": device,
                "target": target,
                "old": old,
                "same_content": old.config == target.config and old.apps == target.apps,
                "apps_change": old.apps != target.apps,
                "added": change.get("added", []),
                "updated": change.get("updated", []),
                "removed": change.get("removed", []),
                "old_sensors": old.config.get("sensors", []),
                "old_config": json_text(old.config),
                "change_url": self._change_url(device),
                "media": self.media,
            },
        )

    # --- columns and read-only fields ---

    @admin.display(description="Drift", ordering="target_state__needs_deployment")
    def drift(self, obj: Device):
        if obj.current_state_or_none() is None:
            badge = state_badge("never_reported")
        elif obj.target_state.needs_deployment:
            count = getattr(obj, "drifting_count", 0)
            badge = state_badge("drifting", f"drifting · {count} sensor{'' if count == 1 else 's'}" if count else None)
        else:
            badge = state_badge("in_sync")
        if obj.target_state.retry_exhausted_at is not None:
            badge = format_html('{} <span class="ss-badge ss-badge--failed">retry budget exhausted</span>', badge)
        if not obj.is_active:
            # Its agent is refused (403) whatever it reports: say so where the drift is read.
            return format_html('{} <span class="ss-badge ss-badge--quiet">inactive</span>', badge)
        return badge

    @admin.display(description="Registered by")
    def registered_by(self, obj: Device):
        key = obj.provisioned_by
        if key is None:
            return "created by staff"
        url = reverse("admin:devices_provisioningkey_change", args=[key.pk])
        return format_html('provisioning key <a href="{}">{}</a> on {}', url, key.name, obj.created_at.date())

    @admin.display(description="Last seen", ordering="last_seen_at")
    def last_seen(self, obj: Device):
        offline = obj.last_seen_at is None or obj.last_seen_at < offline_cutoff()
        return format_html(
            '<span class="ss-nowrap" title="{}"><span class="ss-dot{}"></span>{}{}</span>',
            shown_value(obj.last_seen_at),
            " ss-dot--offline" if offline else "",
            "offline · " if offline and obj.last_seen_at else "",
            ago(obj.last_seen_at),
        )

    @admin.display(description="Target", ordering="target_state__version")
    def target(self, obj: Device):
        return format_html('<span class="ss-ver" title="The desired version">v{}</span>', self.target_version(obj))

    @admin.display(description="Target version", ordering="target_state__version")
    def target_version(self, obj: Device):
        target = getattr(obj, "target_state", None)
        return target.version if target else None

    @admin.display(description="Fetched", ordering="last_fetched_version")
    def fetched_version(self, obj: Device):
        return version_chip(obj.last_fetched_version, self.target_version(obj))

    @admin.display(description="Reported", ordering="current_state__version")
    def reported_version(self, obj: Device):
        current = obj.current_state_or_none()
        return version_chip(current.version if current else None, self.target_version(obj))

    @admin.display(description="Converged", boolean=True, ordering="-target_state__needs_deployment")
    def converged(self, obj: Device):
        """A green check means the agent runs the target exactly (the inverse of ``needs_deployment``)."""
        target = getattr(obj, "target_state", None)
        return (not target.needs_deployment) if target else None

    @admin.display(description="Sensors", ordering="sensor_count")
    def sensor_count(self, obj: "WithAnnotations[Device, _SensorCounts]") -> int:
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

    # --- the Facts panel: the agent's latest metrics (Device.facts), every value escaped ---

    @admin.display(description="Reported at")
    def facts_reported(self, obj: Device):
        if obj.facts_reported_at is None:
            return "Never: the agent has not sent metrics yet."
        return format_html(
            '{} <span class="ss-quiet">({})</span>', shown_value(obj.facts_reported_at), ago(obj.facts_reported_at)
        )

    @admin.display(description="Uptime")
    def uptime_shown(self, obj: Device):
        if obj.uptime is None:
            return EMPTY_VALUE_DISPLAY
        return format_html('<span title="{} s">{}</span>', f"{obj.uptime:g}", panels.duration_words(obj.uptime))

    @admin.display(description="Online (as the agent says)", boolean=True)
    def is_online(self, obj: Device):
        return obj.facts.get("is_online")

    @admin.display(description="CPU")
    def cpu(self, obj: Device):
        return panels.number(obj.facts.get("cpu_usage"), "%")

    @admin.display(description="Memory")
    def memory(self, obj: Device):
        return panels.used_of(obj.facts.get("memory_usage"), obj.facts.get("memory_total"))

    @admin.display(description="Storage")
    def storage(self, obj: Device):
        return panels.used_of(obj.facts.get("storage_usage"), obj.facts.get("storage_total"))

    @admin.display(description="Temperature")
    def temperature(self, obj: Device):
        return panels.number(obj.facts.get("temperature"), "°C")

    @admin.display(description="Network interfaces")
    def network_interfaces(self, obj: Device):
        return panels.network_interfaces(obj.facts.get("network_interfaces") or [])

    @admin.display(description="Top processes")
    def top_processes(self, obj: Device):
        return panels.top_processes(obj.facts.get("top_processes") or [])

    @admin.display(description=f"Last {panels.TARGET_HISTORY_SHOWN} versions")
    def target_history(self, obj: Device):
        return panels.target_history(obj)


@admin.register(ProvisioningKey)
class ProvisioningKeyAdmin(ServiceAdminMixin, admin.ModelAdmin):
    """Keys with which devices register themselves. Created through the service (the key is shown once, in the
    message after saving), revoked with the action, never edited or deleted: devices say which key registered
    them."""

    form = ProvisioningKeyAdminForm
    list_display = ("name", "key_prefix", "state", "devices_registered", "expires_at", "last_used_at", "created_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "key_prefix", "uuid")
    readonly_fields = (
        "uuid",
        "key_prefix",
        "state",
        "devices_registered",
        "last_used_at",
        "revoked_at",
        "revoked_by",
        "created_at",
        "created_by",
        "registered_devices",
    )
    actions = ("revoke",)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by", "revoked_by")

    def get_fields(self, request, obj=None):
        if obj is None:
            return ("name", "expires_at", "max_devices", "default_labels")
        return ("name", "expires_at", "max_devices", "default_labels_shown", *self.readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("name", "expires_at", "max_devices", "default_labels_shown", *self.readonly_fields)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if change:
            return  # every field is read-only once the key exists
        data = form.cleaned_data
        try:
            created = provisioning_key_create(
                name=data["name"],
                expires_at=data["expires_at"],
                max_devices=data["max_devices"],
                default_labels=data["default_labels"],
                user=request.user,
            )
        except SERVICE_REJECTIONS as exc:
            raise ServiceRejected(exc) from exc
        self.adopt(obj, created.key)
        self.message_user(
            request,
            format_html(
                "Provisioning key “{}”: <code>{}</code> &mdash; shown only this once (only its digest is kept). "
                "Give it to the agents as PROVISIONING_KEY (2025-11-22) or PROVISIONING_API_KEY (2025-11-06).",
                created.key.name,
                created.secret,
            ),
            messages.SUCCESS,
        )

    @admin.action(description="Revoke the selected provisioning keys", permissions=["change"])
    def revoke(self, request, queryset):
        keys = list(queryset)
        for key in keys:
            provisioning_key_revoke(uuid=key.uuid, user=request.user)
        self.message_user(
            request, f"Revoked {len(keys)} provisioning key(s); the devices they registered keep working."
        )

    @admin.display(description="State")
    def state(self, obj: ProvisioningKey):
        refusal = obj.refusal(timezone.now())
        if refusal is None:
            return state_badge("in_sync", "active")
        return state_badge("failed", refusal[0].removeprefix("provisioning_key_"))

    @admin.display(description="Default labels")
    def default_labels_shown(self, obj: ProvisioningKey):
        return ", ".join(f"{key}={value}" for key, value in sorted(obj.default_labels.items())) or "none"

    @admin.display(description="Devices registered")
    def devices_registered(self, obj: ProvisioningKey):
        limit = f" of {obj.max_devices}" if obj.max_devices else ""
        return f"{obj.registrations}{limit}"

    @admin.display(description="Devices it registered (newest first)")
    def registered_devices(self, obj: ProvisioningKey):
        devices = list(provisioning_key_devices(key=obj))
        if not devices:
            return "none yet"
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td><code>{}</code></td><td>{}</td></tr>',
            ((reverse("admin:devices_device_change", args=[d.pk]), d.name, d.uuid, d.created_at) for d in devices),
        )
        more = obj.registrations - len(devices)
        tail = format_html("<p>… and {} more.</p>", more) if more > 0 else ""
        return format_html(
            '<table class="ss-table"><thead><tr><th>Device</th><th>uuid</th><th>Registered</th></tr></thead>'
            "<tbody>{}</tbody></table>{}",
            rows,
            tail,
        )
