"""What the devices domain tells the layers above it, without importing them."""

from django.dispatch import Signal

# Sent inside the unit of work that changed who may act as a device: its key rotated, it was deactivated or
# activated again, or it was deleted. Arguments: ``uuid``, ``reason`` ("key_rotated", "deactivated", "activated",
# "deleted"). A receiver that acts outside the database (MQTT ingestion revokes the broker credentials) defers its
# work to ``transaction.on_commit``, so that nothing happens if the change rolls back.
device_access_changed = Signal()

# Sent once the transaction that changed devices' labels commits (a label service: once per call, or once per batch
# of a bulk change), with ``device_ids`` (list[int]): the devices whose labels changed. A receiver (the fleet
# configuration re-renders what the labels select) runs after the commit, in no transaction of the sender's.
device_labels_changed = Signal()
