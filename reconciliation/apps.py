"""The reconciliation app: at start, its report-path signal is connected to the handler that syncs each stored
report into the device's sensor rows."""

from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "reconciliation"

    def ready(self) -> None:
        from . import handlers, signals

        signals.state_report_stored.connect(handlers.state_report_reconcile, dispatch_uid="reconcile_on_report")
