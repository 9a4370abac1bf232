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


@register()
def agent_middleware_check(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Error]:
    """The agents' short chain (``sensorsync_project.handlers``) leaves middleware out, never adds or reorders:
    what an agent's request goes through is always what every request goes through, less what it does not need."""
    agent, full = list(settings.SENSORSYNC_AGENT_MIDDLEWARE), list(settings.MIDDLEWARE)
    position = 0
    for path in agent:
        try:
            position = full.index(path, position) + 1
        except ValueError:
            return [
                Error(
                    f"SENSORSYNC_AGENT_MIDDLEWARE lists {path!r} out of MIDDLEWARE's order, or not in MIDDLEWARE.",
                    hint="List a subsequence of MIDDLEWARE, in its order.",
                    id="sensorsync.E010",
                )
            ]
    return []
