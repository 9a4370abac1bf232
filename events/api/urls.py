from sensorsync_project.api.routers import UUID_REGEX, OptionalSlashRouter

from .views import EventViewSet

router = OptionalSlashRouter()
router.register("events", EventViewSet, basename="event")
router.register(rf"devices/(?P<device_uuid>{UUID_REGEX})/events", EventViewSet, basename="device-event")

urlpatterns = router.urls
