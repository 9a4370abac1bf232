from datetime import UTC

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from devices.labels import Selector, SelectorError

TRUE_VALUES = frozenset({"true", "1", "yes"})
FALSE_VALUES = frozenset({"false", "0", "no"})


class StrictBooleanField(forms.Field):
    """django-filter's boolean field ignores a value it cannot read (``?enabled=maybe`` would list everything);
    a filter the client got wrong is a 400 instead."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        text = str(value).strip().lower()
        if text in TRUE_VALUES:
            return True
        if text in FALSE_VALUES:
            return False
        raise ValidationError("Must be true or false.", code="invalid")


class StrictBooleanFilter(django_filters.BooleanFilter):
    # Any form field will do (the stubs ask for a NullBooleanField, whose widget and lenient reading this replaces).
    field_class = StrictBooleanField  # type: ignore[assignment]


class UTCDateTimeField(IsoDateTimeField):
    """An ISO 8601 time, converted to UTC before it reaches the database: PostgreSQL refuses offsets beyond
    +-15:59 and a year-1 time with a positive offset has no UTC value; both are the client's 400."""

    def to_python(self, value):
        if value == "":  # sent but empty: a time the client meant to give (absent means no filter)
            raise ValidationError("Enter a date/time.", code="invalid")
        parsed = super().to_python(value)
        if parsed is None or parsed.tzinfo is None:
            return parsed
        try:
            return parsed.astimezone(UTC)
        except OverflowError as exc:
            raise ValidationError("Enter a date/time that exists in UTC.", code="invalid") from exc


class UTCDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UTCDateTimeField


class SelectorField(forms.CharField):
    """A label selector (``devices.labels``): ``plant=3,role!=x``; one that does not parse is the client's 400,
    with the parser's message (what is wrong, and where)."""

    def to_python(self, value):
        text = super().to_python(value)
        if not text:
            return None
        try:
            return Selector.parse(text)
        except SelectorError as exc:
            raise ValidationError(str(exc), code="invalid") from exc


@extend_schema_field(OpenApiTypes.STR)
class SelectorFilter(django_filters.Filter):
    """Rows whose device the label selector selects. ``device_field`` names the model's device id: ``pk`` on
    devices, ``device_id`` on sensor rows."""

    field_class = SelectorField

    def __init__(self, *, device_field: str = "pk", **kwargs):
        kwargs.setdefault(
            "help_text",
            "A label selector: requirements separated by commas, all of which must hold: key=value, key!=value, "
            "key in (a,b), key notin (a,b), key (has the label), !key (has not). E.g. plant=3,role!=spare.",
        )
        super().__init__(**kwargs)
        self.device_field = device_field

    def filter(self, qs, value):
        if value is None:
            return qs
        return qs.filter(value.q(self.device_field))
