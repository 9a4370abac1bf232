"""System checks of the MQTT settings (``manage.py check``, run by ``migrate`` and ``runserver`` too)."""

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import Error, register

from .dynsec import BrokerAddress


@register()
def mqtt_urls_check(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[Error]:
    """The broker URLs parse: a wrong one would leave every device on HTTP (no credentials are issued under it)."""
    errors = []
    checked = set()
    for name in ("SENSORSYNC_MQTT_BROKER_URL", "SENSORSYNC_MQTT_URL"):
        value = getattr(settings, name)
        if not value or value in checked:  # SENSORSYNC_MQTT_URL defaults to the other
            continue
        checked.add(value)
        try:
            BrokerAddress.parse(value)
        except ValueError as exc:
            errors.append(Error(f"{name}: {exc}", id="ingest.E001"))
    return errors
