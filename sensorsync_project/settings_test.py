"""Settings for the test suite: the real settings with a throwaway secret and a fast password hasher."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-not-a-secret")

from .settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
# Each test starts with the webhook subscriptions unread (tests/conftest.py) and decides when they change; a read
# that expired in the middle of a test would make its statement counts depend on the machine's speed.
SENSORSYNC_WEBHOOK_SUBSCRIPTIONS_TTL_SECONDS = 3600
