"""What the admin forms share: the form a service's refusal is shown on, and the JSON editor widget. A form's
``save`` is never what writes: the admin calls a service in ``save_model``, and the service is the validator of
record."""

import re
from typing import ClassVar

from django import forms
from django.core.exceptions import ValidationError

# ``dataPoints[0].name`` -> ``dataPoints``: nested errors belong to the top-level field they are inside.
_TOP_LEVEL_KEY = re.compile(r"^[^.\[]+")


class ServiceModelForm(forms.ModelForm):
    """A model form whose write is a service call made by the admin after validation.

    When the service rejects the write, the admin validates the same POST again with the rejection bound to the
    form class (``service_rejection``, see ``sensorsync_project.ui.admin.ServiceAdminMixin``); ``clean`` then puts
    each of the service's messages on the form field it is about, so the page looks like any other invalid form.
    """

    # Service error keys (wire names, as the API shows them) -> form field names.
    service_fields: ClassVar[dict[str, str]] = {}
    service_rejection: ClassVar[Exception | None] = None

    def clean(self):
        cleaned_data = super().clean()
        if self.service_rejection is not None:
            self.add_service_error(self.service_rejection)
        return cleaned_data

    def add_service_error(self, error: Exception) -> None:
        if not isinstance(error, ValidationError):
            self.add_error(None, str(error))
        elif not hasattr(error, "error_dict"):
            self.add_error(None, error.messages)
        else:
            for key, messages in error.message_dict.items():
                match = _TOP_LEVEL_KEY.match(key)
                top_level = match.group() if match else key
                field_name = self.service_fields.get(top_level)
                if field_name in self.fields:
                    # A nested message keeps its path, so "dataPoints[1].name" says which data point is wrong.
                    shown = messages if key == top_level else [f"{key}: {message}" for message in messages]
                    self.add_error(field_name, shown)
                else:
                    self.add_error(None, [f"{key}: {message}" for message in messages])


class JSONEditorWidget(forms.Textarea):
    """A JSON text area the admin enhances in the browser (``static/sensorsync/json-editor.js``): live validation
    with the error's line and column, pretty-printing, auto-indentation. Vendored and offline; without JavaScript
    it is a plain text area, and the server validates either way."""

    class Media:
        css: ClassVar[dict[str, tuple[str, ...]]] = {"all": ("sensorsync/json-editor.css",)}
        js = ("sensorsync/json-editor.js",)

    def __init__(self, *, json_type: str | None = None, optional: bool = False, attrs: dict | None = None):
        defaults = {"rows": 8, "cols": 80, "data-json-editor": "true"}
        if json_type is not None:
            defaults["data-json-type"] = json_type
        if optional:
            defaults["data-json-optional"] = "true"
        super().__init__(attrs={**defaults, **(attrs or {})})
