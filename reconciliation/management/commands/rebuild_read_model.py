"""``manage.py rebuild_read_model``: recompute the ``DeviceSensor`` read model, or check it (SPEC sections 6, 8).

The read model is a function of (target state, last accepted report): rebuilding runs the one projection
(``device_reconcile_now``) on every device; ``--check`` compares the live rows with what that projection would
write (``read_model_diff``) and writes nothing, so it can run in CI or a cron job against production.
"""

import argparse
import uuid
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter

from devices.models import Device
from devices.selectors import device_list
from events.choices import EventSourceChoices
from events.context import audit_context
from reconciliation.selectors import read_model_diff
from reconciliation.services import device_reconcile_now

CHUNK_SIZE = 500
PROGRESS_EVERY_MIN = 100


class _HelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's option ordering, with the epilog's examples kept as written."""


@dataclass(frozen=True)
class _CommandActor:
    """Names the command as the actor where a service only labels its actor (``events.context.actor_label``).

    ``device_reconcile_now`` stores no user foreign key, so events and the rows' ``updated_by`` can say
    "command:rebuild_read_model" instead of "system"."""

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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class Command(BaseCommand):
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

    def create_parser(self, prog_name, subcommand, **kwargs):
        return super().create_parser(prog_name, subcommand, epilog=self.epilog, formatter_class=_HelpFormatter)

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
            device_uuid = _device_uuid(options["device"])
            if not Device.objects.filter(uuid=device_uuid).exists():
                raise CommandError(f"No device with uuid {device_uuid}.")
            only = {"uuid": device_uuid}
        else:
            only = {}
        if options["check"]:
            self._check(only)
        else:
            actor = _actor(options["user"], command="rebuild_read_model")
            with audit_context(source=EventSourceChoices.COMMAND):
                self._rebuild(only, actor=actor, verbosity=options["verbosity"])

    def _progress(self, done: int, total: int, verb: str) -> None:
        if total >= PROGRESS_EVERY_MIN and (done % max(PROGRESS_EVERY_MIN, total // 20) == 0 or done == total):
            self.stderr.write(f"{verb} {done}/{total}", style_func=_plain)

    def _check(self, only: dict) -> None:
        devices = device_list().filter(**only)
        total = devices.count()
        checked = differing = differences = 0
        for device in _device_pages(devices):
            lines = read_model_diff(device=device)
            if lines:
                differing += 1
                differences += len(lines)
                for line in lines:
                    self.stdout.write(f"[{device.name}] {line}")
            checked += 1
            self._progress(checked, total, "checked")
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

    def _rebuild(self, only: dict, *, actor, verbosity: int) -> None:
        devices = Device.objects.filter(**only).only("pk", "uuid", "name")
        total = devices.count()
        done = repaired = out_of_sync = inserted = updated = removed = 0
        errors: list[str] = []
        for device in _device_pages(devices):
            try:
                result = device_reconcile_now(uuid=device.uuid, user=actor)
            except Device.DoesNotExist:
                pass  # deleted since the page was read: no rows left to rebuild
            except Exception as exc:
                # One broken device must not stop the rebuild of the others; the exit status reports it.
                errors.append(f"{device.name} ({device.uuid}): {type(exc).__name__}: {exc}")
                self.stderr.write(f"error: could not rebuild {errors[-1]}")
            else:
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
            done += 1
            self._progress(done, total, "rebuilt")
        rebuilt = done - len(errors)
        self.stdout.write(
            f"Rebuilt the read model of {_plural(rebuilt, 'device')}: {repaired} repaired "
            f"(rows inserted {inserted}, updated {updated}, removed {removed}), {rebuilt - repaired} already "
            f"consistent; {out_of_sync} not in sync with their target."
        )
        if errors:
            raise CommandError(f"{len(errors)} of {_plural(done, 'device')} could not be rebuilt (see above).")
