from datetime import timedelta

from django.conf import settings
from django.core.management.base import CommandError
from django.utils import timezone

from events.retention import PruneBusy, events_prune
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

exit status: 0 when done, 1 when another prune_events was running or writers held a lock too long (nothing
half-dropped: run it again later)."""

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=int,
            default=None,
            help="Keep this many days; 0 keeps every event and only creates the coming months' partitions "
            "(default: the setting SENSORSYNC_EVENT_RETENTION_DAYS, 90 unless set).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Say what would go; change nothing.")

    def handle(self, *args, days: int | None, dry_run: bool, **options):
        days = settings.SENSORSYNC_EVENT_RETENTION_DAYS if days is None else days
        if days < 0:
            raise CommandError("--days must be 0 (keep every event) or more.")
        try:
            result = events_prune(before=timezone.now() - timedelta(days=days) if days else None, dry_run=dry_run)
        except PruneBusy as exc:  # nothing of the month it was at was dropped: the next run goes on from there
            raise CommandError(f"{exc} Nothing more was dropped; run it again later.") from exc
        for name in result.partitions_created:
            self.stdout.write(f"created partition {name}")
        for name in result.partitions_dropped:
            self.stdout.write(f"dropped partition {name}")
        if result.cutoff is None:
            self.stdout.write(self.style.SUCCESS("Every event is kept (retention 0 days)."))
            return
        verb = "would drop" if dry_run else "dropped"
        self.stdout.write(
            self.style.SUCCESS(
                f"Events before {result.cutoff:%Y-%m-%d %H:%M} UTC: {verb} {result.events_dropped}; "
                f"{result.snapshots_written} snapshot(s) written."
            )
        )
