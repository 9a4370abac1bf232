"""The admin form of webhook endpoints. Its ``save`` is never what writes: the admin calls a service in
``save_model`` (``sensorsync_project.ui.forms.ServiceModelForm`` is how its refusal reaches a field)."""

from typing import ClassVar

from django import forms

from sensorsync_project.ui.forms import ServiceModelForm

from .event_types import webhook_event_types
from .models import WebhookEndpoint


def _event_type_choices() -> list[tuple[str, str]]:
    return [(entry.name, f"{entry.name}: {entry.description}") for entry in webhook_event_types()]


class WebhookEndpointAdminForm(ServiceModelForm):
    service_fields: ClassVar[dict[str, str]] = {
        "name": "name",
        "url": "url",
        "eventTypes": "event_types",
        "isActive": "is_active",
    }
    event_types = forms.MultipleChoiceField(
        choices=_event_type_choices, widget=forms.CheckboxSelectMultiple, label="Event types"
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("name", "url", "event_types", "is_active")
        widgets: ClassVar[dict] = {"url": forms.URLInput(attrs={"size": 80})}
