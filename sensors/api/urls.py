from sensorsync_project.api.routers import UUID_REGEX, OptionalSlashRouter

from .views import DeviceSensorViewSet, FleetSensorViewSet

router = OptionalSlashRouter()
router.register(rf"devices/(?P<device_uuid>{UUID_REGEX})/sensors", DeviceSensorViewSet, basename="device-sensor")
router.register("sensors", FleetSensorViewSet, basename="sensor")

urlpatterns = router.urls
