"""The product's settings with the benchmark's URLs added (the framework-ceiling view).

Every path of the benchmark, the product's and the ceiling's, is served by one server with these settings, so
they share the same gunicorn configuration, middleware and database settings.
"""

from sensorsync_project.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
