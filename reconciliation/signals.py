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

# Sent by every staff write of a device's desired configuration (``services.targets.desired_config_checked``),
# inside its unit of work, the device locked, before anything is written: ``device``, ``previous`` (the
# configuration it replaces: the published target, or the draft), ``config`` (the validated one proposed), ``edit``
# ("sensor": one sensor created, changed or removed; "document": a whole target-state document; "rollback") and
# ``user``. A receiver may refuse the write (raise ``ValidationError``) or answer with the configuration to write
# instead (None: as proposed); at most one answers. The fleet configuration keeps rendered sensors this way.
desired_config_proposed = Signal()
