from django.db import models


class WebhookDeliveryStatusChoices(models.TextChoices):
    """Where one delivery (one event, one endpoint) stands."""

    PENDING = "pending", "Pending"  # waiting for its first attempt or for its next one
    DELIVERED = "delivered", "Delivered"  # an attempt got a 2xx
    FAILED = "failed", "Failed"  # every attempt failed: not retried any more


class WebhookAttemptResultChoices(models.TextChoices):
    """What one attempt came to, for its delivery."""

    DELIVERED = "delivered", "Delivered"
    RETRYING = "retrying", "Failed, to be retried"
    FAILED = "failed", "Failed, no attempt left"
