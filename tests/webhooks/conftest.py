import pytest

from webhooks.services import webhook_endpoint_create

from .receiver import Receiver


@pytest.fixture
def fast_retries(settings):
    """Retries due at once and few of them, and a short deadline: a delivery's whole life in one ``--once`` run."""
    settings.SENSORSYNC_WEBHOOK_BACKOFF_SECONDS = 0
    settings.SENSORSYNC_WEBHOOK_MAX_ATTEMPTS = 3
    settings.SENSORSYNC_WEBHOOK_TIMEOUT_SECONDS = 1.0


@pytest.fixture
def receiver():
    with Receiver() as started:
        yield started


def endpoint_for(url: str, *event_types: str, user=None, name: str = "ops alerts"):
    """An endpoint made as staff make it (the service); (endpoint, secret)."""
    types = list(event_types) or ["device.config_drift", "device.in_sync", "device.retry_budget_exhausted"]
    created = webhook_endpoint_create(name=name, url=url, event_types=types, user=user)
    return created.endpoint, created.secret
