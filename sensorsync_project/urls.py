from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from devicelogs.api.urls import agent_urlpatterns as agent_log_urlpatterns
from reconciliation.api.urls import agent_urlpatterns

from . import observability

api_v1 = [
    path("", include(agent_urlpatterns)),
    path("", include(agent_log_urlpatterns)),
    path("", include("devices.api.urls")),
    path("", include("sensors.api.urls")),
    path("", include("reconciliation.api.urls")),
    path("", include("fleetconfig.api.urls")),
    path("", include("rollouts.api.urls")),
    path("", include("events.api.urls")),
    path("", include("webhooks.api.urls")),
    path("", include("devicelogs.api.urls")),
]

urlpatterns = [
    path("api/v1/", include(api_v1)),  # first: the agents' requests are most of the traffic
    path("admin/", admin.site.urls),
    path("fleet/", include("reconciliation.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api-auth/", include("rest_framework.urls")),
    path("healthz", observability.healthz, name="healthz"),
    path("metrics", observability.metrics, name="metrics"),
]

handler404 = "sensorsync_project.api.errors.handler404"
handler500 = "sensorsync_project.api.errors.handler500"
