from django.urls import path, re_path

from sensorsync_project.api.routers import UUID_REGEX

from . import agent_views, views

# The agent's log upload: beside its other requests (the project's URLconf tries these first).
agent_urlpatterns = [
    path("device/<uuid:uuid>/logs", agent_views.device_logs, name="agent-logs"),
    path("device/<uuid:uuid>/logs/dropped-summaries", agent_views.device_logs_dropped, name="agent-logs-dropped"),
]

urlpatterns = [
    re_path(rf"^devices/(?P<uuid>{UUID_REGEX})/logs/?$", views.DeviceLogView.as_view(), name="device-logs"),
]
