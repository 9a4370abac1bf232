"""What happens when the agent's reality is stored: the read model is reconciled in the same transaction."""

from devices.models import DeviceCurrentState

from .services import current_state_reconcile


def current_state_saved(sender, instance: DeviceCurrentState, raw: bool = False, **kwargs) -> None:
    if raw:  # fixture loading: the rows are loaded too
        return
    instance.reconciliation = current_state_reconcile(current=instance, actor=f"agent:{instance.device.uuid}")
