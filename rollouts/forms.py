"""The admin form that starts a rollout. Its ``save`` is never what writes: the admin calls
``rollouts.services.rollout_create`` in ``save_model`` (``ServiceModelForm`` is how a refusal reaches a field)."""

import json
from typing import Any, ClassVar

from django import forms
from django.core.exceptions import ValidationError

from fleetconfig.models import Assignment, SensorTemplate
from sensorsync_project.ui.forms import JSONEditorWidget, ServiceModelForm

from .choices import RolloutKindChoices
from .models import Rollout
from .staging import PERCENT, REST, SELECTOR

STAGES_HELP = (
    "One stage per line: a percentage of the devices the rollout counts (“10%”, growing from line to line) or a "
    "label selector (“site=lab”: the devices it selects). The last stage reached finishes the rollout."
)


def stages_parse(text: str) -> list[dict[str, Any]]:
    """``"1%\\n10%\\nsite=lab"`` as the service's stages (the service checks them)."""
    stages: list[dict[str, Any]] = []
    for line in (raw.strip() for raw in text.splitlines()):
        if not line:
            continue
        number = line.removesuffix("%").strip()
        stages.append({PERCENT: int(number)} if number.isdigit() else {SELECTOR: line})
    return stages


def stages_text(stages: list[dict[str, Any]]) -> str:
    # The rest-of-the-fleet stage is added by the service to a rollout narrowed to a group: not typed in.
    return "\n".join(f"{s[PERCENT]}%" if PERCENT in s else s[SELECTOR] for s in stages if REST not in s)


class RolloutCreateForm(ServiceModelForm):
    service_fields: ClassVar[dict[str, str]] = {
        "name": "name",
        "kind": "kind",
        "template": "template",
        "sensors": "sensors",
        "note": "note",
        "assignment": "assignment",
        "templateVersion": "template_version",
        "stages": "stages_text",
        "successThreshold": "success_threshold",
        "errorThreshold": "error_threshold",
        "deadlineSeconds": "deadline_seconds",
        "selector": "selector",
    }
    kind = forms.ChoiceField(choices=RolloutKindChoices.choices, widget=forms.RadioSelect)
    template = forms.ModelChoiceField(
        queryset=SensorTemplate.objects.all(), required=False, help_text="Template change: the template to change."
    )
    sensors = forms.CharField(
        required=False,
        widget=JSONEditorWidget(json_type="array", optional=True),
        help_text="Template change: its new sensors (the latest version's are filled in when you come from the "
        "template's page).",
    )
    note = forms.CharField(required=False, max_length=255, help_text="Template change: what the new version changes.")
    assignment = forms.ModelChoiceField(
        queryset=Assignment.objects.select_related("template"),
        required=False,
        help_text="Assignment change: the assignment to move to another template version.",
    )
    template_version = forms.IntegerField(
        required=False, min_value=1, help_text="Assignment change: the template version to pin it to."
    )
    stages_text = forms.CharField(
        label="Stages",
        widget=forms.Textarea(attrs={"rows": 4, "cols": 40}),
        initial="1%\n10%\n100%",
        help_text=STAGES_HELP,
    )

    class Meta:
        model = Rollout
        fields = ("name", "selector", "success_threshold", "error_threshold", "deadline_seconds")
        help_texts: ClassVar[dict[str, str]] = {
            "selector": "A label selector narrowing the devices the stages count (“a labelled group”); empty: every "
            "device the assignments select.",
        }

    field_order = (
        "name",
        "kind",
        "template",
        "sensors",
        "note",
        "assignment",
        "template_version",
        "selector",
        "stages_text",
        "success_threshold",
        "error_threshold",
        "deadline_seconds",
    )

    def clean_sensors(self):
        text = self.cleaned_data["sensors"].strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ValidationError(f"Not JSON: {exc}.") from None

    def clean_stages_text(self):
        return stages_parse(self.cleaned_data["stages_text"])

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        template, assignment = data.get("template"), data.get("assignment")
        return {
            "name": data.get("name"),
            "kind": data.get("kind"),
            "template": str(template.uuid) if template else None,
            "sensors": data.get("sensors"),
            "note": data.get("note") or "",
            "assignment": str(assignment.uuid) if assignment else None,
            "template_version": data.get("template_version"),
            "stages": data.get("stages_text"),
            "success_threshold": data.get("success_threshold"),
            "error_threshold": data.get("error_threshold"),
            "deadline_seconds": data.get("deadline_seconds"),
            "selector": data.get("selector") or "",
        }
