"""The admin forms of devices and provisioning keys. Their ``save`` is never what writes: the admin calls a
service in ``save_model`` (``sensorsync_project.ui.forms.ServiceModelForm`` is how its refusal reaches a field)."""

import re
from typing import ClassVar

from django import forms
from django.core.exceptions import ValidationError

from sensorsync_project.ui.forms import ServiceModelForm

from .labels import label_key_problem, label_value_problem
from .models import Device, DeviceLabel, ProvisioningKey

_SEPARATORS = re.compile(r"[,\n]")


def _sentence(problem: str) -> str:
    return problem[0].upper() + problem[1:] + "."


class LabelsTextField(forms.CharField):
    """Labels typed as ``key=value`` pairs, separated by commas or new lines (``plant=3, role=boiler``); the
    keys and values are checked by the service that stores them."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60, "placeholder": "plant=3, role=boiler"})

    def to_python(self, value):
        labels: dict[str, str] = {}
        for item in _SEPARATORS.split(super().to_python(value) or ""):
            if not item.strip():
                continue
            key, equals, label_value = item.partition("=")
            if not equals:
                raise ValidationError(f"“{item.strip()}” is not key=value.", code="invalid")
            labels[key.strip()] = label_value.strip()
        return labels


class LabelKeysField(forms.CharField):
    """Label keys separated by commas, spaces or new lines."""

    def to_python(self, value):
        return [key for key in re.split(r"[\s,]+", super().to_python(value) or "") if key]


class DeviceAdminForm(ServiceModelForm):
    service_fields: ClassVar[dict[str, str]] = {
        "name": "name",
        "description": "description",
        "isActive": "is_active",
        "draftMode": "draft_mode",
    }

    class Meta:
        model = Device
        fields = ("name", "description", "is_active", "draft_mode")


class DeviceLabelInlineForm(forms.ModelForm):
    """One label row of the device page; the whole set is stored by ``device_labels_set``."""

    class Meta:
        model = DeviceLabel
        fields = ("key", "value")

    def clean_key(self):
        key = self.cleaned_data["key"].strip()
        problem = label_key_problem(key)
        if problem:
            raise ValidationError(_sentence(problem))
        return key

    def clean_value(self):
        value = self.cleaned_data["value"].strip()
        problem = label_value_problem(value)
        if problem:
            raise ValidationError(_sentence(problem))
        return value


class LabelsChangeForm(forms.Form):
    """The "set or remove labels" action's form."""

    set = LabelsTextField(label="Set", required=False, help_text="key=value pairs, added or replaced.")
    remove = LabelKeysField(label="Remove", required=False, help_text="Keys, separated by commas.")

    def clean(self):
        cleaned = super().clean() or {}
        if not cleaned.get("set") and not cleaned.get("remove") and not self.errors:
            raise ValidationError("Give labels to set or keys to remove.")
        return cleaned

    def add_service_error(self, error: ValidationError) -> None:
        for field, messages in error.message_dict.items():
            self.add_error(field if field in self.fields else None, messages)


class ProvisioningKeyAdminForm(ServiceModelForm):
    service_fields: ClassVar[dict[str, str]] = {
        "name": "name",
        "expiresAt": "expires_at",
        "maxDevices": "max_devices",
        "defaultLabels": "default_labels",
    }
    default_labels = LabelsTextField(
        label="Default labels", required=False, help_text="Labels every device it registers starts with: plant=3, ..."
    )

    class Meta:
        model = ProvisioningKey
        fields = ("name", "expires_at", "max_devices")
