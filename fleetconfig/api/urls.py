from django.urls import re_path

from sensorsync_project.api.routers import UUID_REGEX, OptionalSlashRouter

from .views import (
    AssignmentViewSet,
    DeviceRenderingView,
    RenderJobViewSet,
    RenderProblemViewSet,
    SensorOverrideViewSet,
    SensorTemplateViewSet,
)

router = OptionalSlashRouter()
router.register("sensor-templates", SensorTemplateViewSet, basename="sensor-template")
router.register("assignments", AssignmentViewSet, basename="assignment")
router.register("sensor-overrides", SensorOverrideViewSet, basename="sensor-override")
router.register("render-jobs", RenderJobViewSet, basename="render-job")
router.register("render-problems", RenderProblemViewSet, basename="render-problem")

urlpatterns = [
    re_path(rf"^devices/(?P<uuid>{UUID_REGEX})/rendering/?$", DeviceRenderingView.as_view(), name="device-rendering"),
    *router.urls,
]
