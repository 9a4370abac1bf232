"""The fleet overview: one staff page that shows where the reconciliation loop stands across every device.

Everything on it is read through ``reconciliation.selectors`` in a constant number of queries; its charts are SVG
computed on the server (``charts``): the page needs no script and nothing from outside the server.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode

from devices.labels import Selector, SelectorError
from rollouts.charts import progress_chart
from rollouts.selectors import rollouts_active, rollouts_progress
from sensors.choices import DeviceSensorDeploymentStatusChoices as Status
from sensors.choices import DeviceSensorHealthStatusChoices as Health
from sensors.choices import DeviceSensorProtocolChoices
from sensorsync_project.ui.html import ago

from ..choices import DriftEpisodeCauseChoices
from ..selectors import (
    drift_episodes_overlapping,
    drift_stats,
    drifting_sensors_of,
    fleet_device_counts,
    fleet_failing_errors,
    fleet_sensor_counts,
    time_to_converge_series,
)
from .charts import duration_text, histogram, hourly_chart

WINDOW = timedelta(hours=24)
EPISODES_SHOWN = 50
ROLLOUTS_SHOWN = 5
SENSORS_SHOWN_PER_EPISODE = 6
REFRESH_SECONDS = 15

TILES = (
    ("in_sync", "In sync", "Applied the target version; every sensor deployed."),
    ("drifting", "Drifting", "Reported, but not converged: see why on each device's page."),
    ("offline", "Offline", "Not seen for {offline}, or never."),
    ("never_reported", "Never reported", "No report from the agent yet."),
)


def _changelist(name: str, narrowed: dict | None = None, **query) -> str:
    """An admin list's URL with ``query``, narrowed to the page's label selector (``narrowed``), if any."""
    query = {**(narrowed or {}), **query}
    url = reverse(f"admin:{name}_changelist")
    return f"{url}?{urlencode(query)}" if query else url


def sensor_heatmap(matrix: dict[str, dict[str, int]], narrowed: dict | None = None) -> dict:
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
                        "sensors_devicesensor", narrowed, protocol__exact=protocol, deployment_status__exact=status
                    ),
                }
            )
        rows.append(
            {
                "protocol": protocol,
                "label": labels.get(protocol, protocol),
                "cells": cells,
                "total": sum(statuses.values()),
                "url": _changelist("sensors_devicesensor", narrowed, protocol__exact=protocol),
            }
        )
    totals = [
        {
            "status": status,
            "count": sum(statuses.get(status, 0) for statuses in matrix.values()),
            "url": _changelist("sensors_devicesensor", narrowed, deployment_status__exact=status),
        }
        for status in Status.values
    ]
    return {
        "statuses": Status.values,
        "rows": rows,
        "totals": totals,
        "total": sum(t["count"] for t in totals),
        "url": _changelist("sensors_devicesensor", narrowed),
    }


def deployed_offline(by_protocol: dict[str, int], narrowed: dict | None = None) -> dict:
    """The sensors deployed as desired whose adapter reports them offline, in all and by protocol, each count
    linking to the admin's sensor list filtered to exactly those rows."""
    labels = dict(DeviceSensorProtocolChoices.choices)

    def url(**query) -> str:
        return _changelist(
            "sensors_devicesensor", narrowed, deployment_status__exact=Status.DEPLOYED, health=Health.OFFLINE, **query
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
    # ``?selector=plant=3``: the page for the devices a label selector selects; one that does not parse is a 400
    # that says why, with the form to correct it.
    selector_text = request.GET.get("selector", "").strip()
    try:
        selector = Selector.parse(selector_text)
    except SelectorError as exc:
        context = {**admin.site.each_context(request), "title": "Fleet overview", "selector_text": selector_text}
        return TemplateResponse(
            request, "reconciliation/fleet.html", {**context, "selector_error": str(exc)}, status=400
        )
    counts = fleet_device_counts(now=now, selector=selector)
    stats = drift_stats(since=since, until=now, selector=selector)
    series = time_to_converge_series(since=since, until=now, selector=selector)
    episodes = list(drift_episodes_overlapping(since=since, until=now, selector=selector)[:EPISODES_SHOWN])
    converge = stats["timeToConverge"]
    total_episodes = converge["episodes"] + stats["openEpisodes"]
    offline = duration_text(settings.SENSORSYNC_OFFLINE_AFTER_SECONDS)
    matrix, offline_by_protocol = fleet_sensor_counts(selector=selector)
    refresh = request.GET.get("refresh") != "0"
    # The admin lists the page links to, narrowed to the same devices.
    narrowed = {"selector": str(selector)} if selector else {}

    tiles = [
        {
            "state": state,
            "label": label,
            "count": counts[state],
            "share": round(100 * counts[state] / counts["total"]) if counts["total"] else 0,
            "hint": hint.format(offline=offline),
            "url": _changelist("devices_device", narrowed, drift=state),
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
        "selector_text": str(selector),
        "devices_total": counts["total"],
        "devices_url": _changelist("devices_device", narrowed),
        "drafts": {
            "mode": counts["draft_mode"],
            "pending": counts["drafts"],
            "mode_url": _changelist("devices_device", narrowed, draft="mode"),
            "pending_url": _changelist("devices_device", narrowed, draft="pending"),
        },
        "tiles": tiles,
        "retry_exhausted": {
            "count": counts["retry_exhausted"],
            "url": _changelist("devices_device", narrowed, retry="exhausted"),
        },
        "heatmap": sensor_heatmap(matrix, narrowed),
        "deployed_offline": deployed_offline(offline_by_protocol, narrowed),
        "errors": fleet_failing_errors(selector=selector),
        "failed_url": _changelist("sensors_devicesensor", narrowed, deployment_status__exact=Status.FAILED),
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
        "rollouts": _rollout_rows(),
        "rollouts_url": _changelist("rollouts_rollout"),
    }
    return TemplateResponse(request, "reconciliation/fleet.html", context)


def _rollout_rows() -> list[dict]:
    """The running and paused rollouts (the newest ``ROLLOUTS_SHOWN``) with their progress: three queries, one when
    there is none. Not narrowed by the page's selector: a rollout is about the devices it admitted."""
    active = list(rollouts_active()[:ROLLOUTS_SHOWN])
    progress = rollouts_progress(active)
    return [
        {
            "rollout": rollout,
            "progress": progress[rollout.pk],
            "chart": progress_chart(progress[rollout.pk].stages),
            "url": reverse("admin:rollouts_rollout_change", args=[rollout.pk]),
        }
        for rollout in active
    ]
