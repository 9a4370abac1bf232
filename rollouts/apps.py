from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    """Staged rollouts of fleet configuration changes: above fleetconfig (whose assignments it holds at the old
    template version while devices are admitted stage by stage), below webhooks (which tells receivers of each
    step)."""

    name = "rollouts"
    verbose_name = "Rollouts"
    default_auto_field = "django.db.models.BigAutoField"
