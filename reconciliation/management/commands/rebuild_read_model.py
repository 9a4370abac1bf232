"""``manage.py rebuild_read_model``: recompute the ``DeviceSensor`` read model, or check it (SPEC sections 6, 8).

The read model is a function of (target state, last accepted report): rebuilding runs the one projection
(``device_reconcile_now``) on every device; ``--check`` compares the live rows with what that projection would
write (``read_model_diff``) and writes nothing, so it can run in CI or a cron job against production.
"""

from django.core.management.base import CommandError

from devices.models import Device
from devices.selectors import device_list
from reconciliation.selectors import read_model_diff
from reconciliation.services.projection import device_reconcile_now
from sensorsync_project.commands import (
    CHUNK_SIZE,
    PROGRESS_EVERY_MIN,
    OperatorCommand,
    device_pages,
    device_uuid,
    user_or_none,
)

# Passed on below rather than left as defaults, so each command (and its tests) sets its own page size and
# progress threshold.


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class Command(OperatorCommand):
    help = "Recompute the sensor read model from target and current state, or --check it without writing."
    epilog = """\
Every DeviceSensor row is a function of its device's target state and last accepted report. Without --check,
each device is re-projected (one transaction each) and only differing rows are written. With --check nothing
is written: each difference is printed as "[name] <device uuid> <sensor>: <field> is X, expected Y".

examples:
  manage.py rebuild_read_model --check                # CI / cron: exit 1 when the table has drifted
  manage.py rebuild_read_model                        # repair every device
  manage.py rebuild_read_model --device 0b5c1f2e-8c1d-4a53-9a57-3f1f3f9e6c21

exit status: 0 rebuilt, or --check found no difference; 1 --check found differences, an unknown device, or a
device that could not be rebuilt; 2 usage error (from the shell)"""

    def add_arguments(self, parser):
        parser.add_argument("--device", metavar="UUID", help="only this device (default: every device)")
        parser.add_argument(
            "--check",
            action="store_true",
            help="write nothing; print every difference and exit 1 if there is any",
        )
        parser.add_argument(
            "--user",
            metavar="USERNAME",
            help="attribute events and row changes to this existing user (default: command:rebuild_read_model)",
        )

    def handle(self, *args, **options):
        if options["device"] is not None:
            uuid = device_uuid(options["device"])
            if not Device.objects.filter(uuid=uuid).exists():
                raise CommandError(f"No device with uuid {uuid}.")
            only = {"uuid": uuid}
        else:
            only = {}
        if options["check"]:
            self._check(only)
        else:
            # Without --user the audit context names the actor: events and rows say "command:rebuild_read_model".
            user = user_or_none(options["user"])
            with self.audit_context():
                self._rebuild(only, user=user, verbosity=options["verbosity"])

    def _check(self, only: dict) -> None:
        devices = device_list().filter(**only)
        progress = self.progress(total=devices.count(), verb="checked", minimum=PROGRESS_EVERY_MIN)
        checked = differing = differences = 0
        for device in device_pages(devices, CHUNK_SIZE):
            lines = read_model_diff(device=device)
            if lines:
                differing += 1
                differences += len(lines)
                for line in lines:
                    self.stdout.write(f"[{device.name}] {line}")
            checked += 1
            progress.update(checked)
        if differences:
            raise CommandError(
                f"The read model differs from the projection: {_plural(differences, 'difference')} on "
                f"{differing} of {_plural(checked, 'device')}. Run `manage.py rebuild_read_model` to repair it.",
                returncode=1,
            )
        self.stdout.write(
            self.style.SUCCESS(
                f"Checked {_plural(checked, 'device')}: the read model matches its target and current state."
            )
        )

    def _rebuild(self, only: dict, *, user, verbosity: int) -> None:
        devices = self.each_device(
            Device.objects.filter(**only).only("pk", "uuid", "name"),
            lambda device: device_reconcile_now(uuid=device.uuid, user=user),
            verb="rebuild",
            done_verb="rebuilt",
            size=CHUNK_SIZE,
            progress_min=PROGRESS_EVERY_MIN,
        )
        repaired = out_of_sync = inserted = updated = removed = 0
        for device, result in devices:
            changed = result.inserted + result.updated + result.removed
            repaired += bool(changed)
            out_of_sync += not result.in_sync
            inserted += result.inserted
            updated += result.updated
            removed += result.removed
            if (changed and verbosity >= 1) or verbosity >= 2:
                self.stdout.write(
                    f"{'repaired' if changed else 'unchanged'} {device.name} ({device.uuid}): "
                    f"inserted {result.inserted}, updated {result.updated}, removed {result.removed}"
                )
        done, errors = devices.done, devices.errors
        rebuilt = done - len(errors)
        self.stdout.write(
            f"Rebuilt the read model of {_plural(rebuilt, 'device')}: {repaired} repaired "
            f"(rows inserted {inserted}, updated {updated}, removed {removed}), {rebuilt - repaired} already "
            f"consistent; {out_of_sync} not in sync with their target."
        )
        if errors:
            raise CommandError(f"{len(errors)} of {_plural(done, 'device')} could not be rebuilt (see above).")
