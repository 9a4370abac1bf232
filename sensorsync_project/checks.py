"""The project's own system checks, and the fail-fast the production server runs at start (``wsgi.py``)."""

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

SECRET_KEY_MISSING = "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off."


def secret_key_missing() -> bool:
    try:
        return not settings.SECRET_KEY
    except ImproperlyConfigured:  # Django refuses to hand out an empty key
        return True


def secret_key_required() -> None:
    """Raise at server start, not at the first request that signs something."""
    if secret_key_missing():
        raise ImproperlyConfigured(SECRET_KEY_MISSING)


@register(Tags.security, deploy=True)
def secret_key_check(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Error]:
    if secret_key_missing():
        return [
            Error(
                SECRET_KEY_MISSING,
                hint="Generate one: python -c 'import secrets; print(secrets.token_urlsafe(50))'",
                id="sensorsync.E001",
            )
        ]
    return []
