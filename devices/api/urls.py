from django.urls import re_path

from sensorsync_project.api.routers import OptionalSlashRouter

from .views import DeployBulkView, DeviceViewSet, DraftModeBulkView, LabelsBulkView, ProvisioningKeyViewSet

router = OptionalSlashRouter()
router.register("devices", DeviceViewSet, basename="device")
router.register("provisioning-keys", ProvisioningKeyViewSet, basename="provisioning-key")

urlpatterns = [
    # Writes to every device a label selector selects (?selector=...).
    re_path(r"^labels/?$", LabelsBulkView.as_view(), name="labels-bulk"),
    re_path(r"^draft-mode/?$", DraftModeBulkView.as_view(), name="draft-mode-bulk"),
    re_path(r"^deploy/?$", DeployBulkView.as_view(), name="deploy-bulk"),
    re_path(r"^deploy/cancel/?$", DeployBulkView.as_view(cancel=True), name="deploy-cancel-bulk"),
    *router.urls,
]
