from sensorsync_project.api.routers import OptionalSlashRouter

from .views import RolloutViewSet

router = OptionalSlashRouter()
router.register("rollouts", RolloutViewSet, basename="rollout")

urlpatterns = router.urls
