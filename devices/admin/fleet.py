"""The device admin's fleet configuration: labels (an inline on the device page, a bulk action over selected devices,
a selector filter on the list) and drafts (draft mode, the draft's panel, deploy and discard, one device or the
selected ones). ``DeviceFleetAdminMixin`` is mixed into ``pages.DeviceAdmin``; every write is a service call."""

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from reconciliation.services.drafts import DraftsResult, draft_deploy, draft_discard, drafts_deploy, drafts_discard
from sensorsync_project.exceptions import PreconditionFailed, StateConflict
from sensorsync_project.ui.admin import SERVICE_REJECTIONS, ServiceRejected
from sensorsync_project.ui.html import pretty_json, shown_value

from ..forms import DeviceLabelInlineForm, LabelsChangeForm
from ..labels import Selector
from ..models import Device, DeviceLabel, DeviceTargetDraft
from ..services import device_labels_set, devices_draft_mode_set, devices_labels_update
from ..target_config import config_sensors


class DeviceLabelInline(admin.TabularInline):
    """The device's labels, edited on its page and saved together through ``device_labels_set``
    (``DeviceFleetAdminMixin.save_formset``). Whoever may change the device may change its labels, as in the API."""

    model = DeviceLabel
    form = DeviceLabelInlineForm
    fields = ("key", "value")
    extra = 1
    verbose_name = "label"
    verbose_name_plural = "labels"

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("devices.view_device")

    def has_add_permission(self, request, obj=None):
        return request.user.has_perm("devices.change_device")

    def has_change_permission(self, request, obj=None):
        return request.user.has_perm("devices.change_device")

    def has_delete_permission(self, request, obj=None):
        return request.user.has_perm("devices.change_device")


class DraftFilter(admin.SimpleListFilter):
    title = "draft"
    parameter_name = "draft"

    def lookups(self, request, model_admin):
        return [("mode", "In draft mode"), ("pending", "Draft not deployed"), ("off", "Not in draft mode")]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "mode":
            return queryset.filter(draft_mode=True)
        if value == "pending":
            return queryset.filter(target_draft__isnull=False)
        if value == "off":
            return queryset.filter(draft_mode=False)
        return queryset


def draft_badge(device: Device) -> str:
    draft = device.target_draft_or_none()
    if draft is not None:
        changes = sum(len(v) if isinstance(v, list) else 1 for v in draft.change.values())
        return format_html(
            '<span class="ss-badge ss-badge--draft" title="Not deployed: the agent still runs v{}">draft · {} '
            "change{}</span>",
            draft.base_version,
            changes,
            "" if changes == 1 else "s",
        )
    if device.draft_mode:
        return format_html('<span class="ss-badge ss-badge--quiet">{}</span>', "draft mode")
    return ""


class DeviceFleetAdminMixin(admin.ModelAdmin):
    inlines = (DeviceLabelInline,)

    # --- permissions: the API's ---

    def has_deploy_permission(self, request, obj=None) -> bool:
        """Deploying or discarding a draft writes the target: the API asks ``devices.change_devicetargetstate``."""
        return request.user.has_perm("devices.change_devicetargetstate")

    # --- pages ---

    def get_inlines(self, request, obj):
        # Labels are set once the device exists: the add page stays the form it always was.
        return self.inlines if obj is not None else ()

    def get_queryset(self, request):
        devices = super().get_queryset(request).select_related("target_draft", "target_draft__updated_by")
        match = request.resolver_match
        if match is None or not match.url_name.endswith("_changelist"):
            return devices  # the device page: the inline reads the labels, and the draft panel the draft's content
        return devices.defer("target_draft__config", "target_draft__apps").prefetch_related(
            Prefetch("labels", queryset=DeviceLabel.objects.order_by("key"))
        )

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        wrap = self.admin_site.admin_view
        return [
            path("<path:object_id>/deploy/", wrap(self.deploy_view), name="{}_{}_deploy".format(*info)),
            path("<path:object_id>/deploy/cancel/", wrap(self.discard_view), name="{}_{}_discard".format(*info)),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and obj.pk is not None:
            context.update(
                draft=draft_panel(obj.target_draft_or_none()), can_deploy=self.has_deploy_permission(request, obj)
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- labels, saved together through the service ---

    def save_formset(self, request, form, formset, change):
        if formset.model is not DeviceLabel:
            super().save_formset(request, form, formset, change)
            return
        labels = {}
        for label_form in formset.forms:
            if not label_form.cleaned_data or formset._should_delete_form(label_form):
                continue
            labels[label_form.cleaned_data["key"]] = label_form.cleaned_data["value"]
        try:
            device_labels_set(device_uuid=form.instance.uuid, labels=labels, user=request.user)
        except SERVICE_REJECTIONS as exc:
            raise ServiceRejected(exc) from exc
        # What the admin's change message reads from a saved formset; the service did the saving.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    @admin.action(description="Set or remove labels of the selected devices", permissions=["change"])
    def labels_change(self, request, queryset):
        """A form first (labels to set, keys to remove); applied in batches through ``devices_labels_update``."""
        form = LabelsChangeForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            try:
                result = devices_labels_update(
                    selector=Selector(),
                    set=form.cleaned_data["set"],
                    remove=form.cleaned_data["remove"],
                    uuids=list(queryset.values_list("uuid", flat=True)),
                    user=request.user,
                )
            except ValidationError as exc:
                form.add_service_error(exc)
            else:
                self.message_user(
                    request,
                    f"Labels changed on {result.changed} of the {result.matched} selected device(s)"
                    f"{'' if result.changed == result.matched else ' (the others already had them)'}.",
                    messages.SUCCESS,
                )
                return None
        return TemplateResponse(
            request,
            "admin/devices/device/labels_action.html",
            {
                **self.admin_site.each_context(request),
                "title": "Set or remove labels",
                "opts": self.opts,
                "queryset": queryset,
                "form": form,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "media": self.media + form.media,
            },
        )

    # --- drafts ---

    def _drafts_message(self, request, verb: str, result: DraftsResult) -> None:
        if not result.matched:
            self.message_user(request, "None of the selected devices has a draft.", messages.INFO)
            return
        self.message_user(request, f"{verb} {result.done} draft(s).", messages.SUCCESS)
        for uuid, why in result.refused.items():
            self.message_user(request, f"{uuid}: {why}", messages.ERROR)

    @admin.action(description="Deploy the drafts of the selected devices", permissions=["deploy"])
    def deploy_drafts(self, request, queryset):
        uuids = list(queryset.values_list("uuid", flat=True))
        self._drafts_message(request, "Deployed", drafts_deploy(selector=Selector(), uuids=uuids, user=request.user))

    @admin.action(description="Discard the drafts of the selected devices", permissions=["deploy"])
    def discard_drafts(self, request, queryset):
        uuids = list(queryset.values_list("uuid", flat=True))
        self._drafts_message(request, "Discarded", drafts_discard(selector=Selector(), uuids=uuids, user=request.user))

    @admin.action(description="Turn draft mode on for the selected devices", permissions=["change"])
    def draft_mode_on(self, request, queryset):
        self._draft_mode(request, queryset, enabled=True)

    @admin.action(description="Turn draft mode off for the selected devices", permissions=["change"])
    def draft_mode_off(self, request, queryset):
        self._draft_mode(request, queryset, enabled=False)

    def _draft_mode(self, request, queryset, *, enabled: bool) -> None:
        uuids = list(queryset.values_list("uuid", flat=True))
        try:
            result = devices_draft_mode_set(selector=Selector(), enabled=enabled, uuids=uuids, user=request.user)
        except StateConflict as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        state = "on" if enabled else "off"
        self.message_user(
            request, f"Draft mode {state} for {result.changed} device(s) ({result.matched} selected).", messages.SUCCESS
        )

    def _draft_action(self, request, object_id, act, done: str):
        """The device page's Deploy draft / Discard draft buttons: POST, with the draft's ETag the page showed."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        device = self.get_object(request, object_id)
        if device is None:
            raise Http404("No such device.")
        if not self.has_deploy_permission(request, device):
            raise PermissionDenied
        shown = request.POST.get("etag", "")  # the draft's ETag as the page showed it, without its quotes
        try:
            act(device_uuid=device.uuid, user=request.user, if_match=f'"{shown}"' if shown else None)
        except PreconditionFailed:
            self.message_user(
                request,
                "The draft changed since this page was loaded: check it below, then deploy or discard it again.",
                messages.ERROR,
            )
        except StateConflict as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            self.message_user(request, done.format(name=device.name), messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:devices_device_change", args=[device.pk]))

    def deploy_view(self, request, object_id):
        return self._draft_action(
            request,
            object_id,
            draft_deploy,
            "Deployed the draft of “{name}”: a new target version, which the agent applies on its next poll.",
        )

    def discard_view(self, request, object_id):
        return self._draft_action(
            request, object_id, draft_discard, "Discarded the draft of “{name}”; the published target is unchanged."
        )

    # --- columns ---

    @admin.display(description="Labels")
    def labels_shown(self, obj: Device):
        labels = list(obj.labels.all())
        if not labels:
            return ""
        return format_html_join(
            " ",
            '<span class="ss-label" title="{}={}">{}={}</span>',
            ((label.key, label.value, label.key, label.value) for label in labels),
        )

    @admin.display(description="Draft")
    def draft_shown(self, obj: Device):
        return draft_badge(obj)


def draft_panel(draft: DeviceTargetDraft | None) -> dict | None:
    """What the device page's draft panel shows: the changes a deploy would make, sensor by sensor, with the
    drafted configuration; None when the device has no draft."""
    if draft is None:
        return None
    drafted = {s["name"]: s for s in config_sensors(draft.config)}
    sensors = [
        {"name": name, "change": change, "sensor": pretty_json(drafted[name]) if name in drafted else ""}
        for change in ("added", "updated", "removed")
        for name in draft.change.get(change, [])
    ]
    return {
        "base_version": draft.base_version,
        "etag": draft.etag.strip('"'),
        "sensors": sensors,
        "apps": bool(draft.change.get("apps")),
        "empty": not draft.change,
        "updated_at": shown_value(draft.updated_at),
        "updated_by": draft.updated_by,
    }
