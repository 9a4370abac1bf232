"""What happens when the agent's reality is stored: the read model is reconciled in the same transaction."""

from typing import Any

from devices.models import DeviceCurrentState

from .services.projection import ReconcileResult, current_state_reconcile


def state_report_reconcile(
    sender: type[DeviceCurrentState], *, current: DeviceCurrentState, **kwargs: Any
) -> ReconcileResult:
    """The receiver of ``signals.state_report_stored``: re-project the device's rows from the stored report."""
    return current_state_reconcile(current=current, actor=f"agent:{current.device.uuid}")
