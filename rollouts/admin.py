"""Rollouts in the admin: start one (a template or assignment change, its stages and thresholds), watch it (progress
per stage from the read model, the reasons for failure, a chart), and pause, resume or abort it. Every write is a
service call; the buttons are POSTs with the CSRF token, checked against ``rollouts.change_rollout``."""

import json
from collections.abc import Callable

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from fleetconfig.models import Assignment, SensorTemplate, SensorTemplateVersion
from sensorsync_project.ui.admin import SERVICE_REJECTIONS, ServiceAdminMixin, ServiceRejected

from . import selectors, services
from .charts import progress_chart
from .choices import RolloutStatusChoices as Status
from .forms import RolloutCreateForm, stages_text
from .models import Rollout

_TONES = {
    Status.RUNNING: "reconciling",
    Status.PAUSED: "drifting",
    Status.ABORTED: "failed",
    Status.FINISHED: "deployed",
}
SHOWN = (
    "name",
    "status_shown",
    "kind",
    "template",
    "versions",
    "assignments_shown",
    "selector",
    "stages_shown",
    "success_threshold",
    "error_threshold",
    "deadline_seconds",
    "created_at",
    "created_by",
    "finished_at",
    "events_shown",
)


def _error_text(exc: Exception) -> str:
    if isinstance(exc, ValidationError) and hasattr(exc, "error_dict"):
        return "; ".join(f"{key}: {' '.join(found)}" for key, found in exc.message_dict.items())
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


@admin.register(Rollout)
class RolloutAdmin(ServiceAdminMixin, admin.ModelAdmin):
    list_display = ("name", "status_shown", "template", "versions", "stage_shown", "progress_shown", "created_at")
    list_filter = ("status", "kind")
    search_fields = ("name", "uuid", "template__name")
    readonly_fields = SHOWN
    change_form_template = "admin/rollouts/rollout/change_form.html"

    def get_queryset(self, request):
        return selectors.rollout_list()

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        page = list(changelist.result_list)
        # Every rollout of the page's progress in two queries, kept on the rows the list then shows.
        for rollout, progress in zip(page, selectors.rollouts_progress(page).values(), strict=True):
            rollout.progress = progress
        return changelist

    # --- the add page ------------------------------------------------------------------------------------------

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = RolloutCreateForm
            kwargs["fields"] = None
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return RolloutCreateForm.field_order if obj is None else SHOWN

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else SHOWN

    def get_changeform_initial_data(self, request):
        initial: dict = dict(super().get_changeform_initial_data(request))
        template_id, assignment_id = request.GET.get("template", ""), request.GET.get("assignment", "")
        template = SensorTemplate.objects.filter(pk=template_id).first() if template_id.isdigit() else None
        if template is not None:
            latest = SensorTemplateVersion.objects.get(template=template, version=template.version)
            initial |= {"kind": "template", "template": template.pk, "sensors": json.dumps(latest.sensors, indent=2)}
        assignment = Assignment.objects.filter(pk=assignment_id).first() if assignment_id.isdigit() else None
        if assignment is not None:
            initial |= {"kind": "assignment", "assignment": assignment.pk}
        initial.setdefault("kind", "template")
        return initial

    def save_model(self, request, obj, form, change):
        if change:  # nothing of a rollout is edited; it is paused, resumed or aborted with the buttons
            return
        try:
            rollout = services.rollout_create(**form.service_arguments(), user=request.user)
        except SERVICE_REJECTIONS as exc:
            raise ServiceRejected(exc) from exc
        self.adopt(obj, rollout)

    def save_related(self, request, form, formsets, change):
        pass  # the service set the assignments

    def has_delete_permission(self, request, obj=None):
        # A running or paused rollout holds assignments: abort it first (a delete would leave them held).
        return super().has_delete_permission(request, obj) and (obj is None or not obj.active)

    # --- the change page ---------------------------------------------------------------------------------------

    def change_view(self, request, object_id, form_url="", extra_context=None):
        rollout = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if rollout is not None:
            progress = selectors.rollout_progress(rollout)
            context |= {
                "progress": progress,
                "chart": progress_chart(progress.stages),
                "status_tone": _TONES.get(rollout.status, "quiet"),
                "can_act": self.has_change_permission(request, rollout),
                "show_save": False,
                "show_save_and_continue": False,
                "show_save_and_add_another": False,
            }
        return super().change_view(request, object_id, form_url, context)

    def get_urls(self):
        actions = [
            path(
                f"<path:object_id>/{name}/",
                self.admin_site.admin_view(self._action_view(name)),
                name=f"rollouts_rollout_{name}",
            )
            for name in ("pause", "resume", "abort")
        ]
        return [*actions, *super().get_urls()]

    def _action_view(self, name: str):
        actions: dict[str, Callable[..., Rollout]] = {
            "pause": services.rollout_pause,
            "resume": services.rollout_resume,
            "abort": services.rollout_abort,
        }
        act = actions[name]

        def view(request, object_id):
            rollout = self.get_object(request, unquote(object_id))
            if request.method != "POST" or rollout is None or not self.has_change_permission(request, rollout):
                raise PermissionDenied
            thresholds = {}
            if name == "resume":  # the thresholds the page sends with the button (unchanged unless staff edit them)
                for key in ("success_threshold", "error_threshold"):
                    raw = request.POST.get(key, "").strip()
                    if raw:
                        thresholds[key] = int(raw) if raw.isdigit() else raw
            try:
                act(uuid=rollout.uuid, user=request.user, **thresholds)
            except SERVICE_REJECTIONS as exc:
                self.message_user(request, _error_text(exc), messages.ERROR)
            else:
                done = {"pause": "paused", "resume": "resumed", "abort": "aborted: its change is being taken back"}
                self.message_user(request, f"Rollout “{rollout.name}” {done[name]}.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:rollouts_rollout_change", args=[rollout.pk]))

        return view

    # --- columns -----------------------------------------------------------------------------------------------

    @admin.display(description="Status", ordering="status")
    def status_shown(self, obj):
        return format_html(
            '<span class="ss-badge ss-badge--{}">{}</span>', _TONES.get(obj.status, "quiet"), obj.get_status_display()
        )

    @admin.display(description="Versions")
    def versions(self, obj):
        return f"v{obj.from_version} → v{obj.to_version}"

    @admin.display(description="Stage")
    def stage_shown(self, obj):
        return f"{obj.current_stage + 1} of {len(obj.stages)}"

    @admin.display(description="Progress")
    def progress_shown(self, obj):
        total = obj.progress.total
        return format_html(
            "{} of {} deployed · <span class='{}'>{} failed</span> · {} offline",
            total.deployed,
            total.targeted,
            "ss-error" if total.failed else "ss-quiet",
            total.failed,
            total.offline,
        )

    @admin.display(description="Stages")
    def stages_shown(self, obj):
        return format_html("<pre>{}</pre>", stages_text(obj.stages))

    @admin.display(description="Assignments")
    def assignments_shown(self, obj):
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            (
                (reverse("admin:fleetconfig_assignment_change", args=[a.pk]), a.name)
                for a in obj.assignments.order_by("name")
            ),
        )

    @admin.display(description="Events")
    def events_shown(self, obj):
        url = reverse("admin:events_event_changelist") + f"?aggregate_id={obj.uuid}"
        return format_html('<a href="{}">Its events</a>', url)
