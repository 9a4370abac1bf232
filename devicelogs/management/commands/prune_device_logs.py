from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from devicelogs.services import PRUNE_BATCH, device_logs_prune


class Command(BaseCommand):
    help = (
        "Delete the device log lines received more than SENSORSYNC_DEVICE_LOG_RETENTION_DAYS ago, in batches "
        "(run it daily: deploy/ has a timer; safe to interrupt and to run beside the agents' uploads)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=PRUNE_BATCH, help="lines per transaction")

    def handle(self, *args, batch: int, **options):
        if batch < 1:
            raise CommandError("--batch must be at least 1")
        deleted = device_logs_prune(batch=batch)
        self.stdout.write(
            f"{deleted} device log lines older than {settings.SENSORSYNC_DEVICE_LOG_RETENTION_DAYS} days deleted"
        )
