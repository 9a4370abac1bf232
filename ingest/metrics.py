"""Prometheus metrics of MQTT ingestion (the style of ``reconciliation.metrics``).

The worker (``manage.py mqtt_ingest --metrics-port``) serves its own; credential changes are counted in the web
process that made them, on its ``/metrics``."""

from prometheus_client import Counter, Gauge, Histogram

MESSAGES = Counter(
    "sensorsync_mqtt_messages",
    "MQTT state reports taken by the ingestion worker, by outcome: applied, unchanged, stale, queued (as the PATCH's "
    "outcomes) or dropped (malformed, foreign, unknown or inactive device: acknowledged, never retried).",
    ["outcome"],
)
DROPPED = Counter(
    "sensorsync_mqtt_dropped",
    "MQTT messages dropped, by reason (bad_topic, unknown_device, device_inactive, too_large, foreign, "
    "malformed_json, validation_error:<field>, key_rotated, error).",
    ["reason"],
)
PROCESSING_SECONDS = Histogram(
    "sensorsync_mqtt_processing_seconds",
    "Time to apply one MQTT message: parse, lookup, state_report_apply and commit.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LAG_SECONDS = Histogram(
    "sensorsync_mqtt_lag_seconds",
    "From a message's receipt by the worker to its acknowledgement (queueing, database waits and retries included). "
    "The agent's messages carry no send time, so the time spent in the broker is not measurable.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0),
)
REDELIVERIES = Counter(
    "sensorsync_mqtt_redeliveries",
    "Messages the broker delivered again (a worker died or lost its connection before acknowledging), by where "
    "their stamp came from: journal (their first receipt, from the worker's receipt journal) or unknown (not in "
    "the journal: stamped with the time the connection started, which can let them overwrite a newer report).",
    ["first_receipt"],
)
DATABASE_RETRIES = Counter(
    "sensorsync_mqtt_database_retries",
    "Times a message waited for the database (unavailable or busy): not acknowledged, retried with backoff.",
)
IN_FLIGHT = Gauge("sensorsync_mqtt_in_flight", "Messages received by this worker and not yet acknowledged.")
ACCESS_CHANGES = Counter(
    "sensorsync_mqtt_access_changes",
    "Device credentials changes on the broker, by action (issue, revoke, disable, enable) and result (ok, failed: "
    "the broker was unreachable; the convergence loop of the ingestion worker repeats revocations).",
    ["action", "result"],
)
CONVERGED = Counter(
    "sensorsync_mqtt_converged",
    "Broker clients corrected by the convergence loop, by action (deleted, disabled, enabled).",
    ["action"],
)

for _outcome in ("applied", "unchanged", "stale", "queued", "dropped"):
    MESSAGES.labels(_outcome)
for _source in ("journal", "unknown"):
    REDELIVERIES.labels(_source)
for _action in ("issue", "revoke", "disable", "enable"):
    for _result in ("ok", "failed"):
        ACCESS_CHANGES.labels(_action, _result)
