"""What the devices domain tells the layers above it, without importing them."""

from django.dispatch import Signal

# Sent inside the unit of work that changed who may act as a device: its key rotated, it was deactivated or
# activated again, or it was deleted. Arguments: ``uuid``, ``reason`` ("key_rotated", "deactivated", "activated",
# "deleted"). A receiver that acts outside the database (MQTT ingestion revokes the broker credentials) defers its
# work to ``transaction.on_commit``, so that nothing happens if the change rolls back.
device_access_changed = Signal()
