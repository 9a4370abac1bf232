"""``manage.py reconcile``: re-run reconciliation from the stored target and current state (SPEC sections 5, 6, 8).

The repair for a device whose reconciliation failed (``device.reconcile_failed``) or whose rows are suspect: the
same projection the signal handler and ``POST devices/<uuid>/reconcile`` run, one device per transaction.
"""

from uuid import UUID

from django.core.management.base import CommandError

from devices.models import Device
from devices.selectors import device_get
from reconciliation.services.projection import ReconcileResult, device_reconcile_now
from sensorsync_project.commands import (
    CHUNK_SIZE,
    PROGRESS_EVERY_MIN,
    OperatorCommand,
    device_uuid,
    user_or_none,
)

# Passed on below rather than left as defaults, so each command (and its tests) sets its own page size and
# progress threshold.


def result_line(name: str, result: ReconcileResult) -> str:
    reported = "never" if result.reported_version is None else f"v{result.reported_version}"
    line = (
        f"{name} ({result.device_uuid}): target v{result.target_version}, reported {reported}, "
        f"{'in sync' if result.in_sync else 'NOT in sync'}; inserted {result.inserted}, updated {result.updated}, "
        f"removed {result.removed}, failed {result.failed}"
    )
    if result.drifting:
        line += f" (drifting: {', '.join(result.drifting)})"
    return line


class Command(OperatorCommand):
    help = "Re-run reconciliation from each device's stored target state and last report, repairing its sensor rows."
    epilog = """\
Decides every sensor row again from the stored target state and the last accepted report, exactly as a new
report would, and writes only the rows that differ. Nothing is sent to the agents.

examples:
  manage.py reconcile --device 0b5c1f2e-8c1d-4a53-9a57-3f1f3f9e6c21
  manage.py reconcile --all --verbosity 0      # summary only

exit status: 0 done (whether or not the devices are in sync); 1 unknown device, or some devices could not be
reconciled (listed on stderr); 2 usage error (from the shell)"""

    def add_arguments(self, parser):
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--device", metavar="UUID", help="reconcile this device")
        which.add_argument("--all", action="store_true", help="reconcile every device, one transaction each")
        parser.add_argument(
            "--user",
            metavar="USERNAME",
            help="attribute events and row changes to this existing user (default: command:reconcile)",
        )

    def handle(self, *args, **options):
        # Without --user the audit context names the actor: events and rows say "command:reconcile".
        user = user_or_none(options["user"])
        with self.audit_context():
            if options["device"] is not None:
                self._reconcile_one(device_uuid(options["device"]), user=user)
            else:
                self._reconcile_all(user=user, verbosity=options["verbosity"])

    def _reconcile_one(self, uuid: UUID, *, user) -> None:
        try:
            name = device_get(uuid=uuid).name
            result = device_reconcile_now(uuid=uuid, user=user)
        except Device.DoesNotExist:
            raise CommandError(f"No device with uuid {uuid}.") from None
        self.stdout.write(result_line(name, result))

    def _reconcile_all(self, *, user, verbosity: int) -> None:
        devices = self.each_device(
            Device.objects.only("pk", "uuid", "name"),
            lambda device: device_reconcile_now(uuid=device.uuid, user=user),
            verb="reconcile",
            done_verb="reconciled",
            size=CHUNK_SIZE,
            progress_min=PROGRESS_EVERY_MIN,
        )
        in_sync = inserted = updated = removed = failed = 0
        for device, result in devices:
            in_sync += result.in_sync
            inserted += result.inserted
            updated += result.updated
            removed += result.removed
            failed += result.failed
            if verbosity >= 1:
                self.stdout.write(result_line(device.name, result))
        done, errors = devices.done, devices.errors
        reconciled = done - len(errors)
        self.stdout.write(
            f"Reconciled {reconciled} device{'s' if reconciled != 1 else ''}: {in_sync} in sync, "
            f"{reconciled - in_sync} not in sync; rows inserted {inserted}, updated {updated}, removed {removed}; "
            f"{failed} failed sensor{'s' if failed != 1 else ''}."
        )
        if errors:
            raise CommandError(f"{len(errors)} of {done} devices could not be reconciled (see above).")
