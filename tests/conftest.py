"""Fixtures shared by the whole suite; plain helpers (URLs, payloads, agent calls, snapshots) are in
``tests/helpers.py``."""

import pytest
from django.core.cache import caches
from django.test import Client
from django.test.client import ClientHandler
from rest_framework.test import APIClient

from reconciliation.services.sensors import sensor_create
from sensorsync_project.handlers import AGENT_PATH_PREFIX, AgentMiddlewareMixin
from webhooks.selectors import webhook_subscriptions_forget

from .factories import DeviceFactory, SensorPayloadFactory, UserFactory
from .helpers import IS_POSTGRES


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


@pytest.fixture(autouse=True)
def _fresh_webhook_subscriptions():
    """What a process last read of the webhook subscriptions lives in its memory: one test's endpoints (rolled back
    since) must not count in the next one."""
    webhook_subscriptions_forget()


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def superuser(db):
    return UserFactory(username="admin", is_superuser=True)


@pytest.fixture
def admin_client(api_client, superuser) -> APIClient:
    """The management API as the superuser (DRF, authentication forced)."""
    api_client.force_authenticate(superuser)
    return api_client


@pytest.fixture
def admin_browser(client, superuser) -> Client:
    """Django's test client (pytest-django's ``client``) logged in as the superuser, as a person's browser is in
    the admin and on /fleet/."""
    client.force_login(superuser)
    return client


@pytest.fixture
def agent() -> Client:
    """The on-device agent: a plain HTTP client, no session, no CSRF token, raw bytes and headers. Its requests to
    the agents' routes run through their own middleware chain, as ``wsgi.application`` serves them."""
    client = Client(enforce_csrf_checks=True)
    client.handler = ProjectClientHandler(enforce_csrf_checks=True)
    return client


class AgentClientHandler(AgentMiddlewareMixin, ClientHandler):
    pass


class ProjectClientHandler:
    """The test client's handler, dispatching as ``sensorsync_project.handlers.ProjectApplication`` does."""

    def __init__(self, **kwargs) -> None:
        self.full = ClientHandler(**kwargs)
        self.agent = AgentClientHandler(**kwargs)

    def __call__(self, environ):
        handler = self.agent if environ.get("PATH_INFO", "").startswith(AGENT_PATH_PREFIX) else self.full
        return handler(environ)


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


@pytest.fixture
def sensor_device(db, superuser):
    """A device whose target holds one sensor, ``temp-1`` (target version 2), never reported."""
    device = DeviceFactory()
    sensor_create(device_uuid=device.uuid, data=SensorPayloadFactory(name="temp-1"), user=superuser)
    device.refresh_from_db()
    return device


@pytest.fixture
def latest_migrations():
    """The leaf migrations; the database is migrated back to them after the test, whatever it migrated to."""
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from .helpers import migrate_to

    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    yield leaves
    migrate_to(leaves)
