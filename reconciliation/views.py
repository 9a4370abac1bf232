"""The fleet overview: one staff page that shows where the reconciliation loop stands across every device.

Everything on it is read through ``reconciliation.selectors`` in a constant number of queries, and the charts are
SVG computed here, on the server: the page needs no script and nothing from outside the server.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.http import urlencode

from devices.admin import ago
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.choices import DeviceSensorHealthStatusChoices as Health
from sensors.choices import DeviceSensorProtocolChoices

from .choices import DriftEpisodeCauseChoices
from .selectors import (
    drift_episodes_overlapping,
    drift_stats,
    drifting_sensors_of,
    fleet_device_counts,
    fleet_failing_errors,
    fleet_sensor_counts,
    time_to_converge_series,
)

WINDOW = timedelta(hours=24)
EPISODES_SHOWN = 50
SENSORS_SHOWN_PER_EPISODE = 6
REFRESH_SECONDS = 15

TILES = (
    ("in_sync", "In sync", "Applied the target version; every sensor deployed."),
    ("drifting", "Drifting", "Reported, but not converged: see why on each device's page."),
    ("offline", "Offline", "Not seen for {offline}, or never."),
    ("never_reported", "Never reported", "No report from the agent yet."),
)

# Time-to-converge histogram buckets: (upper bound in seconds, label, bar tone).
BUCKETS = (
    (10, "< 10 s", ""),
    (30, "10–30 s", ""),
    (60, "30 s–1 min", ""),
    (300, "1–5 min", ""),
    (900, "5–15 min", "slow"),
    (3600, "15–60 min", "slow"),
    (4 * 3600, "1–4 h", "very-slow"),
    (math.inf, "> 4 h", "very-slow"),
)
# The hourly chart's logarithmic y axis.
LOG_TICKS = ((1, "1 s"), (10, "10 s"), (60, "1 min"), (600, "10 min"), (3600, "1 h"), (6 * 3600, "6 h"), (86400, "1 d"))

# Chart geometry (SVG user units; the SVG scales to its container).
WIDTH, HEIGHT = 560, 230
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 20, 40


def duration_text(seconds: float | None) -> str:
    """ "4.2 s", "3 min 5 s", "2 h 10 min": short, and exact enough for an operator."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    count: int
    tone: str
    label_x: float


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


def histogram(durations: list[float]) -> dict:
    """Bars of the time-to-converge histogram, already placed in the SVG's coordinates."""
    counts = [0] * len(BUCKETS)
    for seconds in durations:
        counts[next(index for index, (upper, _, _) in enumerate(BUCKETS) if seconds < upper)] += 1
    top = max(counts, default=0)
    scale_max = max(4, math.ceil(top / 4) * 4)  # four even gridline steps
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(BUCKETS)
    bar_w = slot * 0.72
    bars = []
    for index, ((_, label, tone), count) in enumerate(zip(BUCKETS, counts, strict=True)):
        height = plot_h * count / scale_max
        x = LEFT + index * slot + (slot - bar_w) / 2
        bars.append(
            Bar(
                x=round(x, 1),
                y=round(TOP + plot_h - height, 1),
                width=round(bar_w, 1),
                height=round(height, 1),
                label=label,
                count=count,
                tone=tone,
                label_x=round(x + bar_w / 2, 1),
            )
        )
    ticks = [Tick(y=round(TOP + plot_h - plot_h * step / 4, 1), label=str(scale_max * step // 4)) for step in range(5)]
    return {"bars": bars, "ticks": ticks, "empty": not durations, **_frame()}


def _frame() -> dict:
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "label_y": HEIGHT - BOTTOM + 16,
        "middle_x": LEFT + (WIDTH - LEFT - RIGHT) / 2,
        "middle_y": TOP + (HEIGHT - TOP - BOTTOM) / 2,
    }


def hourly_chart(hours: list[dict]) -> dict:
    """p50 and p95 of time-to-converge per hour, on a log scale: lines through the hours that had episodes."""
    values = [h[key] for h in hours for key in ("p50Seconds", "p95Seconds") if h[key] is not None]
    top_value = max(values, default=60)
    ticks = [tick for tick in LOG_TICKS if tick[0] <= max(top_value, 60)]
    if ticks[-1][0] < top_value:
        ticks.append(next((tick for tick in LOG_TICKS if tick[0] >= top_value), LOG_TICKS[-1]))
    ceiling = math.log10(ticks[-1][0])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(hours))

    def y_of(seconds: float) -> float:
        return round(TOP + plot_h - plot_h * min(1.0, math.log10(max(seconds, 1)) / ceiling), 1)

    series = {}
    for key in ("p50Seconds", "p95Seconds"):
        points, segments, current = [], [], []
        for index, hour in enumerate(hours):
            value = hour[key]
            if value is None:
                if current:
                    segments.append(current)
                current = []
                continue
            x = round(LEFT + (index + 0.5) * slot, 1)
            y = y_of(value)
            points.append(
                {
                    "x": x,
                    "y": y,
                    "title": f"{timezone.localtime(hour['start']):%H:00}: {key[:3]} {duration_text(value)} "
                    f"({hour['episodes']} episode{'' if hour['episodes'] == 1 else 's'})",
                }
            )
            current.append(f"{x},{y}")
        if current:
            segments.append(current)
        series[key[:3]] = {"points": points, "lines": [" ".join(s) for s in segments if len(s) > 1]}
    labels = [
        {"x": round(LEFT + (index + 0.5) * slot, 1), "label": f"{timezone.localtime(hour['start']):%H:%M}"}
        for index, hour in enumerate(hours)
        if index % 3 == 0
    ]
    return {
        "p50": series["p50"],
        "p95": series["p95"],
        "ticks": [Tick(y=y_of(seconds), label=label) for seconds, label in ticks],
        "x_labels": labels,
        "empty": not values,
        **_frame(),
    }


def _changelist(name: str, **query) -> str:
    url = reverse(f"admin:{name}_changelist")
    return f"{url}?{urlencode(query)}" if query else url


def sensor_heatmap(matrix: dict[str, dict[str, int]]) -> dict:
    """The sensors-by-protocol-and-status table, each cell shaded by its share of the largest cell."""
    largest = max((count for row in matrix.values() for count in row.values()), default=0)
    labels = dict(DeviceSensorProtocolChoices.choices)
    rows = []
    for protocol, statuses in matrix.items():
        cells = []
        for status in Status.values:
            count = statuses.get(status, 0)
            heat = 0.0 if not count else 0.18 + 0.82 * count / largest
            cells.append(
                {
                    "status": status,
                    "count": count,
                    "heat": f"{heat:.2f}",
                    "strong": heat >= 0.5,
                    "url": _changelist(
                        "sensors_devicesensor", protocol__exact=protocol, deployment_status__exact=status
                    ),
                }
            )
        rows.append(
            {
                "protocol": protocol,
                "label": labels.get(protocol, protocol),
                "cells": cells,
                "total": sum(statuses.values()),
                "url": _changelist("sensors_devicesensor", protocol__exact=protocol),
            }
        )
    totals = [
        {
            "status": status,
            "count": sum(statuses.get(status, 0) for statuses in matrix.values()),
            "url": _changelist("sensors_devicesensor", deployment_status__exact=status),
        }
        for status in Status.values
    ]
    return {
        "statuses": Status.values,
        "rows": rows,
        "totals": totals,
        "total": sum(t["count"] for t in totals),
        "url": _changelist("sensors_devicesensor"),
    }


def deployed_offline(by_protocol: dict[str, int]) -> dict:
    """The sensors deployed as desired whose adapter reports them offline, in all and by protocol, each count
    linking to the admin's sensor list filtered to exactly those rows."""
    labels = dict(DeviceSensorProtocolChoices.choices)

    def url(**query) -> str:
        return _changelist(
            "sensors_devicesensor", deployment_status__exact=Status.DEPLOYED, health=Health.OFFLINE, **query
        )

    return {
        "count": sum(by_protocol.values()),
        "url": url(),
        "protocols": [
            {
                "protocol": protocol,
                "label": labels.get(protocol, protocol),
                "count": count,
                "url": url(protocol__exact=protocol),
            }
            for protocol, count in by_protocol.items()
            if count
        ],
    }


def _episode_rows(episodes, now: datetime) -> list[dict]:
    """Open episodes show the sensors drifting now; ended ones the drifting set just before they ended."""
    causes = dict(DriftEpisodeCauseChoices.choices)
    drifting_now = drifting_sensors_of(device_ids={e.device_id for e in episodes if e.ended_at is None})
    rows = []
    for episode in episodes:
        ended = episode.ended_at
        sensors = drifting_now.get(episode.device_id, []) if ended is None else (episode.drifting_sensors or [])
        rows.append(
            {
                "device": episode.device,
                "device_url": reverse("admin:devices_device_change", args=[episode.device_id]),
                "started_at": episode.started_at,
                "started_ago": ago(episode.started_at),
                "ended_at": ended,
                "duration": duration_text(((ended or now) - episode.started_at).total_seconds()),
                "cause": causes.get(episode.cause, episode.cause).split(" (")[0],
                "cause_detail": causes.get(episode.cause, episode.cause),
                "from_version": episode.start_target_version,
                "to_version": episode.end_target_version,
                "reported_version": episode.start_reported_version,
                "sensors": sensors[:SENSORS_SHOWN_PER_EPISODE],
                "more_sensors": max(0, len(sensors) - SENSORS_SHOWN_PER_EPISODE),
            }
        )
    return rows


# What the page shows, each as the API guards it: devices (names, counts), sensors (errors, the heatmap) and
# drift episodes (time to converge, the episodes' table).
FLEET_PERMISSIONS = ("devices.view_device", "sensors.view_devicesensor", "reconciliation.view_driftepisode")


@staff_member_required
@permission_required(FLEET_PERMISSIONS, raise_exception=True)
def fleet_overview(request):
    now = timezone.now()
    # The window starts on a whole hour, so the hourly chart's slots are clock hours (24 of them, plus the one
    # running now).
    since = (now - WINDOW).replace(minute=0, second=0, microsecond=0)
    counts = fleet_device_counts(now=now)
    stats = drift_stats(since=since, until=now)
    series = time_to_converge_series(since=since, until=now)
    episodes = list(drift_episodes_overlapping(since=since, until=now)[:EPISODES_SHOWN])
    converge = stats["timeToConverge"]
    total_episodes = converge["episodes"] + stats["openEpisodes"]
    offline = duration_text(settings.SENSORSYNC_OFFLINE_AFTER_SECONDS)
    matrix, offline_by_protocol = fleet_sensor_counts()
    refresh = request.GET.get("refresh") != "0"

    tiles = [
        {
            "state": state,
            "label": label,
            "count": counts[state],
            "share": round(100 * counts[state] / counts["total"]) if counts["total"] else 0,
            "hint": hint.format(offline=offline),
            "url": _changelist("devices_device", drift=state),
        }
        for state, label, hint in TILES
    ]
    by_protocol = [
        {
            "protocol": protocol,
            "episodes": entry["timeToConverge"]["episodes"],
            "p50": duration_text(entry["timeToConverge"]["p50Seconds"]),
            "p95": duration_text(entry["timeToConverge"]["p95Seconds"]),
            "in_drift": duration_text(entry["inDriftSeconds"]),
        }
        for protocol, entry in stats["byProtocol"].items()
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Fleet overview",
        "now": now,
        "since": since,
        "refresh_seconds": REFRESH_SECONDS if refresh else None,
        "devices_total": counts["total"],
        "devices_url": _changelist("devices_device"),
        "tiles": tiles,
        "heatmap": sensor_heatmap(matrix),
        "deployed_offline": deployed_offline(offline_by_protocol),
        "errors": fleet_failing_errors(),
        "failed_url": _changelist("sensors_devicesensor", deployment_status__exact=Status.FAILED),
        "converge": {
            "episodes": converge["episodes"],
            "open": stats["openEpisodes"],
            "p50": duration_text(converge["p50Seconds"]),
            "p95": duration_text(converge["p95Seconds"]),
            "max": duration_text(converge["maxSeconds"]),
            "in_drift": duration_text(stats["inDriftSeconds"]),
        },
        "by_protocol": by_protocol,
        "histogram": histogram(series["durations"]),
        "hourly": hourly_chart(series["hours"]),
        "episodes": _episode_rows(episodes, now),
        "episodes_more": max(0, total_episodes - len(episodes)),
        "episodes_total": total_episodes,
        "drift_events_url": _changelist("events_event", type__exact="device.config_drift"),
        "episodes_api_url": reverse("drift-episode-list"),
    }
    return TemplateResponse(request, "reconciliation/fleet.html", context)


# Included from the project's URLconf as ``path("fleet/", include("reconciliation.views"))``: the page's one URL
# lives beside its view rather than in a module of its own.
app_name = "fleet"
urlpatterns = [path("", fleet_overview, name="overview")]
