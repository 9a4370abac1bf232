"""The admin form of a sensor: it edits the *desired* sensor (what the device's target configuration asks for),
never the read-model row, and leaves validation to the service it is saved through
(``reconciliation.services.sensors``, which validates with ``sensors.validation.sensor_validate``)."""

import json
from typing import ClassVar

from django import forms
from django.core.serializers.json import DjangoJSONEncoder
from django.forms.fields import InvalidJSONInput
from django.http import QueryDict

from devices.target_config import config_sensors
from sensorsync_project.exceptions import PreconditionFailed, SensorNotFound
from sensorsync_project.ui.forms import JSONEditorWidget, ServiceModelForm

from .choices import DeviceSensorProtocolChoices
from .models import DeviceSensor
from .validation import POLL_INTERVAL_DEFAULT, POLL_INTERVAL_MAX, POLL_INTERVAL_MIN

# Form field -> wire name of the sensor object (SPEC section 3).
WIRE_NAMES = {
    "name": "name",
    "protocol": "protocol",
    "enabled": "enabled",
    "poll_interval": "pollInterval",
    "connection": "connection",
    "data_points": "dataPoints",
    "metadata": "metadata",
}
DESIRED_FIELDS = tuple(WIRE_NAMES)


class PrettyJSONField(forms.JSONField):
    """JSON shown indented, in the admin's JSON editor, so a connection or a list of data points can be read and
    typed with the error under the cursor. ``json_type`` ("object" or "array") is what the editor checks for."""

    def __init__(self, *, json_type: str | None = None, **kwargs):
        kwargs.setdefault("encoder", DjangoJSONEncoder)
        kwargs.setdefault("widget", JSONEditorWidget(json_type=json_type, optional=not kwargs.get("required", True)))
        super().__init__(**kwargs)

    def prepare_value(self, value):
        if isinstance(value, InvalidJSONInput):
            return value
        if value is None:
            return ""  # an empty field (a new sensor's connection), not the JSON text "null"
        return json.dumps(value, ensure_ascii=False, indent=2, cls=self.encoder)


class DeviceSensorAdminForm(ServiceModelForm):
    """The desired sensor. Only ``device`` is a field of the row (chosen when adding); the admin keeps the other
    fields out of model validation (see ``DeviceSensorAdmin.get_form``), because the row's rules are not the
    desired sensor's: an empty ``connection`` is valid here, and the service checks names against the target."""

    name = forms.CharField(max_length=255, help_text="Letters, digits, '.', '_' or '-'; unique on the device.")
    protocol = forms.ChoiceField(choices=DeviceSensorProtocolChoices.choices)
    enabled = forms.BooleanField(required=False, initial=True)
    poll_interval = forms.IntegerField(
        label="Poll interval (ms)",
        initial=POLL_INTERVAL_DEFAULT,
        help_text=f"Milliseconds, {POLL_INTERVAL_MIN} to {POLL_INTERVAL_MAX}.",
    )
    connection = PrettyJSONField(
        json_type="object", help_text='A JSON object, e.g. {"host": "10.0.0.5", "port": 502, "unitId": 1}.'
    )
    data_points = PrettyJSONField(
        json_type="array",
        label="Data points",
        initial=list,
        required=False,
        help_text='A JSON list of objects, each with a unique "name". Empty means [].',
    )
    metadata = PrettyJSONField(
        json_type="object", initial=dict, required=False, help_text="A JSON object. Empty means {}."
    )
    # The target version this page was rendered from (for a device with a draft, the draft's revision, "5-draft-2"):
    # saving is refused if someone changed the device's target configuration (or draft) since, instead of silently
    # overwriting their change.
    target_version = forms.CharField(widget=forms.HiddenInput, required=False)

    service_fields: ClassVar[dict[str, str]] = {wire: field for field, wire in WIRE_NAMES.items()}

    class Meta:
        model = DeviceSensor
        fields = ("device",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        row = self.instance
        if row.pk is None:
            return
        draft = row.device.target_draft_or_none() if row.device.draft_mode else None
        drafted = next((s for s in config_sensors(draft.config) if s.get("name") == row.name), None) if draft else None
        desired = drafted if drafted is not None else row.desired
        if desired is not None:
            self.initial.update({field: desired.get(wire) for field, wire in WIRE_NAMES.items()})
        else:
            self.initial.update({field: getattr(row, field) for field in DESIRED_FIELDS})
        etag = draft.etag if draft is not None else row.device.target_state.etag
        self.initial["target_version"] = etag.strip('"')

    def sensor_data(self) -> dict:
        """The sensor object to hand to the service, in wire names. Empty optional fields take their defaults."""
        data = {wire: self.cleaned_data[field] for field, wire in WIRE_NAMES.items()}
        for optional in ("dataPoints", "metadata"):
            if data[optional] is None:
                del data[optional]
        return data

    def if_match(self) -> str | None:
        version = self.cleaned_data.get("target_version")
        return f'"{version}"' if version else None

    def add_service_error(self, error: Exception) -> None:
        if isinstance(error, PreconditionFailed):
            current = error.current_etag.strip('"')
            self.add_error(
                None,
                f"The device's target configuration changed since this page was loaded (it is now at version "
                f"{current}). Check the values below and save again to apply them over that change.",
            )
            # Saving again is a deliberate decision to write over the newer version.
            data = QueryDict(mutable=True)
            data.update(self.data)
            data[self.add_prefix("target_version")] = current
            self.data = data
        elif isinstance(error, SensorNotFound):
            self.add_error(
                None,
                "This sensor is no longer in the device's target configuration (it was removed or renamed since "
                "this page was loaded).",
            )
        else:
            super().add_service_error(error)
