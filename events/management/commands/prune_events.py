from datetime import timedelta

from django.conf import settings
from django.core.management.base import CommandError
from django.db import OperationalError
from django.utils import timezone

from events.retention import events_prune
from sensorsync_project.commands import OperatorCommand


class Command(OperatorCommand):
    help = (
        "Drop the events older than the retention period (SENSORSYNC_EVENT_RETENTION_DAYS), keeping what they "
        "established in one snapshot per device, so that replay_events --check still checks the whole target "
        "history. On PostgreSQL whole months are dropped, and the partitions of the coming months are created: "
        "run it daily."
    )
    epilog = """examples:
  manage.py prune_events                 # the retention period from the settings
  manage.py prune_events --days 30 --dry-run

exit status: 0 when done, 1 when a lock was not granted in time (writers were busy: run it again later)."""

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="Keep this many days (default: the setting SENSORSYNC_EVENT_RETENTION_DAYS, 90 unless set).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Say what would go; change nothing.")

    def handle(self, *args, days: int | None, dry_run: bool, **options):
        days = settings.SENSORSYNC_EVENT_RETENTION_DAYS if days is None else days
        if days < 1:
            raise CommandError("--days must be at least 1.")
        cutoff = timezone.now() - timedelta(days=days)
        try:
            result = events_prune(before=cutoff, dry_run=dry_run)
        except OperationalError as exc:  # lock_timeout: writers held the table; nothing of this month was dropped
            raise CommandError(f"Gave up waiting for a lock ({exc}). Nothing more was dropped; run it again.") from exc
        for name in result.partitions_created:
            self.stdout.write(f"created partition {name}")
        for name in result.partitions_dropped:
            self.stdout.write(f"dropped partition {name}")
        verb = "would drop" if dry_run else "dropped"
        self.stdout.write(
            self.style.SUCCESS(
                f"Events before {result.cutoff:%Y-%m-%d %H:%M} UTC: {verb} {result.events_dropped}; "
                f"{result.snapshots_written} snapshot(s) written."
            )
        )
