"""The unit of work on one device, shared by every service that writes to a device, its states or its sensors.

Kept apart from ``devices.services`` so that reconciliation (which ``devices.services`` calls) can use it too.
"""

import contextlib
from collections.abc import Iterator

from django.db import transaction

from events.services import EventRecorder, event_recording

from .models import Device


def device_lock(*, uuid) -> Device:
    """The device with its target and current state, its row locked until the transaction ends.

    Two statements on purpose: under READ COMMITTED, a ``SELECT ... FOR UPDATE`` that waited for another writer
    re-reads only the locked row; rows joined into it would still be the ones from before the wait (an old target
    version, a current state that did not exist yet). Reading the states after the lock is taken sees what the
    previous writer committed.
    """
    pk = Device.objects.select_for_update().filter(uuid=uuid).values_list("pk", flat=True).get()
    return Device.objects.select_related("target_state", "current_state").get(pk=pk)


def device_events(device: Device) -> contextlib.AbstractContextManager[EventRecorder]:
    """The event scope of a device (joins the one ``device_write`` opened)."""
    return event_recording(str(device.uuid))


@contextlib.contextmanager
def device_write(*, uuid) -> Iterator[Device]:
    """One unit of work on a device: a transaction, the device row locked, and one event scope that is flushed
    (gapless sequences, one INSERT) when the block ends without an exception."""
    with transaction.atomic():
        device = device_lock(uuid=uuid)
        with device_events(device):
            yield device
