"""The reconciliation app's signal: an agent's report was stored as its device's current state.

``reconciliation.services.reports.state_report_apply`` sends it inside the report's transaction, the device row
locked, with ``current`` (the ``DeviceCurrentState`` just stored) and ``applied_anew`` (the report says the agent
applied its target again: another version or another running configuration; the retry budget counts those). Its
receiver (``handlers``, connected in ``apps.ReconciliationConfig.ready``) syncs the report into the device's sensor
rows and answers with the ``ReconcileResult``, which the service takes from ``Signal.send``'s answers: the hand-off
is explicit, and no result travels on a model instance.
"""

from django.dispatch import Signal

state_report_stored = Signal()
