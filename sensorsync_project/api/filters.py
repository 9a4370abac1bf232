import django_filters
from django import forms
from django.core.exceptions import ValidationError

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
    field_class = StrictBooleanField
