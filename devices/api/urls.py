from sensorsync_project.api.routers import OptionalSlashRouter

from .views import DeviceViewSet, ProvisioningKeyViewSet

router = OptionalSlashRouter()
router.register("devices", DeviceViewSet, basename="device")
router.register("provisioning-keys", ProvisioningKeyViewSet, basename="provisioning-key")

urlpatterns = router.urls
