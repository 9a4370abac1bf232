"""Prometheus metrics of the reconciliation loop.

Counters and the histogram live in each process; under several gunicorn workers set PROMETHEUS_MULTIPROC_DIR (a
fresh, empty directory) before the workers start and ``/metrics`` aggregates every worker's values. Fleet gauges
(devices in drift, sensors by status) are read from the database at scrape time, so they are right whatever the
number of processes.
"""

from collections.abc import Iterator

from django.db.models import Count, Q
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

REPORTS = Counter(
    "sensorsync_reports",
    "Agent state reports, by outcome: applied, unchanged (same sensors, apps, version and health: the no-op), "
    "stale, queued (from the agent's offline queue: recorded, not applied), rejected (4xx).",
    ["outcome"],
)
REPORTS_REJECTED = Counter(
    "sensorsync_reports_rejected",
    "Agent state reports refused (4xx), by reason: the error code and, for a validation error, the first field it "
    "names (list indexes and sensor names folded). The agent re-sends a refused report for ever: watch this.",
    ["reason"],
)
POLLS = Counter("sensorsync_polls", "Agent target-state polls, by HTTP status answered (200 or 304).", ["status"])
RECONCILE_SECONDS = Histogram(
    "sensorsync_reconciliation_duration_seconds",
    "Time to reconcile one device's read model (decision + writes).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


class FleetCollector:
    """Gauges computed from the read model when Prometheus scrapes (two grouped queries)."""

    def collect(self) -> Iterator[Metric]:
        from devices.models import Device  # imported late: this module is imported while apps load
        from sensors.models import DeviceSensor

        devices = GaugeMetricFamily(
            "sensorsync_devices", "Devices by convergence: in_sync, drifting, never_reported.", labels=["state"]
        )
        counts = Device.objects.aggregate(
            total=Count("id"),
            never_reported=Count("id", filter=Q(current_state__isnull=True)),
            drifting=Count("id", filter=Q(current_state__isnull=False, target_state__needs_deployment=True)),
        )
        in_sync = counts["total"] - counts["never_reported"] - counts["drifting"]
        devices.add_metric(["in_sync"], in_sync)
        devices.add_metric(["drifting"], counts["drifting"])
        devices.add_metric(["never_reported"], counts["never_reported"])
        yield devices

        drift = GaugeMetricFamily("sensorsync_devices_in_drift", "Devices that reported but are not converged.")
        drift.add_metric([], counts["drifting"])
        yield drift

        sensors = GaugeMetricFamily(
            "sensorsync_sensors", "Sensor rows by deployment status and protocol.", labels=["status", "protocol"]
        )
        for row in DeviceSensor.objects.values("deployment_status", "protocol").annotate(n=Count("id")).order_by():
            sensors.add_metric([row["deployment_status"], row["protocol"]], row["n"])
        yield sensors


# Every series exists from the start, so a dashboard sees 0 rather than no data.
for _outcome in ("applied", "unchanged", "stale", "queued", "rejected"):
    REPORTS.labels(_outcome)
for _status in ("200", "304"):
    POLLS.labels(_status)
