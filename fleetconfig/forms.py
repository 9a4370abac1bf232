"""The admin forms of the fleet configuration. As everywhere in the admin, a form's ``save`` never writes: the admin
calls a service with the form's values, and the service is the validator of record (its refusals land on the form,
``sensorsync_project.ui.forms.ServiceModelForm``)."""

import json
from typing import ClassVar

from django import forms
from django.forms.fields import InvalidJSONInput

from devices.models import Device
from sensorsync_project.exceptions import PreconditionFailed
from sensorsync_project.ui.forms import JSONEditorWidget, ServiceModelForm

from .models import Assignment, SensorOverride, SensorTemplate
from .rendering import OVERRIDE_FIELDS, OVERRIDE_OBJECT_FIELDS
from .selectors import latest_sensors


class JSONValueField(forms.JSONField):
    """Any JSON value, shown indented in the admin's JSON editor; empty is an error (``null`` is a value)."""

    def __init__(self, *, json_type: str | None = None, **kwargs):
        kwargs.setdefault("widget", JSONEditorWidget(json_type=json_type))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, InvalidJSONInput):
            return value
        if value is None:
            return ""
        return json.dumps(value, ensure_ascii=False, indent=2)


class SensorTemplateAdminForm(ServiceModelForm):
    name = forms.CharField(max_length=100, help_text="Letters, digits, '.', '_' or '-'; unique.")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    sensors = JSONValueField(
        json_type="array",
        help_text='A JSON list of complete sensor objects, each with a unique "name" (no "id": a rendered sensor '
        "takes its device's). Saving a change makes a new version, which the assignments following the "
        "template render on their devices.",
    )
    note = forms.CharField(max_length=255, required=False, help_text="What this version changes (kept in history).")
    # The version this page was rendered from: saving is refused if someone made a newer one since.
    version = forms.IntegerField(widget=forms.HiddenInput, required=False)

    service_fields: ClassVar[dict[str, str]] = {
        "name": "name",
        "description": "description",
        "sensors": "sensors",
        "note": "note",
    }

    class Meta:
        model = SensorTemplate
        # One field of the model, so that its own validation looks at that one only: the service validates the rest.
        fields = ("description",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        template = self.instance
        if template.pk is not None:
            self.initial.update(
                {
                    "name": template.name,
                    "description": template.description,
                    "sensors": latest_sensors(template),
                    "version": template.version,
                }
            )

    def if_match(self) -> str | None:
        version = self.cleaned_data.get("version")
        return None if version is None else f'"{version}"'

    def add_service_error(self, error: Exception) -> None:
        if isinstance(error, PreconditionFailed):
            current = error.current_etag.strip('"')
            self.add_error(
                None,
                f"Someone saved a newer version of this template (version {current}) since this page was loaded. "
                "Reload the page to start from it.",
            )
        else:
            super().add_service_error(error)


class AssignmentAdminForm(ServiceModelForm):
    name = forms.CharField(max_length=100, help_text="Letters, digits, '.', '_' or '-'; unique.")
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    template = forms.ModelChoiceField(queryset=SensorTemplate.objects.order_by("name"))
    template_version = forms.IntegerField(
        min_value=1, required=False, help_text="A version to stay on; empty: always the template's latest."
    )
    selector = forms.CharField(
        max_length=4000,
        required=False,
        help_text="The devices it renders on, by their labels: plant=3,role in (boiler,chiller),!spare. Empty: every "
        "device.",
    )
    priority = forms.IntegerField(
        initial=0,
        help_text="Of two assignments rendering a sensor of the same name, the higher priority wins; equal priorities "
        "that render it differently are a conflict staff must resolve.",
    )

    service_fields: ClassVar[dict[str, str]] = {
        "name": "name",
        "description": "description",
        "template": "template",
        "templateVersion": "template_version",
        "selector": "selector",
        "priority": "priority",
    }

    class Meta:
        model = Assignment
        fields = ("description",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        assignment = self.instance
        if assignment.pk is not None:
            self.initial.update(
                {
                    "name": assignment.name,
                    "description": assignment.description,
                    "template": assignment.template_id,
                    "template_version": assignment.template_version,
                    "selector": assignment.selector,
                    "priority": assignment.priority,
                }
            )

    def service_values(self) -> dict:
        """The assignment as the services take it."""
        data = self.cleaned_data
        return {
            "name": data["name"],
            "description": data["description"],
            "template": str(data["template"].uuid),
            "template_version": data["template_version"],
            "selector": data["selector"],
            "priority": data["priority"],
        }


FIELD_CHOICES_HELP = (
    f"One of {', '.join(OVERRIDE_FIELDS)}, or one key of {' or '.join(OVERRIDE_OBJECT_FIELDS)}: connection.host, "
    "metadata.site."
)


class SensorOverrideAdminForm(ServiceModelForm):
    device = forms.ModelChoiceField(queryset=Device.objects.order_by("name", "id"))
    sensor_name = forms.CharField(max_length=255, label="Sensor", help_text="The rendered sensor's name.")
    field = forms.CharField(max_length=300, help_text=FIELD_CHOICES_HELP)
    value = JSONValueField(help_text='The field\'s value on this device, as JSON: 1000, true, "10.0.0.7", {...}.')

    service_fields: ClassVar[dict[str, str]] = {"sensor": "sensor_name", "field": "field", "value": "value"}

    class Meta:
        model = SensorOverride
        fields = ("device",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        override = self.instance
        if override.pk is not None:
            self.initial.update(
                {
                    "device": override.device_id,
                    "sensor_name": override.sensor_name,
                    "field": override.field,
                    "value": override.value,
                }
            )
            for name in ("device", "sensor_name", "field"):  # an override is of one field: change its value only
                self.fields[name].disabled = True
