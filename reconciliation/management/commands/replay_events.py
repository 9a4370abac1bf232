from django.core.management.base import CommandError

from devices.models import Device
from devices.selectors import target_history_replay_diff
from sensorsync_project.commands import OperatorCommand, device_uuid


class Command(OperatorCommand):
    help = (
        "Rebuild every device's target versions from the event log alone and compare them with the stored "
        "history and the current target state. With --check, exit 1 if anything differs."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="Exit with status 1 when any difference is found.")
        parser.add_argument("--device", help="Only this device (uuid).")

    def handle(self, *args, check: bool, device: str | None, **options):
        devices = Device.objects.order_by("id")  # each device is read again, in one view, by the replay
        if device:
            devices = devices.filter(uuid=device_uuid(device))
            if not devices.exists():
                raise CommandError(f"No device with uuid {device}.")
        total = devices.count()
        problems: list[str] = []
        for done, each in enumerate(devices.iterator(chunk_size=500), start=1):
            problems.extend(target_history_replay_diff(device=each))
            if total > 100 and (done % 500 == 0 or done == total):
                self.stderr.write(f"replayed {done}/{total} devices", ending="\r" if done < total else "\n")
        for line in problems:
            self.stdout.write(line)
        if problems:
            self.stdout.write(self.style.ERROR(f"{len(problems)} difference(s) across {total} device(s)."))
            if check:
                raise CommandError("The event log and the stored target history disagree.", returncode=1)
        else:
            self.stdout.write(
                self.style.SUCCESS(f"Replayed {total} device(s): the event log reproduces every target version.")
            )
