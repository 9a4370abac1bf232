"""Writing a device's log lines, and keeping each device's log to its bounds."""

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Subquery
from django.utils import timezone

from .models import DeviceLogLine
from .parsing import LogLine

logger = logging.getLogger("sensorsync.devicelogs")

PRUNE_BATCH = 5_000


def device_logs_store(*, device_id: int, lines: list[LogLine], received_at: datetime) -> int:
    """Append ``lines`` to the device's log and drop its oldest lines past ``SENSORSYNC_DEVICE_LOG_KEEP``, in one
    transaction (two statements, whatever the number of lines). Nothing is written when the device logs are off
    (``SENSORSYNC_DEVICE_LOGS``). Returns how many lines were kept."""
    if not settings.SENSORSYNC_DEVICE_LOGS or not lines:
        return 0
    keep = settings.SENSORSYNC_DEVICE_LOG_KEEP
    lines = lines[-keep:]  # an upload larger than the whole log keeps its newest lines
    with transaction.atomic():
        DeviceLogLine.objects.bulk_create(
            DeviceLogLine(
                device_id=device_id,
                logged_at=line.logged_at,
                received_at=received_at,
                level=line.level,
                source=line.source,
                source_name=line.source_name,
                service_name=line.service_name,
                is_stderr=line.is_stderr,
                message=line.message,
            )
            for line in lines
        )
        # The newest ``keep`` lines stay: everything at or below the id of the first line past them goes. An index
        # range on (device, -id), bounded by ``keep``, not by the device's whole history.
        oldest_dropped = DeviceLogLine.objects.filter(device_id=device_id).order_by("-id").values("id")[keep : keep + 1]
        DeviceLogLine.objects.filter(device_id=device_id, id__lte=Subquery(oldest_dropped)).delete()
    return len(lines)


def device_logs_prune(*, now: datetime | None = None, batch: int = PRUNE_BATCH) -> int:
    """Delete every line received more than ``SENSORSYNC_DEVICE_LOG_RETENTION_DAYS`` ago, in batches of ``batch``
    lines, each its own transaction (safe to interrupt, safe to run beside the agents' uploads). Returns how many
    lines went."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.SENSORSYNC_DEVICE_LOG_RETENTION_DAYS)
    deleted = 0
    while True:
        ids = list(
            DeviceLogLine.objects.filter(received_at__lt=cutoff).order_by("id").values_list("id", flat=True)[:batch]
        )
        if not ids:
            break
        count, _ = DeviceLogLine.objects.filter(id__in=ids).delete()
        deleted += count
    if deleted:
        logger.info("pruned %d device log lines received before %s", deleted, cutoff.isoformat())
    return deleted
