from sensorsync_project.api.routers import OptionalSlashRouter

from .views import DeviceViewSet

router = OptionalSlashRouter()
router.register("devices", DeviceViewSet, basename="device")

urlpatterns = router.urls
