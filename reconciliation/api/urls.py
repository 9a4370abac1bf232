from django.urls import path, re_path

from sensorsync_project.api.routers import UUID_REGEX, OptionalSlashRouter

from . import agent_views, views

router = OptionalSlashRouter()
router.register("drift-episodes", views.DriftEpisodeViewSet, basename="drift-episode")

device = rf"^devices/(?P<uuid>{UUID_REGEX})"

# The agent protocol (wire-compatible with the existing agent). The fleet's hot paths: the project's URLconf
# tries them before every other API route.
agent_urlpatterns = [
    path("device/<uuid:uuid>/state", agent_views.device_state, name="agent-state"),
    path("device/state", agent_views.device_state_report, name="agent-report"),
    path("device/register", agent_views.device_register_view, name="agent-register"),
    path("device/<uuid:uuid>/key-exchange", agent_views.device_key_exchange_view, name="agent-key-exchange"),
]

# Staff views of the loop.
urlpatterns = [
    re_path(rf"{device}/current-state/?$", views.CurrentStateView.as_view(), name="device-current-state"),
    re_path(rf"{device}/drift/?$", views.DriftView.as_view(), name="device-drift"),
    re_path(rf"{device}/reconcile/?$", views.ReconcileView.as_view(), name="device-reconcile"),
    *router.urls,
]
