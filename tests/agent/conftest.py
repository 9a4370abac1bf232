import pytest
from django.test import Client


@pytest.fixture
def agent() -> Client:
    """The on-device agent: a plain HTTP client, no session, no CSRF token, raw bytes and headers."""
    return Client(enforce_csrf_checks=True)
