import django_filters
from django import forms
from django.core.exceptions import ValidationError

from sensorsync_project.api.filters import SelectorFilter

from .choices import RenderJobStatusChoices, RenderProblemKindChoices
from .models import Assignment, RenderJob, RenderProblem, SensorOverride


class _SentChoiceField(forms.ChoiceField):
    """A choice that, when sent, must be one (``?status=`` is the client's 400, not "no filter")."""

    def clean(self, value):
        if value == "":
            raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice", params={"value": value})
        return super().clean(value)


class StrictChoiceFilter(django_filters.ChoiceFilter):
    field_class = _SentChoiceField


class AssignmentFilterSet(django_filters.FilterSet):
    template = django_filters.UUIDFilter(field_name="template__uuid", help_text="Assignments of this template.")
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Assignment
        fields = ("template", "name")


class SensorOverrideFilterSet(django_filters.FilterSet):
    device = django_filters.UUIDFilter(field_name="device__uuid")
    sensor = django_filters.CharFilter(field_name="sensor_name")
    selector = SelectorFilter(device_field="device_id")

    class Meta:
        model = SensorOverride
        fields = ("device", "sensor", "selector")


class RenderJobFilterSet(django_filters.FilterSet):
    status = StrictChoiceFilter(choices=RenderJobStatusChoices.choices)

    class Meta:
        model = RenderJob
        fields = ("status",)


class RenderProblemFilterSet(django_filters.FilterSet):
    device = django_filters.UUIDFilter(field_name="device__uuid")
    assignment = django_filters.UUIDFilter(field_name="assignment__uuid")
    kind = StrictChoiceFilter(choices=RenderProblemKindChoices.choices)

    class Meta:
        model = RenderProblem
        fields = ("device", "assignment", "kind")
