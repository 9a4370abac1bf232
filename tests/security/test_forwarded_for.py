"""Behind the production front (nginx on loopback), the client's address is the last X-Forwarded-For entry, so
the per-address limits and the audit log see clients, not nginx; from anywhere else the header is ignored."""

import secrets

import pytest
from django.test import Client

from devices.provisioning import provisioning_key_create
from events.models import Event
from tests.provisioning.test_register import Agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def provisioning(db):
    return provisioning_key_create(name="front")


def _register(key: str, *, remote: str, forwarded: str | None = None) -> int:
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return Agent().register(Client(), key, **extra).status_code


def test_registrations_behind_the_front_are_limited_per_client_not_for_the_whole_fleet(provisioning, settings):
    settings.SENSORSYNC_REGISTER_RATE_LIMIT = "2/60"
    first = [_register(provisioning.secret, remote="127.0.0.1", forwarded="198.51.100.1") for _ in range(3)]
    other = _register(provisioning.secret, remote="127.0.0.1", forwarded="198.51.100.2")
    assert (first, other) == ([201, 201, 429], 201)


def test_only_the_proxys_own_entry_is_believed(provisioning, settings):
    settings.SENSORSYNC_REGISTER_RATE_LIMIT = "1/60"
    # A client that prepends addresses of its own still lands on the address nginx saw (the last entry).
    assert _register(provisioning.secret, remote="127.0.0.1", forwarded="10.9.9.9, 198.51.100.7") == 201
    assert _register(provisioning.secret, remote="127.0.0.1", forwarded="10.9.9.8, 198.51.100.7") == 429


def test_the_header_from_an_untrusted_address_is_ignored(provisioning, settings):
    settings.SENSORSYNC_REGISTER_RATE_LIMIT = "1/60"
    assert _register(provisioning.secret, remote="203.0.113.5", forwarded="198.51.100.9") == 201
    assert _register(provisioning.secret, remote="203.0.113.5", forwarded=f"198.51.100.{secrets.randbelow(8)}") == 429


def test_the_audit_log_names_the_client(provisioning):
    _register(provisioning.secret, remote="127.0.0.1", forwarded="198.51.100.44")
    event = Event.objects.get(type="provisioning_key.used")
    assert event.metadata["client_ip"] == "198.51.100.44"
