"""What the operator commands (``manage.py reconcile``, ``create_device``, ...) have in common.

Help that keeps its examples as written, the ``--user`` and device-uuid options, keyset paging over a fleet of any
size, progress on stderr, the audit context that names the command as the actor, and a quiet exit when the reader of
the output goes away (``manage.py drift_report | head``).
"""

import argparse
import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, DjangoHelpFormatter, OutputWrapper
from django.db.models import Model, QuerySet

from events.choices import EventSourceChoices
from events.context import AuditContext, audit_context

CHUNK_SIZE = 500
# Progress goes to stderr every this many items (or every 5 %, whichever is larger) once a run is this big.
PROGRESS_EVERY_MIN = 100

M = TypeVar("M", bound=Model)


class EpilogHelpFormatter(DjangoHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Django's option ordering, with the epilog's examples kept as written."""


class OperatorCommand(BaseCommand):
    """A command with an ``epilog`` (examples, exit status) under its options, and no traceback on a closed pipe."""

    epilog: str | None = None

    @property
    def command_name(self) -> str:
        """The name it is run by: Django names a command after its module."""
        return type(self).__module__.rpartition(".")[2]

    def create_parser(self, prog_name, subcommand, **kwargs):
        if self.epilog is not None:
            kwargs.setdefault("epilog", self.epilog)
            kwargs.setdefault("formatter_class", EpilogHelpFormatter)
        return super().create_parser(prog_name, subcommand, **kwargs)

    def run_from_argv(self, argv):
        try:
            try:
                super().run_from_argv(argv)
            finally:
                # A reader that left early fails here, not in "Exception ignored" noise at interpreter exit.
                self.stdout.flush()
                self.stderr.flush()
        except BrokenPipeError as exc:
            # Nobody reads the rest (`| head`): stop quietly, as cat and grep do. The exit status is the one the
            # command was already exiting with, else 1 (what the uncaught error used to give).
            _to_devnull(self.stdout, self.stderr)
            sys.exit(exc.__context__.code if isinstance(exc.__context__, SystemExit) else 1)

    def audit_context(self) -> contextlib.AbstractContextManager[AuditContext]:
        return command_audit_context(self.command_name)

    def progress(self, *, total: int, verb: str, minimum: int = PROGRESS_EVERY_MIN) -> "Progress":
        return Progress(self.stderr, total, verb, minimum)

    def each_device(
        self,
        devices: QuerySet[M],
        action: Callable[[M], Any],
        *,
        verb: str,
        done_verb: str,
        size: int = CHUNK_SIZE,
        progress_min: int = PROGRESS_EVERY_MIN,
    ) -> "EachDevice[M]":
        return EachDevice(
            devices,
            action,
            verb=verb,
            stderr=self.stderr,
            progress=self.progress(total=devices.count(), verb=done_verb, minimum=progress_min),
            size=size,
        )


def command_audit_context(name: str) -> contextlib.AbstractContextManager[AuditContext]:
    """Writes made inside are from the command ``name``: events and rows written without a user say
    ``command:<name>`` (``events.context.actor_label``), and every event's source is "command"."""
    return audit_context(source=EventSourceChoices.COMMAND, actor=f"command:{name}")


def user_or_none(username: str | None):
    """The existing, active user named by ``--user``, or None without the option."""
    if username is None:
        return None
    try:
        return get_user_model().objects.get(username=username, is_active=True)
    except get_user_model().DoesNotExist:
        raise CommandError(f"No active user named '{username}'.") from None


def device_uuid(value) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise CommandError(f"'{value}' is not a device uuid.") from None


def device_pages(queryset: QuerySet[M], size: int = CHUNK_SIZE) -> Iterator[M]:
    """Every row of ``queryset`` in primary-key order, ``size`` rows per SELECT (keyset pagination).

    No cursor stays open across per-device transactions, and memory stays flat on a fleet of any size."""
    queryset = queryset.order_by("pk")
    last_pk = None
    while True:
        page = list((queryset if last_pk is None else queryset.filter(pk__gt=last_pk))[:size])
        if not page:
            return
        yield from page
        last_pk = page[-1].pk


def progress_step(total: int, *, minimum: int = PROGRESS_EVERY_MIN) -> int | None:
    """Every ``minimum`` items or every 5 %, whichever is larger; None (no progress at all) below ``minimum``."""
    return max(minimum, total // 20) if total >= minimum else None


@dataclass
class Progress:
    """``<verb> <done>/<total>`` lines on stderr, every ``progress_step(total)`` items and at the end."""

    stream: OutputWrapper
    total: int
    verb: str
    minimum: int = PROGRESS_EVERY_MIN

    def update(self, done: int) -> None:
        step = progress_step(self.total, minimum=self.minimum)
        if step and (done % step == 0 or done == self.total):
            # Unstyled: stderr's default style would paint a progress line as an error.
            self.stream.write(f"{self.verb} {done}/{self.total}", style_func=_plain)


@dataclass
class EachDevice(Generic[M]):
    """``action(device)`` on every device of ``devices``, for a command that repairs a fleet one device at a time.

    Iterating yields ``(device, result)``. A device deleted since its page was read is passed over; one whose action
    raises is reported on stderr and passed over too, so that one broken device does not stop the repair of the
    others: ``errors`` lists them for the exit status. ``done`` counts every device reached."""

    devices: QuerySet[M]
    action: Callable[[M], Any]
    verb: str  # "reconcile": "error: could not reconcile <device>: <error>"
    stderr: OutputWrapper
    progress: Progress
    size: int = CHUNK_SIZE
    done: int = field(default=0, init=False)
    errors: list[str] = field(default_factory=list, init=False)

    def __iter__(self) -> Iterator[tuple[M, Any]]:
        for device in device_pages(self.devices, self.size):
            try:
                result = self.action(device)
            # The stubs give DoesNotExist to each concrete model, not to a type bound by Model.
            except self.devices.model.DoesNotExist:  # type: ignore[attr-defined]
                pass  # deleted since the page was read: nothing left to do
            except Exception as exc:
                # A device prints as its name and uuid (``devices.models.Device``, a layer above this one).
                self.errors.append(f"{device}: {type(exc).__name__}: {exc}")
                self.stderr.write(f"error: could not {self.verb} {self.errors[-1]}")
            else:
                yield device, result
            self.done += 1
            self.progress.update(self.done)


def _plain(text: str) -> str:
    return text


def _to_devnull(*streams) -> None:
    """Point the streams' file descriptors at /dev/null, so that Python's flush at exit does not hit the closed pipe
    again. A stream without a descriptor (a StringIO) is left as it is."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in streams:
            with contextlib.suppress(AttributeError, OSError, ValueError):
                os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)
