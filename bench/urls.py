"""The product's URLs plus the framework ceiling, mounted only under the benchmark's settings."""

from django.urls import path

from sensorsync_project.urls import handler404, handler500
from sensorsync_project.urls import urlpatterns as product_urlpatterns

from . import views

# First, as the agent paths are first in the product's URLconf: resolving either costs the same.
urlpatterns = [
    path("bench/ceiling/<uuid:uuid>", views.ceiling, name="bench-ceiling"),
    *product_urlpatterns,
]

__all__ = ["handler404", "handler500", "urlpatterns"]
