"""The product's URLs plus the framework ceiling, mounted only under the benchmark's settings."""

from django.urls import path

from sensorsync_project.urls import handler404, handler500
from sensorsync_project.urls import urlpatterns as product_urlpatterns

from . import views

# First, so that resolving the ceiling's URL costs no more than resolving an agent path.
urlpatterns = [
    path("bench/ceiling/<uuid:uuid>", views.ceiling, name="bench-ceiling"),
    *product_urlpatterns,
]

__all__ = ["handler404", "handler500", "urlpatterns"]
