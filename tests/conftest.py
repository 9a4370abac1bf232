import pytest
from django.conf import settings
from django.core.cache import caches
from rest_framework.test import APIClient

from reconciliation.services.sensors import sensor_create

from .factories import DeviceFactory, SensorPayloadFactory, UserFactory

IS_POSTGRES = settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def pytest_collection_modifyitems(config, items):
    if IS_POSTGRES:
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (row locks, real concurrency): set DATABASE_URL=postgres://...")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Rate-limit counters live in process memory; one test's requests must not spend the next one's budget."""
    caches["ratelimit"].clear()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def superuser(db):
    return UserFactory(username="admin", is_superuser=True)


@pytest.fixture
def admin_client(api_client, superuser) -> APIClient:
    api_client.force_authenticate(superuser)
    return api_client


@pytest.fixture
def device(db):
    return DeviceFactory()


@pytest.fixture
def device_with_sensors(db, superuser):
    """A device whose target has three sensors (target version 4), never reported."""
    device = DeviceFactory()
    for protocol in ("modbus", "can", "opcua"):
        sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(protocol=protocol), user=superuser)
    device.refresh_from_db()
    return device
