"""The bare project's settings: the product's database settings (persistent connections, health checks,
prepared statements, statement timeout) and nothing else."""

import os

from sensorsync_project.settings import DATABASES, SECRET_KEY  # noqa: F401  (the same database, as configured)

DEBUG = False
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1").split(",")
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "bench.bare.urls"
USE_TZ = True
LOGGING_CONFIG: str | None = None
