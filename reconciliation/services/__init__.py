"""The reconciliation app's writes, by seam. ``projection`` re-projects a device's sensor rows from its target and
last report (every writer of the rows goes through it) and ``drift`` keeps the drift episodes it opens and
closes; ``reports`` stores the agent's reports and hands each to reconciliation through
``reconciliation.signals.state_report_stored``; ``targets`` and ``sensors`` are the staff's edits of the desired
state (a new target version, then the rows re-projected at once)."""
