"""``manage.py reconcile``: re-run reconciliation from the stored target and current state (SPEC sections 5, 6, 8).

The repair for a device whose reconciliation failed (``device.reconcile_failed``) or whose rows are suspect: the
same projection the signal handler and ``POST devices/<uuid>/reconcile`` run, one device per transaction.
"""

import argparse
import uuid
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter

from devices.models import Device
from devices.selectors import device_get
from events.choices import EventSourceChoices
from events.context import audit_context
from reconciliation.services import ReconcileResult, device_reconcile_now

CHUNK_SIZE = 500
# Progress goes to stderr every this many devices (or every 5 %, whichever is larger) once a run is this big.
PROGRESS_EVERY_MIN = 100


class _HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's option ordering, with the epilog's examples kept as written."""


@dataclass(frozen=True)
class _CommandActor:
    """Names the command as the actor where a service only labels its actor (``events.context.actor_label``).

    ``device_reconcile_now`` stores no user foreign key, so events and the rows' ``updated_by`` can say
    "command:reconcile" instead of "system"."""

    label: str
    is_authenticated: bool = True

    def get_username(self) -> str:
        return self.label


def _actor(username: str | None, *, command: str):
    if username is None:
        return _CommandActor(f"command:{command}")
    try:
        return get_user_model().objects.get(username=username, is_active=True)
    except get_user_model().DoesNotExist:
        raise CommandError(f"No active user named '{username}'.") from None


def _device_uuid(value) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise CommandError(f"'{value}' is not a device uuid.") from None


def _device_pages(queryset, size: int | None = None):
    """Every device of ``queryset`` in primary-key order, ``size`` rows per SELECT (keyset pagination).

    No cursor stays open across the per-device transactions, and memory stays flat on a fleet of any size."""
    size = size or CHUNK_SIZE
    queryset = queryset.order_by("pk")
    last_pk = None
    while True:
        page = list((queryset if last_pk is None else queryset.filter(pk__gt=last_pk))[:size])
        if not page:
            return
        yield from page
        last_pk = page[-1].pk


def _plain(text: str) -> str:
    return text


def _progress_step(total: int) -> int | None:
    return max(PROGRESS_EVERY_MIN, total // 20) if total >= PROGRESS_EVERY_MIN else None


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


class Command(BaseCommand):
    help = "Re-run reconciliation from each device's stored target state and last report, repairing its sensor rows."
    epilog = """\
Decides every sensor row again from the stored target state and the last accepted report, exactly as a new
report would, and writes only the rows that differ. Nothing is sent to the agents.

examples:
  manage.py reconcile --device 0b5c1f2e-8c1d-4a53-9a57-3f1f3f9e6c21
  manage.py reconcile --all --verbosity 0      # summary only

exit status: 0 done (whether or not the devices are in sync); 1 unknown device, or some devices could not be
reconciled (listed on stderr); 2 usage error (from the shell)"""

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, epilog=self.epilog, formatter_class=_HelpFormatter)

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
        actor = _actor(options["user"], command="reconcile")
        with audit_context(source=EventSourceChoices.COMMAND):
            if options["device"] is not None:
                self._reconcile_one(_device_uuid(options["device"]), actor=actor)
            else:
                self._reconcile_all(actor=actor, verbosity=options["verbosity"])

    def _reconcile_one(self, device_uuid: uuid.UUID, *, actor) -> None:
        try:
            name = device_get(uuid=device_uuid).name
            result = device_reconcile_now(uuid=device_uuid, user=actor)
        except Device.DoesNotExist:
            raise CommandError(f"No device with uuid {device_uuid}.") from None
        self.stdout.write(result_line(name, result))

    def _reconcile_all(self, *, actor, verbosity: int) -> None:
        total = Device.objects.count()
        step = _progress_step(total)
        done = in_sync = inserted = updated = removed = failed = 0
        errors: list[str] = []
        for device in _device_pages(Device.objects.only("pk", "uuid", "name")):
            try:
                result = device_reconcile_now(uuid=device.uuid, user=actor)
            except Device.DoesNotExist:
                pass  # deleted since the page was read: nothing left to reconcile
            except Exception as exc:
                # One broken device must not stop the repair of the others; the exit status reports it.
                errors.append(f"{device.name} ({device.uuid}): {type(exc).__name__}: {exc}")
                self.stderr.write(f"error: could not reconcile {errors[-1]}")
            else:
                in_sync += result.in_sync
                inserted += result.inserted
                updated += result.updated
                removed += result.removed
                failed += result.failed
                if verbosity >= 1:
                    self.stdout.write(result_line(device.name, result))
            done += 1
            if step and (done % step == 0 or done == total):
                self.stderr.write(f"reconciled {done}/{total}", style_func=_plain)
        reconciled = done - len(errors)
        self.stdout.write(
            f"Reconciled {reconciled} device{'s' if reconciled != 1 else ''}: {in_sync} in sync, "
            f"{reconciled - in_sync} not in sync; rows inserted {inserted}, updated {updated}, removed {removed}; "
            f"{failed} failed sensor{'s' if failed != 1 else ''}."
        )
        if errors:
            raise CommandError(f"{len(errors)} of {done} devices could not be reconciled (see above).")
