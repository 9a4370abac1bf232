"""The fleet configuration in the admin: templates, assignments and overrides (each write a service call; a change
that reaches devices is previewed, device by device, before it is applied), the render jobs with their progress,
and each device's configuration with where every field of every sensor came from."""

import json
import uuid as uuid_lib
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from sensorsync_project.ui.admin import SERVICE_REJECTIONS, ServiceAdminMixin, ServiceRejected
from sensorsync_project.ui.html import json_text, pretty_json, shown_value

from . import selectors, services
from .choices import RenderJobStatusChoices as JobStatus
from .forms import AssignmentAdminForm, SensorOverrideAdminForm, SensorTemplateAdminForm
from .models import Assignment, DeviceConfiguration, RenderJob, SensorOverride, SensorTemplate
from .rendering import SHOWN_FIELDS
from .selectors import Preview

CSS = {"all": ("sensorsync/fleetconfig.css",)}
PREVIEW_SHOWN = 100


def job_link(job: RenderJob) -> str:
    url = reverse("admin:fleetconfig_renderjob_change", args=[job.pk])
    return format_html('<a href="{}">render job</a>', url)


def job_message(request, job: RenderJob | None) -> None:
    """Tell staff what became of the re-render their change started."""
    if job is None:
        return
    job.refresh_from_db()
    if job.status == JobStatus.DONE:
        level = messages.WARNING if job.failed or job.with_problems else messages.SUCCESS
        text = format_html(
            "Re-rendered {} devices: {} changed, {} unchanged, {} failed, {} with problems ({}).",
            job.processed,
            job.changed,
            job.unchanged,
            job.failed,
            job.with_problems,
            job_link(job),
        )
    elif job.status == JobStatus.FAILED:
        level, text = messages.ERROR, format_html("The re-render failed ({}).", job_link(job))
    else:
        level = messages.INFO
        text = format_html(
            "{} devices to re-render: queued for the worker (manage.py render_fleet) ({}).", job.total, job_link(job)
        )
    messages.add_message(request, level, text)


def preview_table(preview: Preview) -> str:
    """Each changing device with what changes: sensors added and removed, fields before and after."""
    rows = []
    for change in preview.changes:
        url = reverse("admin:fleetconfig_deviceconfiguration_change", args=[change.device_id])
        diff = change.diff
        parts = [format_html('<span class="ss-badge ss-badge--draft-added">+ {}</span>', n) for n in diff["added"]]
        parts += [format_html('<span class="ss-badge ss-badge--draft-removed">- {}</span>', n) for n in diff["removed"]]
        for name, fields in diff["updated"].items():
            changes = format_html_join(
                "",
                "<li><code>{}</code>: <del>{}</del> → <ins>{}</ins></li>",
                (
                    (field, json_text(values["before"], limit=400), json_text(values["after"], limit=400))
                    for field, values in fields.items()
                ),
            )
            parts.append(
                format_html('<span class="ss-badge ss-badge--draft-updated">~ {}</span><ul>{}</ul>', name, changes)
            )
        problems = format_html_join("", '<li class="ss-error">{}</li>', ((p["message"],) for p in change.problems))
        rows.append(
            format_html(
                '<tr data-device="{}"><td><a href="{}">{}</a>{}</td><td class="fc-diff">{}</td>'
                "<td><ul>{}</ul></td></tr>",
                change.device_name,
                url,
                change.device_name,
                format_html(' <span class="ss-badge ss-badge--draft">draft</span>') if change.draft else "",
                format_html_join("", "{}", ((part,) for part in parts)),
                problems,
            )
        )
    return format_html_join("", "{}", ((row,) for row in rows))


class PreviewBeforeSaveMixin(admin.ModelAdmin):
    """A save that re-renders devices shows first, device by device, what it would change; "Apply" saves it."""

    def preview_of(self, request, form, obj) -> tuple[str, Preview] | None:
        """(what the change is, its preview), or None to save without one."""
        raise NotImplementedError

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        if request.method == "POST" and "_apply" not in request.POST:
            obj = self.get_object(request, unquote(object_id)) if object_id else None
            allowed = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
            if allowed and (obj is not None or object_id is None):
                form = self.get_form(request, obj, change=obj is not None)(request.POST, instance=obj)
                if form.is_valid():
                    try:
                        shown = self.preview_of(request, form, obj)
                    except ValidationError:
                        shown = None  # the save below refuses it, with the message on the form
                    if shown is not None:
                        return self._preview_response(request, obj, *shown)
        response = super().changeform_view(request, object_id, form_url, extra_context)
        # The admin saved in a transaction of its own, now committed: a small re-render has run.
        job_message(request, getattr(request, "fleetconfig_job", None))
        return response

    def _preview_response(self, request, obj, what: str, preview: Preview) -> TemplateResponse:
        cancel = (
            reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[obj.pk])
            if obj is not None
            else reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_add")
        )
        posted = [
            (key, value) for key, values in request.POST.lists() for value in values if key != "csrfmiddlewaretoken"
        ]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Preview: {what}",
            "what": what,
            "preview": preview,
            "table": preview_table(preview),
            "posted": posted,
            "cancel_url": cancel,
            "media": self.media,
        }
        return TemplateResponse(request, "admin/fleetconfig/preview.html", context)


# --- templates -----------------------------------------------------------------------------------------------------


@admin.register(SensorTemplate)
class SensorTemplateAdmin(PreviewBeforeSaveMixin, ServiceAdminMixin, admin.ModelAdmin):
    form = SensorTemplateAdminForm
    list_display = ("name", "version", "sensor_count", "assignments_shown", "updated_at", "updated_by")
    search_fields = ("name", "description")
    readonly_fields = ("uuid", "history", "staged")

    class Media:
        css = CSS

    def get_queryset(self, request):
        return selectors.template_list()

    def get_fieldsets(self, request, obj=None):
        editing = (None, {"fields": ("name", "description", "sensors", "note", "version")})
        if obj is None:
            return [editing]
        return [editing, ("In stages", {"fields": ("staged",)}), ("History", {"fields": ("uuid", "history")})]

    @admin.display(description="Roll out in stages")
    def staged(self, obj):
        # A link by URL name: the rollouts app sits above this one and is not imported here.
        url = reverse("admin:rollouts_rollout_add") + "?" + urlencode({"template": obj.pk})
        return format_html(
            '<a href="{}" id="rollout-template">Roll a change of these sensors out in stages</a> '
            "<span class='ss-quiet'>(stages of devices, a success and an error threshold; saving here instead "
            "changes every device at once)</span>",
            url,
        )

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["fields"] = ["description"]  # the rest are the form's own fields, validated by the service
        return super().get_form(request, obj, change, **kwargs)

    def has_delete_permission(self, request, obj=None):
        # Refused by the service while assignments use it; said on the page rather than failing on confirm.
        return super().has_delete_permission(request, obj) and (obj is None or not obj.assignments.exists())

    def preview_of(self, request, form, obj):
        if obj is None:
            return None  # no assignment uses a new template
        sensors = services.template_sensors_validate(form.cleaned_data["sensors"])
        scope = services.template_scope(obj)
        if scope is None or sensors == selectors.latest_sensors(obj):
            return None
        assignments = selectors.assignments_with_template_version(
            selectors.assignment_inputs(), template=obj, version=obj.version + 1, sensors=sensors
        )
        preview = selectors.change_preview(
            devices=selectors.scope_devices(scope), assignments=assignments, shown=PREVIEW_SHOWN
        )
        return f"template {obj.name} v{obj.version + 1}", preview

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            if change:
                result = services.sensor_template_update(
                    uuid=obj.uuid,
                    user=request.user,
                    name=data["name"],
                    description=data["description"],
                    sensors=data["sensors"],
                    note=data["note"],
                    if_match=form.if_match(),
                )
                saved, request.fleetconfig_job = result.instance, result.job
            else:
                saved = services.sensor_template_create(
                    name=data["name"],
                    description=data["description"],
                    sensors=data["sensors"],
                    note=data["note"],
                    user=request.user,
                )
        except SERVICE_REJECTIONS as exc:
            raise ServiceRejected(exc) from exc
        self.adopt(obj, saved)

    def delete_model(self, request, obj):
        services.sensor_template_delete(uuid=obj.uuid, user=request.user)

    @admin.display(description="Sensors")
    def sensor_count(self, obj):
        return len(obj.latest_sensors or [])

    @admin.display(description="Assignments", ordering="assignment_count")
    def assignments_shown(self, obj):
        url = reverse("admin:fleetconfig_assignment_changelist") + "?" + urlencode({"template__id__exact": obj.pk})
        return format_html('<a href="{}">{}</a>', url, obj.assignment_count)

    @admin.display(description="Versions")
    def history(self, obj):
        rows = format_html_join(
            "",
            "<tr><td>v{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    version.version,
                    shown_value(version.created_at),
                    version.created_by or "-",
                    version.note or "-",
                    pretty_json([s["name"] for s in version.sensors]),
                )
                for version in selectors.template_versions(template_uuid=obj.uuid)[:50]
            ),
        )
        return format_html(
            '<table class="fc-table"><thead><tr><th>Version</th><th>When</th><th>Who</th><th>Note</th>'
            "<th>Sensors</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )


# --- assignments ---------------------------------------------------------------------------------------------------


@admin.register(Assignment)
class AssignmentAdmin(PreviewBeforeSaveMixin, ServiceAdminMixin, admin.ModelAdmin):
    form = AssignmentAdminForm
    list_display = (
        "name",
        "template_link",
        "version_shown",
        "selector_shown",
        "priority",
        "problems_shown",
        "updated_at",
    )
    list_filter = ("template",)
    search_fields = ("name", "selector", "template__name")
    readonly_fields = ("uuid", "reach", "problems_found", "staged")

    class Media:
        css = CSS

    def get_queryset(self, request):
        return selectors.assignment_list()

    def get_fieldsets(self, request, obj=None):
        editing = (
            None,
            {"fields": ("name", "description", "template", "template_version", "selector", "priority")},
        )
        if obj is None:
            return [editing]
        return [editing, ("On the fleet", {"fields": ("uuid", "reach", "problems_found", "staged")})]

    @admin.display(description="Roll out in stages")
    def staged(self, obj):
        url = reverse("admin:rollouts_rollout_add") + "?" + urlencode({"assignment": obj.pk})
        return format_html('<a href="{}">Move it to another template version in stages</a>', url)

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["fields"] = ["description"]  # the rest are the form's own fields, validated by the service
        return super().get_form(request, obj, change, **kwargs)

    def preview_of(self, request, form, obj):
        values = form.service_values()
        proposed = services.assignment_fields_validate(current=obj, **values)
        if obj is not None and (obj.template, obj.template_version, obj.selector, obj.priority) == (
            proposed.template,
            proposed.template_version,
            str(proposed.selector),
            proposed.priority,
        ):
            return None  # a new name or description renders nothing differently
        key = str(obj.uuid) if obj is not None else "new"
        assignments = selectors.assignments_with(
            selectors.assignment_inputs(), replace_uuid=key, add=proposed.as_input(uuid=key)
        )
        scope = services.assignment_scope(*([obj] if obj is not None else []), proposed)
        preview = selectors.change_preview(
            devices=selectors.scope_devices(scope), assignments=assignments, shown=PREVIEW_SHOWN
        )
        return f"assignment {proposed.name}", preview

    def save_model(self, request, obj, form, change):
        try:
            if change:
                result = services.assignment_update(uuid=obj.uuid, user=request.user, **form.service_values())
            else:
                result = services.assignment_create(user=request.user, **form.service_values())
        except SERVICE_REJECTIONS as exc:
            raise ServiceRejected(exc) from exc
        request.fleetconfig_job = result.job
        self.adopt(obj, result.instance)

    def delete_view(self, request, object_id, extra_context=None):
        assignment = self.get_object(request, unquote(object_id))
        if assignment is not None and request.method == "GET":
            assignments = selectors.assignments_with(selectors.assignment_inputs(), replace_uuid=str(assignment.uuid))
            preview = selectors.change_preview(
                devices=selectors.scope_devices(services.assignment_scope(assignment)),
                assignments=assignments,
                shown=PREVIEW_SHOWN,
            )
            extra_context = {**(extra_context or {}), "preview": preview, "table": preview_table(preview)}
        response = super().delete_view(request, object_id, extra_context)
        job_message(request, getattr(request, "fleetconfig_job", None))  # committed: a small re-render has run
        return response

    def delete_model(self, request, obj):
        request.fleetconfig_job = services.assignment_delete(uuid=obj.uuid, user=request.user).job

    def delete_queryset(self, request, queryset):
        for assignment in queryset:
            services.assignment_delete(uuid=assignment.uuid, user=request.user)

    @admin.display(description="Template", ordering="template__name")
    def template_link(self, obj):
        url = reverse("admin:fleetconfig_sensortemplate_change", args=[obj.template_id])
        return format_html('<a href="{}">{}</a>', url, obj.template.name)

    @admin.display(description="Version")
    def version_shown(self, obj):
        if obj.template_version:
            return format_html('v{} <span class="ss-quiet">(pinned)</span>', obj.template_version)
        return format_html('v{} <span class="ss-quiet">(latest)</span>', obj.template.version)

    @admin.display(description="Selector", ordering="selector")
    def selector_shown(self, obj):
        return format_html("<code>{}</code>", obj.selector or "(every device)")

    @admin.display(description="Problems", ordering="devices_with_problems")
    def problems_shown(self, obj):
        if not obj.devices_with_problems:
            return "-"
        url = reverse("admin:fleetconfig_deviceconfiguration_changelist") + "?" + urlencode({"problem": obj.uuid})
        return format_html(
            '<a class="ss-badge ss-badge--failed" href="{}">{} devices</a>', url, obj.devices_with_problems
        )

    @admin.display(description="Reach")
    def reach(self, obj):
        counts = selectors.assignment_counts(assignment=obj)
        devices = reverse("admin:devices_device_changelist") + "?" + urlencode({"selector": obj.selector})
        return format_html(
            '<a href="{}">{} devices</a> selected, {} converged, {} with problems',
            devices,
            counts.targeted,
            counts.converged,
            counts.with_problems,
        )

    @admin.display(description="Problems found")
    def problems_found(self, obj):
        problems = selectors.problem_list().filter(assignment=obj)[:50]
        if not problems:
            return "None."
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                '<li class="ss-error"><a href="{}">{}</a>: {}</li>',
                (
                    (
                        reverse("admin:fleetconfig_deviceconfiguration_change", args=[p.device_id]),
                        p.device.name,
                        p.message,
                    )
                    for p in problems
                ),
            ),
        )


# --- overrides -----------------------------------------------------------------------------------------------------


@admin.register(SensorOverride)
class SensorOverrideAdmin(ServiceAdminMixin, admin.ModelAdmin):
    form = SensorOverrideAdminForm
    list_display = ("device", "sensor_name", "field", "value_shown", "updated_at", "updated_by")
    list_filter = ("field",)
    search_fields = ("device__name", "device__uuid", "sensor_name", "field")
    list_select_related = ("device", "updated_by")

    class Media:
        css = CSS

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["fields"] = ["device"]  # the rest are the form's own fields, validated by the service
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        return [(None, {"fields": ("device", "sensor_name", "field", "value")})]

    def get_changeform_initial_data(self, request):
        initial: dict[str, Any] = super().get_changeform_initial_data(request)
        if "value" in initial:  # from the device configuration page: the value now, as JSON text
            try:
                initial["value"] = json.loads(initial["value"])
            except ValueError:
                del initial["value"]
        return initial

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            if change:
                result = services.sensor_override_update(uuid=obj.uuid, value=data["value"], user=request.user)
            else:
                result = services.sensor_override_set(
                    device_uuid=data["device"].uuid,
                    sensor_name=data["sensor_name"],
                    field=data["field"],
                    value=data["value"],
                    user=request.user,
                )
        except SERVICE_REJECTIONS as exc:
            raise ServiceRejected(exc) from exc
        self.adopt(obj, result.override)
        if not result.applied:
            messages.warning(
                request,
                f"No assignment renders a sensor '{result.override.sensor_name}' on this device: the override is "
                "kept and applies once one does.",
            )

    def _device_page(self, obj) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:fleetconfig_deviceconfiguration_change", args=[obj.device_id]))

    def response_add(self, request, obj, post_url_continue=None):
        response = super().response_add(request, obj, post_url_continue)
        return response if {"_continue", "_addanother"} & set(request.POST) else self._device_page(obj)

    def response_change(self, request, obj):
        response = super().response_change(request, obj)
        return response if {"_continue", "_addanother"} & set(request.POST) else self._device_page(obj)

    def delete_model(self, request, obj):
        services.sensor_override_delete(uuid=obj.uuid, user=request.user)

    def delete_queryset(self, request, queryset):
        for override in queryset:
            self.delete_model(request, override)

    @admin.display(description="Value")
    def value_shown(self, obj):
        return format_html("<code>{}</code>", json_text(obj.value, limit=200))


# --- render jobs ---------------------------------------------------------------------------------------------------


@admin.register(RenderJob)
class RenderJobAdmin(admin.ModelAdmin):
    list_display = ("created_at", "reason", "status_shown", "progress_shown", "changed", "failed", "with_problems")
    list_filter = ("status",)
    actions = ("queue_again",)
    fields = (
        "uuid",
        "reason",
        "status_shown",
        "progress_shown",
        "total",
        "processed",
        "changed",
        "unchanged",
        "failed",
        "with_problems",
        "failures",
        "scope_shown",
        "created_at",
        "created_by",
        "actor",
        "started_at",
        "finished_at",
    )
    readonly_fields = fields

    class Media:
        css = CSS

    def get_queryset(self, request):
        return selectors.render_job_list()

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Queue the selected failed jobs again", permissions=["view"])
    def queue_again(self, request, queryset):
        if not request.user.has_perm("fleetconfig.change_renderjob"):
            raise PermissionDenied
        failed = [job for job in queryset if job.status == JobStatus.FAILED]
        for job in failed:
            services.render_job_requeue(job_uuid=job.uuid, user=request.user)
        self.message_user(request, f"{len(failed)} failed jobs queued again (the others were left as they were).")

    @admin.display(description="Status", ordering="status")
    def status_shown(self, obj):
        css = {JobStatus.DONE: "in_sync", JobStatus.FAILED: "failed", JobStatus.RUNNING: "reconciling"}
        return format_html('<span class="ss-badge ss-badge--{}">{}</span>', css.get(obj.status, "pending"), obj.status)

    @admin.display(description="Progress")
    def progress_shown(self, obj):
        return format_html(
            '<progress class="fc-progress" value="{}" max="{}"></progress> {}/{}',
            obj.processed,
            max(obj.total, obj.processed, 1),
            obj.processed,
            obj.total,
        )

    @admin.display(description="Devices it could not write")
    def failures(self, obj):
        if not obj.errors:
            return "None."
        return format_html(
            "<ul>{}</ul>", format_html_join("", '<li class="ss-error">{}</li>', ((e,) for e in obj.errors))
        )

    @admin.display(description="Devices")
    def scope_shown(self, obj):
        scope = obj.scope
        if scope.get("all"):
            return "Every device"
        if "selectors" in scope:
            return format_html_join(
                ", ", "<code>{}</code>", ((text or "(every device)",) for text in scope["selectors"])
            )
        return f"{len(scope.get('devices', []))} devices by id"


# --- each device's configuration -----------------------------------------------------------------------------------


class ProblemFilter(admin.SimpleListFilter):
    title = "problems"
    parameter_name = "problem"

    def lookups(self, request, model_admin):
        return [("any", "With problems"), *((str(a.uuid), a.name) for a in Assignment.objects.order_by("name"))]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "any":
            return queryset.filter(render_problems__isnull=False).distinct()
        if value:
            try:
                return queryset.filter(render_problems__assignment__uuid=uuid_lib.UUID(value)).distinct()
            except ValueError:
                return queryset.none()
        return queryset


@admin.register(DeviceConfiguration)
class DeviceConfigurationAdmin(admin.ModelAdmin):
    """Read-only: a device's labels, the assignments that match them, and each sensor with where each of its fields
    came from, with a link to override any field on this device."""

    list_display = ("name", "labels_shown", "problems_shown")
    list_filter = (ProblemFilter,)
    search_fields = ("name", "uuid", "labels__value")
    change_form_template = "admin/fleetconfig/deviceconfiguration/change_form.html"

    class Media:
        css = CSS

    def get_queryset(self, request) -> QuerySet[DeviceConfiguration]:
        return (
            DeviceConfiguration.objects.prefetch_related("labels")
            .annotate(problem_count=Count("render_problems", distinct=True))
            .order_by("name", "id")
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        urls = super().get_urls()
        render = path(
            "<path:object_id>/render/",
            self.admin_site.admin_view(self.render_view),
            name="fleetconfig_deviceconfiguration_render",
        )
        return [render, *urls]

    def render_view(self, request, object_id):
        """Re-render this device now (a POST from its page)."""
        if request.method != "POST" or not request.user.has_perm("fleetconfig.add_renderjob"):
            raise PermissionDenied
        device = self.get_object(request, object_id)
        if device is None:
            return HttpResponseRedirect(reverse("admin:fleetconfig_deviceconfiguration_changelist"))
        job = services.render_request(
            scope={"devices": [str(device.uuid)]}, reason="requested by staff", user=request.user
        )
        job_message(request, job)
        return HttpResponseRedirect(reverse("admin:fleetconfig_deviceconfiguration_change", args=[device.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        device = self.get_object(request, unquote(object_id))
        if device is None:
            raise Http404(f"No device with id {object_id}.")
        if not self.has_view_permission(request, device):
            raise PermissionDenied
        found = selectors.device_rendering(device_uuid=device.uuid)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Configuration of {device.name}",
            "device": device,
            "found": found,
            "sensors": self._sensor_tables(request, found),
            "problems": [p.as_dict() for p in found.rendering.problems],
            "overrides": found.overrides,
            "unused": {o.uuid for o in found.rendering.unused_overrides},
            "can_render": request.user.has_perm("fleetconfig.add_renderjob"),
            "media": self.media,
        }
        return TemplateResponse(request, self.change_form_template, context)

    def _sensor_tables(self, request, found) -> list[dict]:
        can_override = request.user.has_perm("fleetconfig.add_sensoroverride")
        by_name = {s["name"]: s for s in found.rendering.sensors}
        tables = []
        for name, shown in found.rendering.provenance.items():
            sensor = by_name[name]
            fields = shown.get("fields", {})
            rows = []
            for key in [*SHOWN_FIELDS, *sorted(k for k in fields if "." in k)]:
                base, _, sub = key.partition(".")
                value = sensor.get(base) if not sub else (sensor.get(base) or {}).get(sub)
                link = ""
                if can_override and shown["origin"] == "template" and key not in ("name", "protocol"):
                    query = urlencode(
                        {"device": found.device.pk, "sensor_name": name, "field": key, "value": json_text(value)}
                    )
                    link = reverse("admin:fleetconfig_sensoroverride_add") + "?" + query
                rows.append(
                    {"field": key, "value": json_text(value, limit=2000), "source": fields.get(key), "link": link}
                )
            tables.append(
                {"name": name, "origin": shown["origin"], "rows": rows, "assignments": shown.get("assignments", [])}
            )
        return tables

    @admin.display(description="Labels")
    def labels_shown(self, obj):
        return format_html_join(
            " ", '<span class="ss-label">{}={}</span>', ((label.key, label.value) for label in obj.labels.all())
        )

    @admin.display(description="Problems", ordering="problem_count")
    def problems_shown(self, obj):
        if not obj.problem_count:
            return "-"
        return format_html('<span class="ss-badge ss-badge--failed">{}</span>', obj.problem_count)
