from typing import Any

from django.core.exceptions import ValidationError


def body_fields(data: Any, allowed: dict[str, str], *, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Map a JSON object's wire fields to service keyword arguments; unknown or missing fields are a 400."""
    if not isinstance(data, dict):
        raise ValidationError({"body": ["Must be a JSON object."]})
    errors = {key: ["Unknown field."] for key in data if key not in allowed}
    errors.update({key: ["This field is required."] for key in required if key not in data})
    if errors:
        raise ValidationError(errors)
    return {allowed[key]: value for key, value in data.items()}
