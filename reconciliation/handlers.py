"""What happens when the agent's reality is stored: the read model is reconciled in the same transaction."""

from typing import Any

from devices.models import DeviceCurrentState

from .services.projection import ReconcileResult
from .services.retry_budget import report_reconcile


def state_report_reconcile(
    sender: type[DeviceCurrentState], *, current: DeviceCurrentState, applied_anew: bool = False, **kwargs: Any
) -> ReconcileResult:
    """The receiver of ``signals.state_report_stored``: re-project the device's rows from the stored report (and
    fall back, when that report used up the device's retry budget and the setting asks)."""
    return report_reconcile(current=current, applied_anew=applied_anew)
